"""Reference solution of walkthrough/exercises/pg_loss.py (the trainer uses grpo_loss, so the package has no pg_loss)."""
import torch


def pg_loss(logp, advantages, mask):
    """REINFORCE: −(1/N) Σ_i A_i Σ_t mask·logp (Williams 1992; Spinning Up's simple policy gradient)."""
    mask = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    seq_logp = torch.where(mask, logp, zero).sum(1)  # (N,)  log π(y | x), the chain rule
    return -(advantages.detach().to(logp.dtype) * seq_logp).mean()  # scalar: −mean of A·log π
