"""Group advantages: a naive-loop reference, the invariants GRPO's normalisation promises, the constraint.

Tests marked `exercise` grade walkthrough/exercises/ too (`make grade`): they call the exercise's
signature through tests/adapters.py. The paper's aggregation is the exercise; GDPO's runs on the
same tests as a `package_only` parameter.
"""
import json
import math
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import adapters
from minigrpo.advantages import AGGREGATIONS, SCALES, SafetyConstraint, group_advantages

MODES = [(a, s) for a in AGGREGATIONS for s in SCALES]
GRID = st.integers(0, 16).map(lambda i: i / 16)  # exact dyadic rewards: many ties, exact sums
UNIT = st.floats(0, 1)
PAPER = pytest.mark.exercise("group_advantages")
AGGREGATION = pytest.mark.parametrize("aggregation", [
    pytest.param("sum_then_normalize", marks=PAPER),  # the paper: the exercise
    pytest.param("normalize_then_sum", marks=pytest.mark.package_only),  # GDPO: the package only
])


def advantages(r, w, aggregation="sum_then_normalize", scale="group", eps=1e-4):
    """Advantages (B, G): the exercise's function (through the adapter) for the paper's aggregation."""
    if aggregation == "sum_then_normalize":
        return adapters.group_advantages(r, w, scale, eps)
    return group_advantages(r, w, aggregation=aggregation, scale=scale, eps=eps)[0]


@st.composite
def rewards(draw, values=GRID, K=None, dtype=torch.float64):
    """(B, G, K) rewards, some groups forced constant."""
    B, G = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    K = draw(st.integers(1, 4)) if K is None else K
    r = torch.tensor(draw(st.lists(values, min_size=B * G * K, max_size=B * G * K)), dtype=dtype).view(B, G, K)
    for b in range(B):
        if draw(st.booleans()):
            r[b] = r[b, 0]  # every sample of group b equal to its first
    return r


def weights_for(draw, K):
    return torch.tensor(draw(st.lists(st.integers(0, 4).map(lambda i: i / 4), min_size=K, max_size=K)),
                        dtype=torch.float64)


# ------------------------------------------------------------------ naive reference, from the formulas
def mean(xs):
    return sum(xs) / len(xs)


def bessel_std(xs):
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0


def naive_normalise(vals, scale, eps):
    """vals[b][g] → (x − group mean) / (std + eps); constant groups → 0."""
    all_vals = [v for row in vals for v in row]
    out = []
    for row in vals:
        if max(row) == min(row):
            out.append([0.0] * len(row))
            continue
        d = {"group": bessel_std(row) + eps, "batch": bessel_std(all_vals) + eps, "none": 1.0}[scale]
        out.append([(v - mean(row)) / d for v in row])
    return out


def naive_advantages(r, w, aggregation, scale, eps):
    """The paper (sum, then normalise) or GDPO as TRL writes it (normalise each, sum, whiten with the mean)."""
    B, G, K = r.shape
    r, w = r.tolist(), w.tolist()
    if aggregation == "sum_then_normalize":
        R = [[sum(w[k] * r[b][g][k] for k in range(K)) for g in range(G)] for b in range(B)]
        return naive_normalise(R, scale, eps)
    per = [naive_normalise([[r[b][g][k] for g in range(G)] for b in range(B)], scale, eps) for k in range(K)]
    S = [[sum(w[k] * per[k][b][g] for k in range(K)) for g in range(G)] for b in range(B)]
    flat = [v for row in S for v in row]
    m, s = mean(flat), bessel_std(flat)
    bound = sum(abs(w[k]) * max(abs(v) for row in per[k] for v in row) for k in range(K))
    if s <= 64 * sys.float_info.epsilon * bound:  # aspects that cancel exactly: rounding noise, not signal
        return [[0.0] * G for _ in range(B)]
    return [[(v - m) / (s + eps) for v in row] for row in S]


def group_std(a):
    """Bessel std of each row of a (B, G)."""
    return a.std(1, correction=1)


# ------------------------------------------------------------------ the properties
@AGGREGATION
@given(st.data(), st.sampled_from(SCALES), st.sampled_from([0.0, 1e-4, 0.1]), st.sampled_from([GRID, UNIT]))
def test_matches_naive_loop(aggregation, data, scale, eps, values):
    """Every scale ("group", "batch", "none") equals its Python-loop reference written from the formulas."""
    r = data.draw(rewards(values))
    w = weights_for(data.draw, r.shape[-1])
    adv = advantages(r, w, aggregation, scale, eps)
    ref = torch.tensor(naive_advantages(r, w, aggregation, scale, eps), dtype=torch.float64)
    torch.testing.assert_close(adv, ref, rtol=1e-9, atol=1e-9)


@AGGREGATION
@given(st.data(), st.sampled_from(SCALES), st.sampled_from([GRID, UNIT]))
def test_group_sums_to_zero(aggregation, data, scale, values):
    """The advantages of each group sum to 0, whatever the scale."""
    r = data.draw(rewards(values))
    adv = advantages(r, weights_for(data.draw, r.shape[-1]), aggregation, scale)
    torch.testing.assert_close(adv.sum(1), torch.zeros(r.shape[0], dtype=adv.dtype), rtol=0, atol=1e-10)


@PAPER
@given(st.data(), st.sampled_from([0.0, 1e-4, 0.1]), st.sampled_from([GRID, UNIT]))
def test_unit_std_per_group(data, eps, values):
    """With scale="group", a group of Bessel std s > 0 gets advantages of Bessel std s/(s + eps): 1 when eps = 0."""
    r = data.draw(rewards(values))
    w = weights_for(data.draw, r.shape[-1])
    adv = advantages(r, w, scale="group", eps=eps)
    R = (r * w).sum(-1)  # (B, G)
    s = group_std(R)
    moving = R.amax(1) > R.amin(1)
    torch.testing.assert_close(group_std(adv)[moving], (s / (s + eps))[moving], rtol=1e-9, atol=1e-12)
    if eps == 0:
        assert torch.allclose(group_std(adv)[moving], torch.ones(()).double(), rtol=1e-12)


@AGGREGATION
@given(st.data(), st.sampled_from(["group", "none"]))
def test_shift_invariance(aggregation, data, scale):
    """Adding a constant to every reward of a group (any constant per group and aspect) leaves its advantages unchanged."""
    r = data.draw(rewards())
    B, G, K = r.shape
    w = weights_for(data.draw, K)
    shift = torch.tensor(data.draw(st.lists(st.integers(-64, 64), min_size=B * K, max_size=B * K))).view(B, 1, K) / 16
    a0 = advantages(r, w, aggregation, scale)
    a1 = advantages(r + shift, w, aggregation, scale)
    torch.testing.assert_close(a1, a0, rtol=0, atol=1e-12)


@AGGREGATION
@given(st.data(), st.sampled_from(SCALES), st.floats(1e-3, 1e3), st.sampled_from([0.0, 1e-4, 0.1]))
def test_scale_invariance(aggregation, data, scale, c, eps):
    """Multiplying all rewards by c > 0 changes nothing when eps = 0 (scale "none": multiplies by c); else it is eps → eps/c."""
    r = data.draw(rewards())
    w = weights_for(data.draw, r.shape[-1])
    a_scaled = advantages(c * r, w, aggregation, scale, eps)
    if eps == 0:
        a0 = advantages(r, w, aggregation, scale, 0.0)
        torch.testing.assert_close(a_scaled, c * a0 if (aggregation, scale) == ("sum_then_normalize", "none") else a0,
                                   rtol=1e-9, atol=1e-9)
    if aggregation == "sum_then_normalize" and scale != "none":
        a_eps = advantages(r, w, aggregation, scale, eps / c)
        torch.testing.assert_close(a_scaled, a_eps, rtol=1e-9, atol=1e-9)


@PAPER
@given(st.data(), st.sampled_from(SCALES))
def test_ranking_preserved(data, scale):
    """Within a group, a higher reward R gets a strictly higher advantage and equal rewards equal ones (the paper's ranking argument)."""
    r = data.draw(rewards())
    w = weights_for(data.draw, r.shape[-1])
    adv = advantages(r, w, scale=scale)
    R = (r * w).sum(-1)  # (B, G)
    B, G = R.shape
    for b in range(B):
        for i in range(G):
            for j in range(G):
                if R[b, i] < R[b, j]:
                    assert adv[b, i] < adv[b, j]
                elif R[b, i] == R[b, j]:
                    assert adv[b, i] == adv[b, j]


@AGGREGATION
@given(st.data(), st.sampled_from(SCALES), st.sampled_from([GRID, UNIT]))
def test_permutation_equivariance(aggregation, data, scale, values):
    """Permuting the samples of a group permutes their advantages the same way."""
    r = data.draw(rewards(values))
    B, G, K = r.shape
    w = weights_for(data.draw, K)
    perm = torch.stack([torch.tensor(data.draw(st.permutations(range(G)))) for _ in range(B)])  # (B, G)
    r_perm = torch.gather(r, 1, perm[..., None].expand(B, G, K))
    a0 = advantages(r, w, aggregation, scale)
    a1 = advantages(r_perm, w, aggregation, scale)
    torch.testing.assert_close(a1, torch.gather(a0, 1, perm), rtol=1e-9, atol=1e-12)


@PAPER
@given(st.data(), st.sampled_from(SCALES), st.sampled_from([0.0, 1e-4, 0.1]), st.sampled_from([GRID, UNIT]))
def test_constant_groups_give_exact_zeros(data, scale, eps, values):
    """A group whose rewards are all equal gets advantages exactly 0, even with eps = 0 (no 0/0 = NaN)."""
    r = data.draw(rewards(values))
    w = weights_for(data.draw, r.shape[-1])
    adv = advantages(r, w, scale=scale, eps=eps)
    R = (r * w).sum(-1)  # (B, G)
    assert torch.isfinite(adv).all()
    assert (adv[R.amax(1) == R.amin(1)] == 0).all()


@pytest.mark.package_only
@given(st.data(), st.sampled_from(MODES), st.sampled_from([0.0, 1e-300, 1e-4, 1.0, 1e10]))
def test_constant_groups_give_exact_zeros_and_are_counted(data, mode, eps):
    """A group whose rewards are all equal gets advantages exactly 0 for any eps, and frac_zero_std counts it."""
    r = data.draw(rewards(st.floats(-1e30, 1e30)))
    adv, diag = group_advantages(r, aggregation=mode[0], scale=mode[1], eps=eps)
    assert torch.isfinite(adv).all()
    R = r.sum(-1)  # (B, G) the paper's reward with unit weights
    aspects_constant = (r.amax(1) == r.amin(1)).all(-1)  # (B,)
    constant = (R.amax(1) == R.amin(1)) if mode[0] == "sum_then_normalize" else aspects_constant
    assert (adv[constant | aspects_constant] == 0).all()
    assert diag["frac_zero_std"] == constant.double().mean().item()


@pytest.mark.package_only
@given(st.data(), st.sampled_from(MODES), st.sampled_from([0.0, 1e-4]))
def test_finite_in_finite_out(data, mode, eps):
    """Any finite float32 rewards, huge or tiny (subnormal), give finite float32 advantages (|r| ≤ 2^119 for "none": reward units)."""
    big = 2.0 ** 119 if mode[1] == "none" else None  # "none" returns r − mean: Σ|w|·2·|r| must fit float32
    r = data.draw(rewards(st.floats(big and -big, big, width=32, allow_nan=False, allow_infinity=False),
                          dtype=torch.float32))
    w = torch.tensor(data.draw(st.lists(st.floats(-10, 10), min_size=r.shape[-1], max_size=r.shape[-1])))
    adv, diag = group_advantages(r, w, aggregation=mode[0], scale=mode[1], eps=eps)
    assert adv.dtype == torch.float32 and torch.isfinite(adv).all()
    assert all(math.isfinite(v) for v in diag.values())


@given(st.data(), st.sampled_from(SCALES), st.sampled_from([0.0, 1e-4, 0.1]))
def test_one_aspect_gdpo_is_the_paper_whitened(data, scale, eps):
    """With one aspect, normalize_then_sum is sum_then_normalize divided by its batch std (+ eps)."""
    r = data.draw(rewards(st.floats(0, 1), K=1))
    a_paper, _ = group_advantages(r, scale=scale, eps=eps)
    a_gdpo, _ = group_advantages(r, aggregation="normalize_then_sum", scale=scale, eps=eps)
    s = a_paper.std(correction=1) if a_paper.numel() > 1 else torch.zeros(())
    torch.testing.assert_close(a_gdpo, a_paper / (s + eps) if s > 0 else a_paper, rtol=1e-9, atol=1e-12)


@given(st.data())
def test_diagnostics_match_naive_loop(data):
    """Per-aspect zero-std fraction, mean and std equal their loops; the dict is JSON-ready python floats."""
    r = data.draw(rewards(st.sampled_from([0.0, 0.5, 1.0])))
    B, G, K = r.shape
    names = [f"a{k}" for k in range(K)]
    _, diag = group_advantages(r, aspects=names)
    json.dumps(diag)
    for k, name in enumerate(names):
        col = [[r[b, g, k].item() for g in range(G)] for b in range(B)]
        flat = [v for row in col for v in row]
        assert diag[f"frac_zero_std/{name}"] == sum(max(row) == min(row) for row in col) / B
        assert math.isclose(diag[f"reward_mean/{name}"], mean(flat), rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(diag[f"reward_std/{name}"], bessel_std(flat), rel_tol=1e-12, abs_tol=1e-15)


# ------------------------------------------------------------------ the safety constraint
def steps(lam, mean_safety, threshold, lr, n, lambda_max=10.0):
    """λ and the n values dual ascent takes from it, at a fixed mean safety."""
    lams = [lam]
    for _ in range(n):
        lams.append(adapters.dual_ascent_step(lams[-1], mean_safety, threshold, lr, lambda_max))
    return lams


@pytest.mark.exercise("dual_ascent_step")
@given(st.floats(0.01, 5), st.floats(0, 1), st.floats(0, 1), st.floats(0, 2), st.floats(0.01, 20))
def test_dual_step_matches_formula(lam, mean_safety, threshold, lr, lambda_max):
    """One step is log λ' = min(log λ + lr·λ·(threshold − mean safety), log λ_max) (Safe-RLHF's update of log λ)."""
    lam, lambda_max = min(lam, lambda_max), max(lam, lambda_max)
    want = math.exp(min(math.log(lam) + lr * lam * (threshold - mean_safety), math.log(lambda_max)))
    assert adapters.dual_ascent_step(lam, mean_safety, threshold, lr, lambda_max) == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.exercise("dual_ascent_step")
@given(st.floats(0, 0.85), st.floats(0.01, 0.15), st.floats(0.01, 1.0), st.floats(0.01, 5))
def test_lambda_decays_when_safe(threshold, margin, lr, lam0):
    """With mean safety above the threshold, λ falls at every step and stays positive."""
    lams = steps(lam0, threshold + margin, threshold, lr, 50)
    assert all(b < a for a, b in zip(lams, lams[1:])) and lams[-1] > 0


@pytest.mark.exercise("dual_ascent_step")
def test_lambda_goes_to_zero_when_safe():
    """λ → 0 under a lasting safety surplus (like 1/t, the step being lr·λ·violation)."""
    lams = steps(1.0, 1.0, 0.5, 1.0, 2000)
    assert 0 < lams[-1] < 1e-2


@pytest.mark.exercise("dual_ascent_step")
@given(st.floats(0.1, 1), st.floats(0.01, 0.5), st.floats(0.01, 1.0), st.floats(0.01, 5))
def test_lambda_grows_when_unsafe(threshold, margin, lr, lam0):
    """With mean safety below the threshold, λ rises at every step until it reaches λ_max, never above."""
    lams = steps(lam0, threshold - margin, threshold, lr, 300)
    for a, b in zip(lams, lams[1:]):
        assert b > a or b == pytest.approx(10.0, rel=1e-12)
        assert b <= 10.0 * (1 + 1e-12)


@given(st.data(), st.sampled_from(MODES), st.floats(0, 1), st.floats(0.05, 5))
def test_constrained_advantages_match_naive(data, mode, threshold, lam0):
    """With a constraint: λ takes one dual step on this batch's mean safety, then A = (A_rest − λ·A_unsafe)/(1 + λ)."""
    r = data.draw(rewards(K=data.draw(st.integers(2, 4))))
    B, G, K = r.shape
    w = weights_for(data.draw, K)
    names = [f"a{k}" for k in range(K - 1)] + ["safety"]
    names = names[1:] + names[:1] if data.draw(st.booleans()) else names  # safety not always last
    s = names.index("safety")
    c = SafetyConstraint(threshold, lr=0.3, lambda_init=lam0)
    adv, diag = group_advantages(r, w, aggregation=mode[0], scale=mode[1], constraint=c, aspects=names)
    mean_s = r[..., s].mean().item()
    lam = min(math.exp(math.log(lam0) + 0.3 * lam0 * (threshold - mean_s)), 10.0)
    assert diag["lambda"] == pytest.approx(lam, rel=1e-12) and c.lam == diag["lambda"]
    rest = [k for k in range(K) if k != s]
    a_rest = torch.tensor(naive_advantages(r[..., rest], w[rest], *mode, 1e-4), dtype=torch.float64)
    a_unsafe = torch.tensor(naive_advantages(1 - r[..., s:s + 1], torch.ones(1), *mode, 1e-4), dtype=torch.float64)
    torch.testing.assert_close(adv, (a_rest - lam * a_unsafe) / (1 + lam), rtol=1e-9, atol=1e-9)
    moves = (torch.sign(torch.tensor(threshold - mean_s)) * (diag["lambda"] - lam0))
    assert moves >= 0  # above the threshold λ fell, below it rose


@pytest.mark.package_only
@given(st.floats(0, 1), st.floats(0, 1), st.floats(0.01, 1.0), st.floats(0.01, 5))
def test_safety_constraint_takes_the_dual_step(threshold, mean_safety, lr, lam0):
    """SafetyConstraint.update (what group_advantages calls) takes exactly the dual-ascent step of the exercise."""
    c = SafetyConstraint(threshold, lr=lr, lambda_init=lam0)
    want = math.exp(min(math.log(lam0) + lr * lam0 * (threshold - mean_safety), math.log(10.0)))
    assert c.update(mean_safety) == pytest.approx(want, rel=1e-12, abs=0)


def test_constraint_state_round_trip():
    """state_dict / load_state_dict restore λ exactly (for --resume)."""
    a = SafetyConstraint(0.9, lr=0.5)
    a.update(0.2)
    b = SafetyConstraint(0.9, lr=0.5)
    b.load_state_dict(a.state_dict())
    assert b.lam == a.lam and a.lam > 1


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, words", [
    (lambda: group_advantages(torch.rand(4)), "(B, G) or (B, G, K)"),
    (lambda: group_advantages(torch.tensor([[0.0, float("nan")]])), "non-finite value nan at (b, g, k) = (0, 1, 0)"),
    (lambda: group_advantages(torch.rand(2, 4, 3), weights=[1, 1]), "expected 3 finite values"),
    (lambda: group_advantages(torch.rand(2, 4), aggregation="mean"), "aggregation 'mean'"),
    (lambda: group_advantages(torch.rand(2, 4), eps=-1), "eps -1"),
    (lambda: group_advantages(torch.rand(2, 4, 2), aspects=["a"]), "1 names"),
    (lambda: group_advantages(torch.rand(2, 4), constraint=SafetyConstraint(0.5)), "at least one other"),
    (lambda: group_advantages(torch.rand(2, 4, 2), constraint=SafetyConstraint(0.5), aspects=["a", "b"]),
     "aspects are ['a', 'b']"),
    (lambda: group_advantages(torch.rand(2, 4, 4), constraint=SafetyConstraint(0.5)), "pass `aspects=`"),
    (lambda: SafetyConstraint(0.5, lambda_init=0.0), "lambda_init=0.0"),
])
def test_bad_input_is_a_value_error(call, words):
    """Bad shapes, values and options raise ValueError naming the tensor or option and what was expected."""
    with pytest.raises(ValueError) as e:
        call()
    assert words in str(e.value)


@pytest.mark.package_only
@given(st.floats(1e-3, 1e3), st.floats(1e-2, 1e2))
def test_gdpo_cancelling_aspects_give_zero_not_noise(c, w):
    """GDPO (eps = 0) with weighted aspects that cancel exactly gives advantages 0, not whitened rounding noise."""
    r = c * torch.tensor([[[0.0, 0.1875], [0.0625, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    adv, _ = group_advantages(r, weights=[w, w], aggregation="normalize_then_sum", eps=0.0)
    assert torch.equal(adv, torch.zeros(2, 2, dtype=torch.float64))
