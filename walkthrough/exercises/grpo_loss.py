"""Exercise — chapter 6, clipping, reuse and KL. Expected time: 45–60 minutes."""
import torch


def grpo_loss(logp, old_logp, advantages, mask, epsilon=0.2, epsilon_high=None, beta=0.0, ref_logp=None):
    """The clipped GRPO loss, averaged the paper's way; returns a scalar.

    Per completion token (DeepSeekMath arXiv 2402.03300 eq. 3, PPO's clipped surrogate, negated):
        ratio = exp(logp − old_logp)
        ℓ = −min(ratio · A, clip(ratio, 1 − ε, 1 + ε_high) · A) + β · k3(logp, ref_logp)
    ε_high defaults to ε (DAPO's clip-higher, arXiv 2503.14476 §3.1, sets it larger); the KL term
    is your kl_k3 (walkthrough/exercises/kl_k3.py) and only present when beta > 0.
    Then average the paper's way (loss_type "grpo"): each sequence's mean over its real tokens, then
    the mean over the N sequences (a sequence with no real token contributes 0).

    Inputs: logp (N, C) under the policy being trained (with gradient); old_logp (N, C) under the
    policy that sampled (a constant: detach it); advantages (N,) (a constant too); mask (N, C);
    ref_logp (N, C) or None.

    Masked tokens must change nothing whatever they hold, even NaN: replace their log-ratio by 0
    with torch.where BEFORE any exp, and select (not multiply) again at the end, or a NaN leaks
    into the gradient. At ratio 1 the gradient is REINFORCE's (your pg_loss, per-token weighted).
    """
    raise NotImplementedError("not done yet")
