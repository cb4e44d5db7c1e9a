"""Reference solution of walkthrough/exercises/bradley_terry_loss.py (the package's reward model regresses
per-aspect scores, as the paper does, so it has no preference loss)."""
import torch.nn.functional as F


def bradley_terry_loss(chosen_scores, rejected_scores):
    """−mean log σ(s_c − s_r) (InstructGPT arXiv 2203.02155 eq. 1); logsigmoid is exact for any margin."""
    return -F.logsigmoid(chosen_scores - rejected_scores).mean()  # scalar, from (N,) margins
