"""Exercise — chapter 7, token averaging and length bias. Expected time: 20–30 minutes."""
import torch


def reduce_tokens(per_token, mask, loss_type, max_completion_length=None, num_items_in_batch=None):
    """Average per-token losses (N, C) over the real tokens (mask 1) the way `loss_type` says; a scalar.

    The published normalisers (the names and formulas of TRL's GRPOTrainer), with S_i the sum of
    sequence i's real per-token losses, n_i its real token count and N the number of sequences:
        "grpo"     (1/N) Σ_i S_i / max(n_i, 1)          DeepSeekMath eq. 3: longer answers weigh
                                                         each token less (the length bias)
        "bnpo"     Σ_i S_i / max(Σ_i n_i, 1)             one token mean over the batch
        "dr_grpo"  Σ_i S_i / (N · L)                     Dr. GRPO arXiv 2503.20783; L =
                                                         max_completion_length, default C
        "dapo"     Σ_i S_i / max(M, 1)                   DAPO arXiv 2503.14476 §3.3; M =
                                                         num_items_in_batch (the token count of the
                                                         whole generation batch), default Σ_i n_i
    Any other loss_type: raise ValueError.

    Masked entries must change nothing whatever they hold (even NaN): torch.where, not a product.
    Think about which of these stay exact when a batch is split into micro-batches (chapter 7).
    """
    raise NotImplementedError("not done yet")
