"""The clipped GRPO loss: each loss_type against a Python-loop reference, its gradients, masking, KL, accumulation."""
import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from minigrpo.loss import LOSS_TYPES, grpo_loss, kl_k3


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


@given(batches(), st.sampled_from(LOSS_TYPES), st.floats(0.05, 0.4), st.integers(6, 20), st.integers(1, 50))
def test_gradient_at_ratio_one_is_reinforce_with_baseline(batch, loss_type, epsilon, L, items):
    """At ratio 1 (old = logp) and beta 0, ∂loss/∂logp[i, t] = −A_i · c[i, t]: REINFORCE with the group baseline in A."""
    logp, _, _, adv, mask = batch
    logp = logp.clone().requires_grad_()
    loss, _ = grpo_loss(logp, logp.detach(), adv, mask, loss_type=loss_type, epsilon=epsilon,
                        max_completion_length=L, num_items_in_batch=items)
    loss.backward()
    c = token_weights(mask, loss_type, L, items)
    expected = [[-adv[i].item() * c[i][t] for t in range(mask.shape[1])] for i in range(mask.shape[0])]
    torch.testing.assert_close(logp.grad, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-15)


@given(batches(spread=0.6), st.sampled_from(LOSS_TYPES), st.floats(0.05, 0.3), st.floats(0.05, 0.4))
def test_clipping_zeroes_gradient_on_the_clipped_side(batch, loss_type, eps_low, eps_high):
    """A token with ratio above 1+ε_high and A > 0, or below 1−ε and A < 0, gets zero gradient; every other token, not."""
    logp, old, _, adv, mask = batch
    ratio = torch.exp(logp - old)
    assume(((ratio - (1 - eps_low)).abs() > 1e-6).all() and ((ratio - (1 + eps_high)).abs() > 1e-6).all())
    assume((adv.abs() > 1e-3).all())
    logp = logp.clone().requires_grad_()
    loss, _ = grpo_loss(logp, old, adv, mask, loss_type=loss_type, epsilon=eps_low, epsilon_high=eps_high)
    loss.backward()
    A = adv[:, None].expand_as(ratio)
    clipped = ((ratio > 1 + eps_high) & (A > 0)) | ((ratio < 1 - eps_low) & (A < 0))
    assert (logp.grad[clipped | ~mask] == 0).all()
    assert (logp.grad[~clipped & mask] != 0).all()


@given(batches(), OPTIONS, st.data())
def test_masked_tokens_change_nothing(batch, opts, data):
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
        loss, stats = grpo_loss(lp, o, adv, mask, ref_logp=r, **opts)
        loss.backward()
        results.append((loss, lp.grad, stats))
    (l0, g0, s0), (l1, g1, s1) = results
    assert torch.equal(l0, l1) and torch.equal(g0, g1) and s0 == s1
    assert (g1[~mask] == 0).all()


@given(st.lists(st.tuples(st.floats(-50, 0), st.floats(-50, 0)), min_size=1, max_size=20))
def test_k3_kl_is_nonnegative_and_zero_iff_equal(pairs):
    """k3 = exp(d) − d − 1 ≥ 0 per token, 0 where logp = ref_logp and > 0 where they differ (by more than 1e-12)."""
    logp = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    ref = torch.tensor([q for _, q in pairs], dtype=torch.float64)
    for r in (ref, logp.clone()):
        kl = kl_k3(logp, r)
        assert (kl >= 0).all()
        assert (kl[logp == r] == 0).all()
        assert (kl[(logp - r).abs() > 1e-12] > 0).all()
    _, stats = grpo_loss(logp[None], logp[None], torch.ones(1), torch.ones(1, len(pairs)), ref_logp=logp[None].clone())
    assert stats["kl"] == 0


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
def test_bad_input_is_a_format_error(kwargs, words):
    """Wrong shapes, unknown loss types and a KL without a reference raise ValueError naming the tensor."""
    args = dict(logp=torch.zeros(2, 3), old_logp=torch.zeros(2, 3), advantages=torch.zeros(2), mask=torch.ones(2, 3))
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        grpo_loss(**args)
    assert words in str(e.value)
