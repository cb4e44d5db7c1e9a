"""The clipped GRPO loss over completion tokens, with the published ways to average it.

    loss, stats = grpo_loss(logp, old_logp, advantages, mask)   # logp, old_logp, mask (N, C); advantages (N,)

Per token (DeepSeekMath arXiv 2402.03300 eq. 3, PPO's clipped surrogate, negated to minimise):
    ratio = exp(logp − old_logp)
    ℓ = −min(ratio·A, clip(ratio, 1 − ε, 1 + ε_high)·A)  [+ β·KL_k3]
ε_high defaults to ε; setting it larger is DAPO's clip-higher (arXiv 2503.14476 §3.1). The KL to the
reference policy is Schulman's k3 estimator ("Approximating KL Divergence", 2020), as in
DeepSeekMath eq. 4 and TRL: KL = exp(ref − logp) − (ref − logp) − 1 ≥ 0.

`loss_type` picks how tokens are averaged (TRL GRPOTrainer._compute_loss's names and normalisers);
`reduce_tokens(per_token, mask, loss_type)` is that step alone:
  grpo    mean over sequences of each sequence's token mean (DeepSeekMath eq. 3, the paper)
  bnpo    token mean over this batch
  dr_grpo token sum / (N × max_completion_length) (Dr. GRPO arXiv 2503.20783; default C)
  dapo    token sum / num_items_in_batch, the token count of the whole generation batch
          (DAPO arXiv 2503.14476 §3.3; TRL gathers it over processes; default: this batch's mask.sum())

Gradient accumulation over micro-batches of one generation batch of N sequences:
  dapo    pass num_items_in_batch = tokens of the whole batch and add the micro-batch losses
          as they are: their sum is the full-batch loss, so the gradients add up exactly.
  grpo, dr_grpo  weight each micro-batch loss by its share n/N before adding: exact too.
  bnpo    not exact: a micro-batch's token mean weighs its tokens by 1/(its token count), so
          accumulated bnpo differs from full-batch bnpo unless micro-batches hold equal token
          counts. TRL has the same property (it divides by the accumulation steps).

Masked tokens (mask 0) never reach the loss or the gradient, whatever they hold (even NaN/inf):
their log-prob differences are replaced by 0 before any exp, so no NaN can leak into a gradient.
"""
import torch


LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def kl_k3(logp, ref_logp):
    """Schulman's k3 estimator of KL(π‖π_ref) per token: exp(d) − d − 1, d = ref_logp − logp.

    Written as expm1(d) − d, the same value without exp(d) − 1's cancellation for small d. ≥ 0.
    Its value estimates KL(π‖π_ref) on samples of π, but as a loss term its expected gradient is
    that of KL(π_ref‖π), the other direction (walkthrough chapter 6 measures it); TRL's is the same.
    """
    d = ref_logp - logp  # (N, C)
    return torch.expm1(d) - d  # (N, C)


def reduce_tokens(per_token, mask, loss_type, max_completion_length=None, num_items_in_batch=None):
    """Average per-token losses (N, C) over the tokens where mask is 1, as `loss_type` says; a scalar.

    Masked entries never count, whatever they hold (torch.where, so not even a NaN gets through).
    grpo: mean of per-sequence means; bnpo: token mean; dr_grpo: sum / (N × max_completion_length,
    default C); dapo: sum / num_items_in_batch (default this batch's token count). TRL's normalisers.
    """
    N, C = per_token.shape
    mask = mask.bool()
    m = mask.to(per_token.dtype)  # (N, C)
    zero = torch.zeros((), dtype=per_token.dtype, device=per_token.device)
    per_token = torch.where(mask, per_token, zero)  # (N, C)
    tokens = m.sum()
    if loss_type == "grpo":
        return (per_token.sum(1) / m.sum(1).clamp(min=1)).mean()  # TRL: mean of per-sequence token means
    if loss_type == "bnpo":
        return per_token.sum() / tokens.clamp(min=1)  # TRL: token mean over the batch
    if loss_type == "dr_grpo":
        L = C if max_completion_length is None else max_completion_length
        return per_token.sum() / (N * L)  # TRL / Dr. GRPO: sum / (N × max_completion_length)
    if loss_type == "dapo":
        total = tokens if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=per_token.dtype)
        return per_token.sum() / total.clamp(min=1)  # TRL / DAPO §3.3: sum / tokens of the generation batch
    raise ValueError(f"loss_type {loss_type!r}: expected one of {LOSS_TYPES}")


def grpo_loss(logp, old_logp, advantages, mask, loss_type="grpo", epsilon=0.2, epsilon_high=None, beta=0.0,
              ref_logp=None, max_completion_length=None, num_items_in_batch=None):
    """Clipped GRPO loss; returns (loss, stats), stats a dict of python floats.

    logp: (N, C) log-probs of the sampled tokens under the policy being trained (with grad).
    old_logp: (N, C) under the policy that sampled them. advantages: (N,). mask: (N, C), 1 for
    completion tokens. ref_logp: (N, C) under the reference policy, needed when beta > 0 (and
    when given, its KL is reported in stats). See the module docstring for loss_type,
    max_completion_length (dr_grpo) and num_items_in_batch (dapo).
    stats: clip_low / clip_high / clip_total (share of tokens whose gradient the clip cut),
    ratio_mean, kl (if ref_logp), adv_mean, tokens.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type {loss_type!r}: expected one of {LOSS_TYPES}")
    for name, t in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp)):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)}, expected logp's {tuple(logp.shape)} (N, C)")
    if logp.dim() != 2 or advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages: shape {tuple(advantages.shape)}, expected (N,) with logp (N, C) = "
                         f"{tuple(logp.shape)}")
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta = {beta} > 0 needs ref_logp (the reference policy's log-probs)")
    eps_low, eps_high = epsilon, epsilon if epsilon_high is None else epsilon_high
    mask = mask.bool()
    m = mask.to(logp.dtype)  # (N, C)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)

    log_ratio = torch.where(mask, logp - old_logp.detach(), zero)  # (N, C)  masked: ratio 1, no gradient path
    ratio = torch.exp(log_ratio)  # (N, C)
    A = advantages.detach().to(logp.dtype)[:, None]  # (N, 1)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)  # (N, C)  DAPO clip-higher when eps_high > eps_low
    per_token = -torch.minimum(ratio * A, clipped * A)  # (N, C)  DeepSeekMath eq. 3 (PPO surrogate)
    kl = None
    if ref_logp is not None:
        kl = kl_k3(torch.where(mask, logp, zero), torch.where(mask, ref_logp.detach(), zero))  # (N, C)  0 if masked
        if beta > 0:
            per_token = per_token + beta * kl  # (N, C)  DeepSeekMath eq. 3's −β·D_KL term
    loss = reduce_tokens(per_token, mask, loss_type, max_completion_length, num_items_in_batch)

    tokens = m.sum()

    with torch.no_grad():  # TRL's clip metrics: tokens where the clip removed the gradient
        low = (ratio < 1 - eps_low) & (A < 0) & mask  # (N, C)
        high = (ratio > 1 + eps_high) & (A > 0) & mask  # (N, C)
        denom = tokens.clamp(min=1)
        stats = {"clip_low": (low.sum() / denom).item(), "clip_high": (high.sum() / denom).item(),
                 "clip_total": ((low | high).sum() / denom).item(),
                 "ratio_mean": ((ratio * m).sum() / denom).item(),
                 "adv_mean": advantages.double().mean().item(), "tokens": tokens.item()}
        if kl is not None:
            stats["kl"] = ((kl * m).sum() / denom).item()
    return loss, stats
