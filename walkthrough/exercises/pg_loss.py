"""Exercise — chapter 3, policy gradient. Expected time: 15–25 minutes."""
import torch


def pg_loss(logp, advantages, mask):
    """The REINFORCE loss whose gradient is the policy gradient; returns a scalar.

    The log-derivative trick (Williams 1992; Spinning Up, "Intro to Policy Optimization") gives
        ∇J(θ) = E[ A · ∇ log π_θ(y | x) ],   log π_θ(y | x) = Σ_t log π_θ(y_t | x, y_<t),
    so the loss to MINIMISE over a batch of N sampled completions is
        loss = −(1/N) Σ_i A_i · Σ_t mask[i, t] · logp[i, t]
    A_i is the advantage of sequence i (a reward minus a baseline); it is a constant, not a
    function of θ: no gradient may flow into it.

    Inputs: logp (N, C) log-probs of the sampled tokens (with gradient); advantages (N,);
    mask (N, C), 1 for real completion tokens, 0 for padding. Masked entries must change
    nothing, whatever they hold — even NaN or inf (padding is garbage): select with torch.where,
    do not multiply (0 · NaN = NaN).

    Check yourself: ∂loss/∂logp[i, t] = −A_i · mask[i, t] / N.
    """
    raise NotImplementedError("not done yet")
