"""Exercise — chapter 10, reward models. Expected time: 15–20 minutes."""
import torch


def bradley_terry_loss(chosen_scores, rejected_scores):
    """The Bradley–Terry preference loss over N pairs; a scalar.

    A reward model trained on preferences (InstructGPT arXiv 2203.02155 eq. 1, after Bradley & Terry
    1952) models P(chosen ≻ rejected) = σ(s_c − s_r) and minimises the negative log-likelihood:
        loss = −(1/N) Σ_i log σ(s_c,i − s_r,i)
    (The paper we follow instead regresses each aspect's score with MSE; chapter 10 compares both.)

    Inputs: chosen_scores (N,), rejected_scores (N,), the reward model's scalar scores.

    Numerics: σ(m) underflows to 0 for m ≲ −104 in float32 (and log 0 = −inf), so never write
    log(sigmoid(m)). torch.nn.functional.logsigmoid(m) = −softplus(−m) is exact for every m.
    """
    raise NotImplementedError("not done yet")
