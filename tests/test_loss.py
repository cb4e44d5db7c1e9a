"""The clipped GRPO loss: each loss_type against a Python-loop reference, its gradients, masking, KL, accumulation.

Tests marked `exercise` also grade walkthrough/exercises/ (grpo_loss, kl_k3, reduce_tokens) through
tests/adapters.py; the exercise's grpo_loss is loss_type "grpo" without stats, so the other loss
types run on the same tests as `package_only` parameters.
"""
import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import adapters
from minigrpo.loss import LOSS_TYPES, grpo_loss

GRADED_GRPO = pytest.mark.parametrize("loss_type", [
    pytest.param("grpo", marks=pytest.mark.exercise("grpo_loss")),
    *(pytest.param(t, marks=pytest.mark.package_only) for t in LOSS_TYPES if t != "grpo"),
])


def loss_and_stats(logp, old, adv, mask, loss_type, **kw):
    """(loss, stats): the exercise's grpo_loss through the adapter for "grpo" (stats None), else the package's."""
    if loss_type == "grpo":
        kw = {k: v for k, v in kw.items() if k not in ("max_completion_length", "num_items_in_batch")}
        return adapters.grpo_loss(logp, old, adv, mask, **kw), None
    return grpo_loss(logp, old, adv, mask, loss_type=loss_type, **kw)


@st.composite
def batches(draw, spread=0.5):
    """Random (logp, old_logp, ref_logp, advantages, mask) in float64; log-ratios within ±spread."""
    N, C = draw(st.integers(1, 5)), draw(st.integers(1, 6))

    def mat(lo, hi):
        return torch.tensor(draw(st.lists(st.floats(lo, hi), min_size=N * C, max_size=N * C)),
                            dtype=torch.float64).view(N, C)

    logp = mat(-6, 0)
    old = logp + mat(-spread, spread)
    ref = logp + mat(-2, 2)
    adv = torch.tensor(draw(st.lists(st.floats(-3, 3), min_size=N, max_size=N)), dtype=torch.float64)
    mask = torch.tensor(draw(st.lists(st.booleans(), min_size=N * C, max_size=N * C))).view(N, C)
    return logp, old, ref, adv, mask


OPTIONS = st.fixed_dictionaries({
    "loss_type": st.sampled_from(LOSS_TYPES),
    "epsilon": st.floats(0.05, 0.4),
    "epsilon_high": st.one_of(st.none(), st.floats(0.05, 0.5)),
    "beta": st.sampled_from([0.0, 0.04, 0.5]),
    "max_completion_length": st.one_of(st.none(), st.integers(6, 20)),
    "num_items_in_batch": st.one_of(st.none(), st.integers(1, 50)),
})


# ------------------------------------------------------------------ naive reference, from the formulas
def naive_loss(logp, old, ref, adv, mask, loss_type, epsilon, epsilon_high, beta, max_completion_length,
               num_items_in_batch):
    """DeepSeekMath eq. 3 token by token, then TRL's normaliser for loss_type; python floats."""
    N, C = logp.shape
    logp, old, ref, adv, mask = logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist()
    eps_high = epsilon if epsilon_high is None else epsilon_high
    sums, counts = [], []
    for i in range(N):
        total, n = 0.0, 0
        for t in range(C):
            if not mask[i][t]:
                continue
            ratio = math.exp(logp[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - epsilon), 1 + eps_high)
            loss = -min(ratio * adv[i], clipped * adv[i])
            if beta > 0:
                d = ref[i][t] - logp[i][t]
                loss += beta * (math.exp(d) - d - 1)
            total, n = total + loss, n + 1
        sums.append(total)
        counts.append(n)
    if loss_type == "grpo":
        return sum(s / max(n, 1) for s, n in zip(sums, counts)) / N
    if loss_type == "bnpo":
        return sum(sums) / max(sum(counts), 1)
    if loss_type == "dr_grpo":
        return sum(sums) / (N * (C if max_completion_length is None else max_completion_length))
    return sum(sums) / max(sum(counts) if num_items_in_batch is None else num_items_in_batch, 1)


def token_weights(mask, loss_type, max_completion_length=None, num_items_in_batch=None):
    """c[i][t]: the weight of token (i, t) in loss_type's average (0 when masked), by loops."""
    N, C = mask.shape
    m = mask.tolist()
    total = sum(map(sum, m))
    out = []
    for i in range(N):
        row = []
        for t in range(C):
            c = {"grpo": 1 / (N * max(sum(m[i]), 1)), "bnpo": 1 / max(total, 1),
                 "dr_grpo": 1 / (N * (max_completion_length or C)),
                 "dapo": 1 / max(num_items_in_batch or total, 1)}[loss_type]
            row.append(c if m[i][t] else 0.0)
        out.append(row)
    return out


# ------------------------------------------------------------------ the properties
@pytest.mark.exercise("grpo_loss")
@given(batches(), st.floats(0.05, 0.4), st.one_of(st.none(), st.floats(0.05, 0.5)), st.sampled_from([0.0, 0.04, 0.5]))
def test_grpo_loss_matches_naive_loop(batch, epsilon, epsilon_high, beta):
    """The clipped loss (with clip-higher and the k3 KL) averaged the paper's way equals its Python-loop reference."""
    logp, old, ref, adv, mask = batch
    loss = adapters.grpo_loss(logp, old, adv, mask, epsilon, epsilon_high, beta, ref)
    want = naive_loss(logp, old, ref, adv, mask, "grpo", epsilon, epsilon_high, beta, None, None)
    assert loss.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.package_only
@given(batches(), OPTIONS)
def test_each_loss_type_matches_naive_loop(batch, opts):
    """Every loss_type (with clip-higher, KL, custom normalisers) equals its Python-loop reference, and so do the stats."""
    logp, old, ref, adv, mask = batch
    loss, stats = grpo_loss(logp, old, adv, mask, ref_logp=ref, **opts)
    assert loss.item() == pytest.approx(naive_loss(logp, old, ref, adv, mask, **opts), rel=1e-10, abs=1e-12)
    eps_low = opts["epsilon"]
    eps_high = eps_low if opts["epsilon_high"] is None else opts["epsilon_high"]
    low = high = n = 0
    ratio_sum = kl_sum = 0.0
    for i in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if mask[i, t]:
                r = math.exp(logp[i, t] - old[i, t])
                d = ref[i, t].item() - logp[i, t].item()
                low += r < 1 - eps_low and adv[i] < 0
                high += r > 1 + eps_high and adv[i] > 0
                n, ratio_sum, kl_sum = n + 1, ratio_sum + r, kl_sum + math.exp(d) - d - 1
    assert stats["tokens"] == n
    assert stats["clip_low"] == low / max(n, 1) and stats["clip_high"] == high / max(n, 1)
    assert stats["clip_total"] == (low + high) / max(n, 1)
    assert stats["ratio_mean"] == pytest.approx(ratio_sum / max(n, 1), rel=1e-12)
    assert stats["kl"] == pytest.approx(kl_sum / max(n, 1), rel=1e-9, abs=1e-12)
    assert stats["adv_mean"] == pytest.approx(adv.mean().item(), rel=1e-12, abs=1e-15)


@GRADED_GRPO
@given(batches(), st.floats(0.05, 0.4), st.integers(6, 20), st.integers(1, 50))
def test_gradient_at_ratio_one_is_reinforce_with_baseline(loss_type, batch, epsilon, L, items):
    """At ratio 1 (old = logp) and beta 0, ∂loss/∂logp[i, t] = −A_i · c[i, t]: REINFORCE with the group baseline in A."""
    logp, _, _, adv, mask = batch
    logp = logp.clone().requires_grad_()
    loss, _ = loss_and_stats(logp, logp.detach(), adv, mask, loss_type, epsilon=epsilon,
                             max_completion_length=L, num_items_in_batch=items)
    loss.backward()
    c = token_weights(mask, loss_type, L, items)
    expected = [[-adv[i].item() * c[i][t] for t in range(mask.shape[1])] for i in range(mask.shape[0])]
    torch.testing.assert_close(logp.grad, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-15)


@GRADED_GRPO
@given(batches(spread=0.6), st.floats(0.05, 0.3), st.floats(0.05, 0.4))
def test_clipping_zeroes_gradient_on_the_clipped_side(loss_type, batch, eps_low, eps_high):
    """A token with ratio above 1+ε_high and A > 0, or below 1−ε and A < 0, gets zero gradient; every other token, not."""
    logp, old, _, adv, mask = batch
    ratio = torch.exp(logp - old)
    assume(((ratio - (1 - eps_low)).abs() > 1e-6).all() and ((ratio - (1 + eps_high)).abs() > 1e-6).all())
    assume((adv.abs() > 1e-3).all())
    logp = logp.clone().requires_grad_()
    loss, _ = loss_and_stats(logp, old, adv, mask, loss_type, epsilon=eps_low, epsilon_high=eps_high)
    loss.backward()
    A = adv[:, None].expand_as(ratio)
    clipped = ((ratio > 1 + eps_high) & (A > 0)) | ((ratio < 1 - eps_low) & (A < 0))
    assert (logp.grad[clipped | ~mask] == 0).all()
    assert (logp.grad[~clipped & mask] != 0).all()


@GRADED_GRPO
@given(batches(), OPTIONS, st.data())
def test_masked_tokens_change_nothing(loss_type, batch, opts, data):
    """Whatever masked positions hold (even NaN or inf), the loss and every gradient are unchanged, masked gradients 0."""
    logp, old, ref, adv, mask = batch
    junk = st.floats(allow_nan=True, allow_infinity=True)

    def garbled(x):
        x = x.clone()
        x[~mask] = torch.tensor(data.draw(st.lists(junk, min_size=int((~mask).sum()), max_size=int((~mask).sum()))),
                                dtype=x.dtype)
        return x

    results = []
    for lp, o, r in ((logp, old, ref), (garbled(logp), garbled(old), garbled(ref))):
        lp = lp.clone().requires_grad_()
        loss, stats = loss_and_stats(lp, o, adv, mask, ref_logp=r, **{**opts, "loss_type": loss_type})
        loss.backward()
        results.append((loss, lp.grad, stats))
    (l0, g0, s0), (l1, g1, s1) = results
    assert torch.equal(l0, l1) and torch.equal(g0, g1) and s0 == s1
    assert (g1[~mask] == 0).all()


@pytest.mark.exercise("kl_k3")
@given(st.lists(st.tuples(st.floats(-50, 0), st.floats(-50, 0)), min_size=1, max_size=20))
def test_k3_kl_is_nonnegative_and_zero_iff_equal(pairs):
    """k3 = exp(d) − d − 1 ≥ 0 per token, 0 where logp = ref_logp and > 0 where they differ (by more than 1e-12)."""
    logp = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    ref = torch.tensor([q for _, q in pairs], dtype=torch.float64)
    for r in (ref, logp.clone()):
        kl = adapters.kl_k3(logp, r)
        assert (kl >= 0).all()
        assert (kl[logp == r] == 0).all()
        assert (kl[(logp - r).abs() > 1e-12] > 0).all()


@pytest.mark.exercise("kl_k3")
@given(st.lists(st.tuples(st.floats(-20, 0), st.floats(-20, 0)), min_size=1, max_size=12), st.integers(1, 3))
def test_k3_matches_formula_elementwise(pairs, rows):
    """k3 is exp(d) − d − 1 with d = ref_logp − logp, element by element, for any shape (here (rows, C))."""
    logp = torch.tensor([[p for p, _ in pairs]] * rows, dtype=torch.float64)  # (rows, C)
    ref = torch.tensor([[q for _, q in pairs]] * rows, dtype=torch.float64)  # (rows, C)
    kl = adapters.kl_k3(logp, ref)
    assert kl.shape == logp.shape
    want = [[math.exp(q - p) - (q - p) - 1 for p, q in pairs]] * rows
    torch.testing.assert_close(kl, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.exercise("kl_k3")
@given(st.lists(st.floats(-4, 4), min_size=2, max_size=10), st.lists(st.floats(-4, 4), min_size=10, max_size=10))
def test_k3_averaged_under_the_policy_is_the_kl(logits, ref_logits):
    """Averaged over a vocabulary with the policy's probabilities, k3 is exactly KL(π‖π_ref): it is unbiased."""
    logp = torch.tensor(logits, dtype=torch.float64).log_softmax(0)  # (V,)
    ref = torch.tensor(ref_logits[:len(logits)], dtype=torch.float64).log_softmax(0)  # (V,)
    kl = (logp.exp() * (logp - ref)).sum()  # KL(π‖π_ref) = Σ π log(π/π_ref)
    assert (logp.exp() * adapters.kl_k3(logp, ref)).sum().item() == pytest.approx(kl.item(), rel=1e-9, abs=1e-12)


@pytest.mark.exercise("kl_k3")
@given(st.tuples(st.floats(1, 9.99), st.integers(5, 8)).map(lambda m_e: m_e[0] * 10.0 ** -m_e[1]), st.booleans(),
       st.floats(-30, 0))
def test_k3_is_accurate_for_tiny_differences(size, negative, logp):
    """For tiny d, k3 keeps its value d²/2 to 1e-6 relative (exp(d) − 1 cancels; torch.expm1 does not)."""
    d = -size if negative else size
    kl = adapters.kl_k3(torch.tensor([logp], dtype=torch.float64), torch.tensor([logp + d], dtype=torch.float64))
    d = (logp + d) - logp  # the difference float64 actually holds
    assert kl.item() == pytest.approx(d * d / 2 + d ** 3 / 6 + d ** 4 / 24, rel=1e-6, abs=0)  # Taylor: exp(d) − d − 1


@pytest.mark.package_only
def test_kl_stat_is_zero_at_the_reference():
    """grpo_loss reports kl = 0 exactly when the policy is the reference."""
    logp = -torch.rand(1, 5, dtype=torch.float64)
    _, stats = grpo_loss(logp, logp, torch.ones(1), torch.ones(1, 5), ref_logp=logp.clone())
    assert stats["kl"] == 0


@pytest.mark.package_only
@given(batches(), st.sampled_from(["grpo", "dr_grpo", "dapo"]), st.data())
def test_microbatch_gradients_add_up_to_the_full_batch(batch, loss_type, data):
    """Split into micro-batches: dapo losses (with the full batch's token count) add up as they are, grpo and dr_grpo weighted by n/N."""
    logp, old, ref, adv, mask = batch
    N, C = logp.shape
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(N - 1, 1)), max_size=3)))) if N > 1 else []
    bounds = [0, *cuts, N]
    opts = dict(loss_type=loss_type, max_completion_length=C, num_items_in_batch=mask.sum(), beta=0.1)

    full = logp.clone().requires_grad_()
    grpo_loss(full, old, adv, mask, ref_logp=ref, **opts)[0].backward()
    acc = logp.clone().requires_grad_()
    for s, e in zip(bounds, bounds[1:]):
        loss, _ = grpo_loss(acc[s:e], old[s:e], adv[s:e], mask[s:e], ref_logp=ref[s:e], **opts)
        (loss if loss_type == "dapo" else loss * (e - s) / N).backward()
    torch.testing.assert_close(acc.grad, full.grad, rtol=1e-10, atol=1e-14)


def test_bnpo_accumulation_is_not_exact():
    """bnpo micro-batch losses weighted by n/N do not add up to the full-batch gradient when token counts differ."""
    adv = torch.ones(2, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    full = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    grpo_loss(full, full.detach(), adv, mask, loss_type="bnpo")[0].backward()
    acc = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    for i in range(2):
        (grpo_loss(acc[i:i + 1], acc[i:i + 1].detach(), adv[i:i + 1], mask[i:i + 1], loss_type="bnpo")[0] / 2).backward()
    assert full.grad[0, 0] == -0.25 and full.grad[1, 0] == -0.25  # full batch: each of the 4 tokens weighs 1/4
    assert acc.grad[0, 0] == -0.5 and acc.grad[1, 0] == -1 / 6  # accumulated: 1/2 for the lone token, 1/6 for the others


@pytest.mark.parametrize("kwargs, words", [
    (dict(loss_type="ppo"), "loss_type 'ppo'"),
    (dict(old_logp=torch.zeros(2, 4)), "old_logp: shape (2, 4), expected logp's (2, 3)"),
    (dict(advantages=torch.zeros(3)), "advantages: shape (3,)"),
    (dict(beta=0.1), "needs ref_logp"),
])
@pytest.mark.package_only
def test_bad_input_is_a_format_error(kwargs, words):
    """Wrong shapes, unknown loss types and a KL without a reference raise ValueError naming the tensor."""
    args = dict(logp=torch.zeros(2, 3), old_logp=torch.zeros(2, 3), advantages=torch.zeros(2), mask=torch.ones(2, 3))
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        grpo_loss(**args)
    assert words in str(e.value)


# ------------------------------------------------------------------ reduce_tokens, the normalisers alone
@st.composite
def per_token_batches(draw):
    """per_token (N, C) float64 values, mask (N, C), and the two optional normaliser arguments."""
    N, C = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    x = torch.tensor(draw(st.lists(st.floats(-4, 4), min_size=N * C, max_size=N * C)), dtype=torch.float64).view(N, C)
    mask = torch.tensor(draw(st.lists(st.booleans(), min_size=N * C, max_size=N * C))).view(N, C)
    return x, mask, draw(st.one_of(st.none(), st.integers(6, 20))), draw(st.one_of(st.none(), st.integers(1, 50)))


@pytest.mark.exercise("reduce_tokens")
@given(per_token_batches(), st.sampled_from(LOSS_TYPES))
def test_reduce_tokens_weighs_each_token_as_its_normaliser_says(batch, loss_type):
    """Each loss_type's value is Σ c[i, t]·x[i, t] and its gradient c[i, t], the token weights of its normaliser."""
    x, mask, L, items = batch
    x = x.clone().requires_grad_()
    loss = adapters.reduce_tokens(x, mask, loss_type, L, items)
    loss.backward()
    c = torch.tensor(token_weights(mask, loss_type, L, items), dtype=torch.float64)  # (N, C)
    assert loss.item() == pytest.approx((c * x.detach()).sum().item(), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(x.grad, c, rtol=1e-12, atol=1e-15)


@pytest.mark.exercise("reduce_tokens")
@given(per_token_batches(), st.sampled_from(LOSS_TYPES), st.data())
def test_reduce_tokens_ignores_masked_entries(batch, loss_type, data):
    """Whatever masked entries hold (even NaN or inf), the value and the gradient are unchanged, masked gradients 0."""
    x, mask, L, items = batch
    junk = x.clone()
    n = int((~mask).sum())
    junk[~mask] = torch.tensor(data.draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n,
                                                  max_size=n)), dtype=torch.float64)
    results = []
    for v in (x, junk):
        v = v.clone().requires_grad_()
        loss = adapters.reduce_tokens(v, mask, loss_type, L, items)
        loss.backward()
        results.append((loss, v.grad))
    (l0, g0), (l1, g1) = results
    assert torch.equal(l0, l1) and torch.equal(g0, g1) and (g1[~mask] == 0).all()


@pytest.mark.exercise("reduce_tokens")
@given(per_token_batches(), st.sampled_from(["grpo", "dr_grpo", "dapo"]), st.data())
def test_reduce_tokens_micro_batches_add_up(batch, loss_type, data):
    """Split N sequences into micro-batches: dapo (with the full batch's token count) adds up as is; grpo, dr_grpo weighted n/N."""
    x, mask, _, _ = batch
    N, C = x.shape
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(N - 1, 1)), max_size=3)))) if N > 1 else []
    bounds = [0, *cuts, N]
    items = int(mask.sum())
    full = adapters.reduce_tokens(x, mask, loss_type, C, items)
    parts = [adapters.reduce_tokens(x[s:e], mask[s:e], loss_type, C, items) * (1 if loss_type == "dapo" else (e - s) / N)
             for s, e in zip(bounds, bounds[1:])]
    assert sum(p.item() for p in parts) == pytest.approx(full.item(), rel=1e-10, abs=1e-12)


@pytest.mark.exercise("reduce_tokens")
def test_reduce_tokens_refuses_an_unknown_loss_type():
    """An unknown loss_type raises ValueError (a typo must not silently pick a normaliser)."""
    with pytest.raises(ValueError):
        adapters.reduce_tokens(torch.zeros(2, 3), torch.ones(2, 3), "ppo")
