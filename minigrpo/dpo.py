"""DPO's pieces (Rafailov et al. 2023, arXiv 2305.18290): preference pairs labelled by the reward model,
and the sigmoid DPO loss. The loop that uses them is `minigrpo/train_dpo.py`.

    chosen, rejected, keep = preference_pairs(rewards)          # rewards (B, G) → (B,), (B,), (B,) bool
    loss, stats = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=0.1)   # each (N,) summed sequence log-probs

The loss is eq. 7 of the paper, −log σ(β·((log π(y_w) − log π(y_l)) − (log π_ref(y_w) − log π_ref(y_l)))),
averaged over the pairs, as TRL's DPOTrainer `dpo_loss` with loss_type "sigmoid" and no label smoothing.
"""
import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp, beta=0.1):
    """The sigmoid DPO loss (arXiv 2305.18290 eq. 7) averaged over N pairs; returns (loss, stats).

    Inputs (N,) are summed log-probs of whole completions. stats (python floats), as TRL's metrics:
    rewards/chosen and rewards/rejected (mean β·(π − ref)), rewards/margins (their mean difference),
    rewards/accuracies (share of pairs whose chosen implicit reward is the larger).
    """
    shapes = {tuple(t.shape) for t in (policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp)}
    if len(shapes) != 1 or policy_chosen_logp.dim() != 1 or policy_chosen_logp.numel() == 0:
        raise ValueError(f"dpo_loss: the four log-prob tensors must share one shape (N,), N ≥ 1; found {sorted(shapes)}")
    chosen = beta * (policy_chosen_logp - ref_chosen_logp.detach())  # (N,) implicit reward of y_w (eq. 5)
    rejected = beta * (policy_rejected_logp - ref_rejected_logp.detach())  # (N,) implicit reward of y_l
    logits = chosen - rejected  # (N,)  β·((π_c − π_r) − (ref_c − ref_r))
    loss = -F.logsigmoid(logits).mean()  # eq. 7; logsigmoid is stable for large |logits|
    with torch.no_grad():
        stats = {"rewards/chosen": chosen.mean().item(), "rewards/rejected": rejected.mean().item(),
                 "rewards/margins": logits.mean().item(), "rewards/accuracies": (logits > 0).float().mean().item()}
    return loss, stats


def preference_pairs(rewards):
    """Per prompt, the sample with the highest reward (chosen) and the lowest (rejected); rewards (B, G).

    Returns chosen (B,), rejected (B,) sample indices (the first on ties, as argmax/argmin) and keep (B,)
    bool, False where all G rewards are equal: no preference, the prompt is dropped.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"preference_pairs: rewards {tuple(rewards.shape)}, expected (B, G) with G ≥ 2")
    chosen = rewards.argmax(1)  # (B,)
    rejected = rewards.argmin(1)  # (B,)
    keep = rewards.max(1).values > rewards.min(1).values  # (B,)
    return chosen, rejected, keep
