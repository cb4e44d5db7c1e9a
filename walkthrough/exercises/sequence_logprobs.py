"""Exercise — chapter 2, a language model as a policy. Expected time: 30–45 minutes."""
import torch


def sequence_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0):
    """Log-probabilities (N, C) of each completion token under `model`, 0 where the completion is masked.

    A decoder is a policy π(token | context). For sequence i with prompt x and completion y,
        log π(y | x) = Σ_j log π(y_j | x, y_<j)        (the chain rule of probability)
    and this function returns the terms of that sum, one per completion token. GRPO needs them per
    token (the loss of chapter 6 clips each token's ratio), and they must carry gradients.

    Inputs (house letters: N sequences, P prompt tokens, C completion tokens, T = P + C, V vocab):
      model            call it as `model(input_ids, attention_mask)` → logits (N, T, V); logits[:, t]
                       is the distribution of the token at position t + 1. Optionally
                       `model(input_ids, attention_mask, logits_to_keep=k)` returns only the last k
                       positions, (N, k, V): cheaper, and enough here.
      prompt_ids       (N, P) long, left-padded; prompt_mask (N, P), 1 for real tokens, 0 for padding
      completion_ids   (N, C) long; completion_mask (N, C), 1 for real tokens (up to and including EOS)
      temperature      the policy samples from softmax(logits / T); score under the same T. T = 0
                       (greedy) is read as T = 1.

    Hints:
      * Feed prompt and completion side by side: torch.cat along dim 1, for ids and masks.
      * Off by one is the classic bug: the logits at position P − 1 + j predict completion token j.
      * log softmax(z)[y] = z[y] − logsumexp(z): use `.gather(-1, ids[..., None])` and `torch.logsumexp`
        (or `log_softmax`) — never log(softmax(z)), which underflows.
      * Multiply by the completion mask at the end so padded positions are exactly 0.
    Source: the chain rule; the shift as in TRL's `selective_log_softmax` over `logits[:, :-1]`.
    """
    raise NotImplementedError("not done yet")
