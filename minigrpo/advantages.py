"""Group-relative advantages for K reward aspects, and an optional Lagrangian safety constraint.

    adv, diag = group_advantages(rewards)   # rewards (B, G, K): B prompts, G samples each, K aspects

1. `sum_then_normalize` (the paper, arXiv 2503.21819; GRPO, DeepSeekMath arXiv 2402.03300 §4.1.2):
   R = Σ_k w_k r_k, then A = (R − mean_group R) / (std_group R + eps).
2. `normalize_then_sum` (GDPO, arXiv 2601.05242, as TRL's `multi_objective_aggregation` runs it):
   normalise each aspect within its group, sum with the weights, then divide by the batch std.
3. `scale` picks the std: "group" (the paper), "batch" (one std over all B·G rewards, TRL's
   `scale_rewards="batch"`) or "none" (Dr. GRPO, arXiv 2503.20783: centre only).

The std is Bessel-corrected (divide by n − 1), as `torch.std` and TRL's `nanstd` are, so our
advantages are TRL's to rounding; with G = 4 it is √(4/3) ≈ 1.15 times the population std (the
paper does not say which it uses). A group of one sample has std 0. Hence, in the "group" mode,
each group's advantages have Bessel std s/(s + eps), 1 up to eps.

Where we depart from TRL (same maths, better numbers):
  * a group whose values are all equal (max == min, tested exactly) gets advantages exactly 0,
    whatever eps (TRL gives 0/(0 + 1e-4) = 0 too, but 0/0 = NaN if eps = 0);
  * statistics run in float64, so every finite float32 reward gives finite advantages;
  * GDPO's final whitening skips subtracting the batch mean: it is 0 by construction (each
    group-centred aspect sums to 0 over its group), and subtracting its rounding noise would
    make constant groups non-zero. TRL also ignores `scale_rewards` in this mode (always
    "group"); here `scale` applies to the per-aspect step.

The constraint (the paper's open question 3, after Safe-RLHF arXiv 2310.12773, without a critic):
maximise the other aspects subject to mean safety ≥ threshold. Pass `constraint=SafetyConstraint(...)`;
each call first takes one dual-ascent step on λ with this batch's mean safety (Safe-RLHF also
updates λ before the actor loss), then returns A = (A_rest − λ·A_unsafe) / (1 + λ), where A_rest
is the advantage (same aggregation and scale) of the weighted non-safety aspects and A_unsafe that
of the cost 1 − safety. For "group"/"none" scales A_unsafe = −A_safety exactly. The safety
aspect's own weight is unused in this mode: λ replaces it.
"""
import math

import torch


AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
SCALES = ("group", "batch", "none")


class SafetyConstraint:
    """Lagrange multiplier λ ≥ 0 for `mean safety ≥ threshold`, learned by dual ascent on log λ.

    Safe-RLHF (arXiv 2310.12773, `ppo_lag`) minimises −(J_c − d)·λ over log λ by SGD, with cost
    J_c = mean(1 − safety) and limit d = 1 − threshold, so J_c − d = threshold − mean safety and
    one step is  log λ ← min(log λ + lr·λ·(threshold − mean safety), log λ_max).
    Above the threshold λ shrinks toward 0 (never reaching it: λ = exp(log λ)); below, it grows
    up to λ_max. Because the step carries the factor λ, a λ that has decayed near 0 recovers
    slowly; Safe-RLHF has the same behaviour.
    """

    def __init__(self, threshold, lr=0.1, lambda_init=1.0, lambda_max=10.0, aspect="safety"):
        if not (lambda_init > 0 and lambda_max >= lambda_init and lr >= 0):
            raise ValueError(f"SafetyConstraint: need lr ≥ 0 and 0 < lambda_init ≤ lambda_max; "
                              f"got lr={lr}, lambda_init={lambda_init}, lambda_max={lambda_max}")
        self.threshold, self.lr, self.lambda_max, self.aspect = threshold, lr, lambda_max, aspect
        self.log_lam = math.log(lambda_init)

    @property
    def lam(self):
        """The current multiplier λ = exp(log λ)."""
        return math.exp(self.log_lam)

    def update(self, mean_safety):
        """One dual-ascent step on the constraint violation; returns the new λ."""
        violation = self.threshold - mean_safety  # = J_c − d of Safe-RLHF: > 0 when unsafe
        self.log_lam = min(self.log_lam + self.lr * self.lam * violation, math.log(self.lambda_max))
        return self.lam

    def state_dict(self):
        return {"log_lam": self.log_lam}

    def load_state_dict(self, state):
        self.log_lam = float(state["log_lam"])


def _std(x, dim=None):
    """Bessel-corrected std (n − 1 divisor, as torch.std and TRL's nanstd); 0 for one element."""
    n = x.numel() if dim is None else x.shape[dim]
    centred = x - (x.mean() if dim is None else x.mean(dim, keepdim=True))
    sq = (centred ** 2).sum() if dim is None else (centred ** 2).sum(dim, keepdim=True)
    return (sq / max(n - 1, 1)).sqrt()


def _normalise(x, scale, eps):
    """Group-relative advantage of x (B, G) → (A (B, G), constant-group flags (B,))."""
    constant = x.amax(1) == x.amin(1)  # (B,) tested exactly, not through eps
    centred = x - x.mean(1, keepdim=True)  # (B, G)  DeepSeekMath §4.1.2: r − mean(r)
    if scale == "group":
        adv = centred / (_std(x, 1) + eps)  # (B, G)  the paper: / std_group
    elif scale == "batch":
        adv = centred / (_std(x) + eps)  # (B, G)  TRL scale_rewards="batch": std over all B·G
    else:
        adv = centred  # (B, G)  Dr. GRPO (arXiv 2503.20783): no std
    return torch.where(constant[:, None], torch.zeros_like(adv), adv), constant


def _aggregate(r, w, aggregation, scale, eps):
    """Advantages (B, G) of aspects r (B, G, K) with weights w (K,), and constant-group flags (B,)."""
    if aggregation == "sum_then_normalize":
        return _normalise((r * w).sum(-1), scale, eps)  # R = Σ_k w_k r_k, (B, G)  the paper
    adv, constant = torch.zeros_like(r[..., 0]), torch.ones_like(r[:, 0, 0], dtype=torch.bool)  # (B, G), (B,)
    bound = torch.zeros((), dtype=r.dtype, device=r.device)  # ≥ max |adv|: what rounding errors scale with
    for k in range(r.shape[-1]):
        a_k, const_k = _normalise(r[..., k], scale, eps)  # (B, G)  GDPO: normalise each aspect
        adv = adv + w[k] * a_k  # (B, G)  GDPO: weighted sum
        bound = bound + w[k].abs() * a_k.abs().max()
        constant &= const_k | (w[k] == 0)
    s = _std(adv)  # GDPO / TRL: whiten over the batch (its mean is 0 by construction)
    # Weighted aspects can cancel exactly (one rises as another falls by as much): the sum is then
    # rounding noise, and whitening it (eps = 0) would blow the noise up to unit size. Call it 0.
    if s <= 64 * torch.finfo(r.dtype).eps * bound:
        return torch.zeros_like(adv), constant
    return adv / (s + eps), constant  # (B, G)


def group_advantages(rewards, weights=None, aggregation="sum_then_normalize", scale="group", eps=1e-4,
                     constraint=None, aspects=None):
    """Group-relative advantages of rewards (B, G) or (B, G, K); returns (advantages (B, G), diagnostics).

    weights: K aspect weights (default all 1). aspects: K names for the diagnostics and for finding
    `constraint.aspect` (default "aspect0"…, so a constraint needs them: the safety aspect is found
    by name, never by position). Diagnostics, all python floats: frac_zero_std (share of groups set to
    0 because R is constant, or for GDPO every weighted aspect is), and per aspect frac_zero_std/<a>,
    reward_mean/<a>, reward_std/<a>; with a constraint also lambda, safety_mean, violation.
    The caller flattens advantages to N = B·G, samples of one prompt adjacent.
    """
    if not torch.is_tensor(rewards) or rewards.dim() not in (2, 3) or rewards.numel() == 0:
        got = tuple(rewards.shape) if torch.is_tensor(rewards) else type(rewards).__name__
        raise ValueError(f"rewards: expected a non-empty tensor (B, G) or (B, G, K), got {got}")
    if aggregation not in AGGREGATIONS or scale not in SCALES or not eps >= 0:
        raise ValueError(f"group_advantages: aggregation {aggregation!r} (one of {AGGREGATIONS}), "
                         f"scale {scale!r} (one of {SCALES}), eps {eps} (≥ 0)")
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    r = rewards.detach().to(torch.float64)  # float64 for the statistics
    r = r[..., None] if r.dim() == 2 else r  # (B, G, K)
    B, G, K = r.shape
    if not torch.isfinite(r).all():
        bad = tuple(torch.nonzero(~torch.isfinite(r))[0].tolist())
        raise ValueError(f"rewards: non-finite value {r[bad].item()} at (b, g, k) = {bad}; rewards must be finite")
    w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64).cpu()
    if w.shape != (K,) or not torch.isfinite(w).all():
        raise ValueError(f"weights: expected {K} finite values (one per aspect), got {w.tolist()}")
    w = w.to(r.device)
    names = list(aspects) if aspects is not None else [f"aspect{k}" for k in range(K)]
    if len(names) != K:
        raise ValueError(f"aspects: {len(names)} names {names} for {K} reward aspects")

    diag = {}
    if constraint is None:
        adv, constant = _aggregate(r, w, aggregation, scale, eps)  # (B, G), (B,)
    else:
        if constraint.aspect not in names or K < 2:  # found by name only: no aspect is "safety" by position
            raise ValueError(f"constraint on {constraint.aspect!r}: needs that aspect (pass `aspects=`) and at "
                             f"least one other; aspects are {names}")
        s = names.index(constraint.aspect)
        rest = [k for k in range(K) if k != s]
        a_rest, c_rest = _aggregate(r[..., rest], w[rest], aggregation, scale, eps)  # (B, G)
        a_unsafe, c_unsafe = _aggregate(1 - r[..., s:s + 1], torch.ones_like(w[:1]), aggregation, scale, eps)  # cost, (B, G)
        mean_safety = r[..., s].mean().item()
        lam = constraint.update(mean_safety)  # dual ascent first, as Safe-RLHF does before the actor step
        adv = (a_rest - lam * a_unsafe) / (1 + lam)  # (B, G)  Safe-RLHF's PPO-Lag advantage mix
        constant = c_rest & c_unsafe
        diag.update({"lambda": lam, "safety_mean": mean_safety, "violation": constraint.threshold - mean_safety})

    diag["frac_zero_std"] = constant.double().mean().item()
    aspect_constant = (r.amax(1) == r.amin(1)).double().mean(0)  # (K,)
    for k, name in enumerate(names):
        diag[f"frac_zero_std/{name}"] = aspect_constant[k].item()
        diag[f"reward_mean/{name}"] = r[..., k].mean().item()
        diag[f"reward_std/{name}"] = _std(r[..., k]).item()
    return adv.to(out_dtype), diag
