"""Exercise — chapter 13, DPO. Expected time: 20–30 minutes."""
import torch


def dpo_loss(policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp, beta=0.1):
    """The sigmoid DPO loss averaged over N preference pairs; a scalar.

    DPO (Rafailov et al. 2023, arXiv 2305.18290, eq. 7) optimises the KL-regularised objective
    without a reward model: the policy's implicit reward is r(x, y) = β · (log π(y|x) − log π_ref(y|x))
    (eq. 5), and the Bradley–Terry likelihood of the preference gives
        loss = −(1/N) Σ_i log σ( β·[(π_c − ref_c) − (π_r − ref_r)] )
    where π_c = policy_chosen_logp[i] etc. are SUMMED log-probs of whole completions (N,).
    The reference log-probs are constants (detach them); the policy's carry gradients.

    At π = π_ref the loss is log 2. Use torch.nn.functional.logsigmoid (see bradley_terry_loss).
    (The package's dpo_loss also returns TRL's metrics; yours returns the loss only.)
    """
    raise NotImplementedError("not done yet")
