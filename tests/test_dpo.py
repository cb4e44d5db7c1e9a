"""DPO's maths against the formula computed naively: the loss, its gradient's sign, its stats, the pairs."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minigrpo import dpo_loss
from minigrpo.dpo import preference_pairs


@st.composite
def logps(draw):
    """Four (N,) float64 tensors of summed sequence log-probs, N ≤ 6."""
    N = draw(st.integers(1, 6))
    return [torch.tensor(draw(st.lists(st.floats(-60, 0), min_size=N, max_size=N)), dtype=torch.float64)
            for _ in range(4)]


BETAS = st.floats(0.01, 2.0)


@given(logps(), BETAS)
def test_dpo_loss_naive(x, beta):
    """The loss is the pair mean of −log σ(β·((π_c − π_r) − (ref_c − ref_r))), computed one pair at a time."""
    pc, pr, rc, rr = x
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=beta)
    terms, wins = [], 0
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist()):
        z = beta * ((a - b) - (c - d))
        terms.append(math.log1p(math.exp(-z)) if z > -30 else -z + math.log1p(math.exp(z)))
        wins += z > 0
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-9, abs=1e-12)
    assert stats["rewards/accuracies"] == pytest.approx(wins / len(terms))
    assert stats["rewards/chosen"] == pytest.approx((beta * (pc - rc)).mean().item(), abs=1e-9)
    assert stats["rewards/rejected"] == pytest.approx((beta * (pr - rr)).mean().item(), abs=1e-9)
    assert stats["rewards/margins"] == pytest.approx(stats["rewards/chosen"] - stats["rewards/rejected"], abs=1e-9)


@given(logps(), BETAS)
def test_dpo_loss_log2_at_equal_ratios(x, beta):
    """When the policy's log-ratio of chosen to rejected equals the reference's, the loss is log 2."""
    pc, pr, rc, _ = x
    rr = rc - (pc - pr)  # ref_c − ref_r = π_c − π_r
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-9)


@given(logps(), BETAS, st.floats(0.01, 10.0))
def test_dpo_loss_decreases_with_margin(x, beta, delta):
    """Raising the chosen completions' policy log-prob (a larger chosen margin) strictly lowers the loss."""
    pc, pr, rc, rr = x
    a, _ = dpo_loss(pc, pr, rc, rr, beta=beta)
    b, _ = dpo_loss(pc + delta, pr, rc, rr, beta=beta)
    assert b.item() < a.item()


@given(logps(), BETAS)
def test_dpo_gradient_pushes_chosen_up_rejected_down(x, beta):
    """Gradient descent raises log π(chosen) and lowers log π(rejected); the reference gets no gradient."""
    pc, pr, rc, rr = [t.clone().requires_grad_(True) for t in x]
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=beta)
    loss.backward()
    z = beta * ((pc - pr) - (rc - rr)).detach()
    want = -beta * torch.sigmoid(-z) / len(z)  # d/dπ_c of −log σ(z), averaged
    assert torch.allclose(pc.grad, want, rtol=1e-9, atol=1e-15) and torch.allclose(pr.grad, -want, rtol=1e-9, atol=1e-15)
    assert (pc.grad <= 0).all() and (pr.grad >= 0).all()
    assert rc.grad is None and rr.grad is None


def test_dpo_loss_misuse():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        dpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(2), torch.zeros(3))


@given(st.integers(1, 5), st.integers(2, 6), st.data())
def test_preference_pairs(B, G, data):
    """Chosen is the argmax, rejected the argmin of each prompt's rewards; prompts whose rewards all tie are dropped."""
    vals = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=B * G, max_size=B * G))
    r = torch.tensor(vals).view(B, G)
    chosen, rejected, keep = preference_pairs(r)
    for b in range(B):
        row = r[b].tolist()
        assert keep[b].item() == (len(set(row)) > 1)
        assert row[chosen[b]] == max(row) and row[rejected[b]] == min(row)
        if keep[b]:
            assert chosen[b] != rejected[b]
