"""PPO's pieces for RLHF, as InstructGPT (arXiv 2203.02155) and TRL's PPOTrainer run them: per-token
KL-shaped rewards, GAE, whitening, the clipped policy and value losses, and the critic.

    rewards = token_rewards(score, logp, ref_logp, mask, kl_coef)     # (N, C)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)        # (N, C) each
    adv = masked_whiten(adv, mask)
    pg, pg_stats = ppo_policy_loss(logp_new, logp_old, adv, mask, cliprange=0.2)
    vf, vf_stats = ppo_value_loss(v_new, v_old, ret, mask, cliprange_value=0.2)
    loss = pg + vf_coef · vf                                          # TRL ppo_trainer.py, `loss`

The loop that uses them is `minigrpo/train_ppo.py`. Where we depart from TRL (trl/trainer/ppo_trainer.py):
  1. `gae` treats the real tokens of a row as the trajectory and skips masked ones (a masked token
     gets advantage 0 and passes nothing on). For right-padded rows this is TRL's recursion, except
     that the token after the last real one bootstraps from 0 (the episode ended); TRL's
     `padding_mask_p1` keeps the critic's value of the first padding position as that bootstrap.
  2. The value loss averages over real tokens only (TRL's mask keeps one extra padding position).
  3. The critic is the policy's base decoder (a second copy) with its own LoRA and a linear value
     head read off the final normed hidden states; TRL loads a separate `value_model`
     (AutoModelForSequenceClassification), usually the reward model's weights.
"""
import torch
import torch.nn as nn

from minigrpo.lora import add_lora


def token_rewards(score, logp, ref_logp, mask, kl_coef):
    """Per-token rewards (N, C): −kl_coef·(logp − ref_logp) at every real token (the k1 estimate of
    KL(π‖π_ref)), plus `score` (N,) at each row's last real token. TRL ppo_trainer.py: `non_score_reward`
    and `rewards[[actual_start, actual_end]] += scores`; InstructGPT eq. 2.
    """
    m = mask.bool()
    kl = torch.where(m, logp - ref_logp, torch.zeros_like(logp))  # (N, C) k1 estimate, 0 where masked
    rewards = -kl_coef * kl  # (N, C)
    C = mask.shape[1]
    pos = torch.arange(C, device=mask.device).expand_as(mask)  # (N, C)
    last = torch.where(m, pos, -1).max(1).values  # (N,) index of the last real token; −1 for an empty row
    has = last >= 0  # (N,)
    rows = torch.arange(mask.shape[0], device=mask.device)[has]  # (n,)
    rewards[rows, last[has]] += score[has].to(rewards.dtype)
    return rewards


def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438, eq. 16), per row over its
    real tokens: δ_t = r_t + γ·V_{t'} − V_t, A_t = δ_t + γλ·A_{t'}, t' the next real token (V, A = 0 past
    the last); returns = A + V. All tensors (N, C); masked tokens get A = returns = 0 and change nothing.
    As TRL ppo_trainer.py's backward loop over `gen_length` (module docstring note 1 for the end).
    """
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(f"gae: rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must all be (N, C)")
    m = mask.bool()
    zero = torch.zeros_like(rewards[:, 0])  # (N,)
    next_value, next_adv = zero, zero  # (N,) each: carried from the next real token
    adv = torch.zeros_like(rewards)  # (N, C)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (N,)  eq. 16's TD residual
        a = delta + gamma * lam * next_adv  # (N,)
        real = m[:, t]  # (N,)
        adv[:, t] = torch.where(real, a, zero)
        next_value = torch.where(real, values[:, t], next_value)  # a masked token passes the carry through
        next_adv = torch.where(real, a, next_adv)
    returns = torch.where(m, adv + values, torch.zeros_like(values))  # (N, C)  TRL: returns = advantages + values
    return adv, returns


def masked_mean(x, mask, tokens=None):
    """Mean of x over the tokens where mask is 1 (TRL core `masked_mean`); `tokens` replaces the count it
    divides by (a data-parallel rank passes the whole minibatch's, so the ranks' means add up to its mean)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / (m.sum() if tokens is None else tokens).clamp(min=1)


def masked_whiten(x, mask, shift_mean=True, all_sum=None):
    """(x − mean)/√(var + 1e-8) over the real tokens, 0 where masked; var with Bessel's correction, as TRL
    core `masked_whiten` / `masked_var` (TRL then fills padding with 0: `masked_fill(advantages, padding_mask, 0)`).
    `all_sum` sums a tensor over data-parallel ranks (minigrpo/distributed.py), making mean and var the whole batch's.
    """
    total = all_sum or (lambda t: t)
    m = mask.bool()
    n = total(m.to(x.dtype).sum())
    if n < 2:
        raise ValueError(f"masked_whiten: {int(n)} real tokens; whitening needs at least 2")
    mean = total((x * m.to(x.dtype)).sum()) / n.clamp(min=1)
    var = total(((x - mean) ** 2 * m.to(x.dtype)).sum()) / n.clamp(min=1) * n / (n - 1)  # TRL masked_var(unbiased=True)
    out = (x - mean) * torch.rsqrt(var + 1e-8)  # (N, C)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, torch.zeros_like(out))


def ppo_policy_loss(logp, old_logp, advantages, mask, cliprange=0.2, tokens=None):
    """PPO's clipped surrogate, token mean (Schulman et al. 2017, arXiv 1707.06347, eq. 7; TRL ppo_trainer.py
    `pg_losses`, `pg_losses2`, `pg_loss = masked_mean(max(...))`). Returns (loss, stats). `tokens`: the count the
    means divide by (default: the mask's; see `masked_mean`)."""
    m = mask.bool()
    zero = torch.zeros_like(logp)
    log_ratio = torch.where(m, logp - old_logp.detach(), zero)  # (N, C) masked: ratio 1, no gradient path
    ratio = torch.exp(log_ratio)  # (N, C)
    A = torch.where(m, advantages.detach(), zero)  # (N, C)
    losses = torch.maximum(-A * ratio, -A * ratio.clamp(1 - cliprange, 1 + cliprange))  # (N, C)
    loss = masked_mean(losses, m, tokens)
    with torch.no_grad():
        clipped = (-A * ratio.clamp(1 - cliprange, 1 + cliprange) > -A * ratio).to(logp.dtype)  # (N, C)
        stats = {"clipfrac": masked_mean(clipped, m, tokens).item(),
                 "approxkl": masked_mean(0.5 * log_ratio ** 2, m, tokens).item(),  # TRL's approxkl
                 "ratio_mean": masked_mean(ratio, m, tokens).item()}
    return loss, stats


def ppo_value_loss(values, old_values, returns, mask, cliprange_value=0.2, tokens=None):
    """The clipped value loss ½·mean(max((V − R)², (clip(V, V_old ± c) − R)²)) over real tokens (TRL
    ppo_trainer.py `vf_losses1`, `vf_losses2`, `vf_loss`; the clip follows OpenAI baselines' ppo2). Returns (loss, stats).
    `tokens`: the count the means divide by (default: the mask's; see `masked_mean`)."""
    m = mask.bool()
    old = old_values.detach()
    clipped = torch.clamp(values, old - cliprange_value, old + cliprange_value)  # (N, C)
    l1 = (values - returns) ** 2  # (N, C)
    l2 = (clipped - returns) ** 2  # (N, C)
    loss = 0.5 * masked_mean(torch.maximum(l1, l2), m, tokens)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((l2 > l1).to(values.dtype), m, tokens).item(),
                 "value_mean": masked_mean(values, m, tokens).item()}
    return loss, stats


def explained_variance(values, returns, mask):
    """1 − Var(R − V)/Var(R) over real tokens: 1 is a perfect critic, ≤ 0 no better than a constant (CleanRL)."""
    m = mask.bool()
    r, v = returns[m], values[m]  # (n,) each
    var = r.var(unbiased=False)
    return float("nan") if var == 0 else (1 - (r - v).var(unbiased=False) / var).item()


class ValueModel(nn.Module):
    """The critic: a second copy of the base decoder with its own LoRA, and a scalar head V(h_t) read off the
    final normed hidden state of each position (TRL's value model: a Qwen2ForSequenceClassification `score`)."""

    def __init__(self, backbone, r=16, alpha=32.0, dropout=0.0, targets=None):
        super().__init__()
        self.backbone = backbone
        kw = {} if targets is None else {"targets": targets}
        self.lora = add_lora(backbone, r=r, alpha=alpha, dropout=dropout, **kw)
        p = backbone.model.embed_tokens.weight
        self.head = nn.Linear(backbone.config.hidden_size, 1, device=p.device, dtype=torch.float32)
        nn.init.zeros_(self.head.weight)  # V ≡ 0 at the start: no prior on the returns
        nn.init.zeros_(self.head.bias)

    def forward(self, prompt_ids, prompt_mask, completion_ids, completion_mask):
        """Values (N, C) of the completion positions: V_t estimates the return from token t onwards."""
        C = completion_ids.shape[1]
        ids = torch.cat([prompt_ids, completion_ids], 1)  # (N, T)
        mask = torch.cat([prompt_mask, completion_mask], 1)  # (N, T)
        h = self.backbone.hidden(ids, mask)[:, -C - 1:-1]  # (N, C, H): position P−1+j sees tokens < j, as the policy
        return self.head(h.float()).squeeze(-1) * completion_mask  # (N, C)
