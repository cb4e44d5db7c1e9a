"""Exercise — chapter 6, clipping, reuse and KL. Expected time: 15 minutes."""
import torch


def kl_k3(logp, ref_logp):
    """Schulman's k3 estimator of KL(π ‖ π_ref), per token; same shape as the inputs (e.g. (N, C)).

    With d = ref_logp − logp (log π_ref(y) − log π(y) of a token y sampled from π):
        k3 = exp(d) − d − 1
    ("Approximating KL Divergence", J. Schulman 2020; DeepSeekMath arXiv 2402.03300 eq. 4).
    Its mean under π is exactly KL(π ‖ π_ref) (E_π[exp(d)] = 1), and each term is ≥ 0
    (e^d ≥ 1 + d), 0 exactly where the two log-probs agree.

    Precision matters: for tiny d, exp(d) − 1 cancels catastrophically (float64 keeps ~16 digits of
    a number near 1, and k3 ≈ d²/2 is far smaller). torch.expm1 computes exp(d) − 1 without it.
    """
    raise NotImplementedError("not done yet")
