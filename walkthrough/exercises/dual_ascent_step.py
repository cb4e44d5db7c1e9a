"""Exercise — chapter 12, several objectives and constraints. Expected time: 20–30 minutes."""
import math


def dual_ascent_step(lam, mean_safety, threshold, lr=0.1, lambda_max=10.0):
    """One dual-ascent step on the Lagrange multiplier λ > 0 of `mean safety ≥ threshold`; returns the new λ.

    Safety as a constraint (Safe-RLHF arXiv 2310.12773, after the PPO-Lagrangian): maximise the other
    rewards subject to E[safety] ≥ threshold. The multiplier rises while the constraint is violated
    and decays while it holds. As Safe-RLHF, λ is parameterised by log λ (so it stays > 0) and moved
    by gradient ascent on the violation:
        log λ' = min(log λ + lr · λ · (threshold − mean_safety),  log λ_max)
        λ' = exp(log λ')
    (d/d log λ of λ·(threshold − mean_safety) is λ·(threshold − mean_safety): hence the factor λ.)

    Inputs and output are python floats: lam > 0, mean_safety (this batch's mean safety score),
    threshold, lr ≥ 0, lambda_max ≥ lam. Use the math module; no tensors needed.
    """
    raise NotImplementedError("not done yet")
