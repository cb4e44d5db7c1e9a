"""Exercise — chapter 4, group baselines. Expected time: 30–45 minutes."""
import torch


def group_advantages(rewards, weights=None, scale="group", eps=1e-4):
    """GRPO's group-relative advantages (B, G) of rewards (B, G, K).

    B prompts, G sampled completions each, K reward aspects (politeness, …, safety). The paper
    (arXiv 2503.21819) first sums the aspects with weights w (K,) (default all 1), then normalises
    within each prompt's group (DeepSeekMath arXiv 2402.03300 §4.1.2):
        R[b, g] = Σ_k w_k · rewards[b, g, k]
        A[b, g] = (R[b, g] − mean_g R[b]) / (std_g R[b] + eps)
    `scale` picks the denominator:
        "group"  std over the G rewards of the group (the paper)
        "batch"  one std over all B·G rewards (TRL's scale_rewards="batch")
        "none"   no division at all: A = R − mean (Dr. GRPO, arXiv 2503.20783)
    The std is Bessel-corrected (divide by n − 1, as torch.std does by default).

    A group whose G rewards are all equal carries no signal: its advantages must be exactly 0, for
    any eps (even eps = 0, where 0/0 would be NaN). Test equality exactly (max == min), not via eps.

    Hints: R.mean(1, keepdim=True) is (B, 1) and broadcasts against (B, G); compute in float64 and
    return the input's dtype; torch.where(constant[:, None], 0, A) zeroes whole groups.
    """
    raise NotImplementedError("not done yet")
