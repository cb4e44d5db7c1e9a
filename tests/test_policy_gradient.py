"""REINFORCE (pg_loss) and GAE: naive-loop references and the invariants, graded through tests/adapters.py.

The package trains with grpo_loss, so pg_loss's reference is walkthrough/solutions/pg_loss.py; gae's
is minigrpo.gae (the PPO chapter's branch; these tests skip until it is merged).
"""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import adapters
from minigrpo.loss import grpo_loss


@st.composite
def rollouts(draw, prefix_mask=False):
    """logp (N, C) in float64, advantages (N,), mask (N, C): any pattern, or ones then zeros (a real completion)."""
    N, C = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    logp = torch.tensor(draw(st.lists(st.floats(-6, 0), min_size=N * C, max_size=N * C)), dtype=torch.float64)
    adv = torch.tensor(draw(st.lists(st.floats(-3, 3), min_size=N, max_size=N)), dtype=torch.float64)
    if prefix_mask:
        lengths = draw(st.lists(st.integers(0, C), min_size=N, max_size=N))
        mask = torch.tensor([[t < n for t in range(C)] for n in lengths])
    else:
        mask = torch.tensor(draw(st.lists(st.booleans(), min_size=N * C, max_size=N * C))).view(N, C)
    return logp.view(N, C), adv, mask


# ------------------------------------------------------------------ pg_loss (ch. 3)
@pytest.mark.exercise("pg_loss")
@given(rollouts())
def test_pg_loss_matches_naive_loop(batch):
    """pg_loss = −(1/N) Σ_i A_i Σ_t mask·logp, against a Python loop."""
    logp, adv, mask = batch
    N, C = logp.shape
    want = -sum(adv[i].item() * sum(logp[i, t].item() for t in range(C) if mask[i, t]) for i in range(N)) / N
    assert adapters.pg_loss(logp, adv, mask).item() == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.exercise("pg_loss")
@given(rollouts())
def test_pg_gradient_is_minus_advantage_over_n(batch):
    """∂loss/∂logp[i, t] = −A_i·mask[i, t]/N, and no gradient reaches the advantages."""
    logp, adv, mask = batch
    logp, adv = logp.clone().requires_grad_(), adv.clone().requires_grad_()
    adapters.pg_loss(logp, adv, mask).backward()
    want = -adv.detach()[:, None] * mask / logp.shape[0]  # (N, C)
    torch.testing.assert_close(logp.grad, want, rtol=1e-12, atol=1e-15)
    assert adv.grad is None or not adv.grad.any()


@pytest.mark.exercise("pg_loss")
@given(rollouts(), st.data())
def test_pg_loss_ignores_masked_entries(batch, data):
    """Whatever masked log-probs hold (even NaN or inf), the loss and its gradient are unchanged."""
    logp, adv, mask = batch
    junk = logp.clone()
    n = int((~mask).sum())
    junk[~mask] = torch.tensor(data.draw(st.lists(st.floats(allow_nan=True), min_size=n, max_size=n)),
                               dtype=torch.float64)
    out = []
    for x in (logp, junk):
        x = x.clone().requires_grad_()
        loss = adapters.pg_loss(x, adv, mask)
        loss.backward()
        out.append((loss, x.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@pytest.mark.exercise("pg_loss")
@given(rollouts())
def test_pg_gradient_is_grpo_at_ratio_one(batch):
    """At ratio 1, grpo_loss's gradient (dr_grpo with L = 1, no clip active) is exactly REINFORCE's."""
    logp, adv, mask = batch
    a, b = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    adapters.pg_loss(a, adv, mask).backward()
    grpo_loss(b, b.detach(), adv, mask, loss_type="dr_grpo", max_completion_length=1)[0].backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ gae (ch. 5)
def naive_gae(rewards, values, mask, gamma, lam):
    """Schulman et al. 2016 eq. 16 over each row's real tokens, backwards; masked tokens 0."""
    N, C = len(rewards), len(rewards[0])
    adv, ret = [[0.0] * C for _ in range(N)], [[0.0] * C for _ in range(N)]
    for i in range(N):
        real = [t for t in range(C) if mask[i][t]]
        next_v = next_a = 0.0
        for t in reversed(real):
            delta = rewards[i][t] + gamma * next_v - values[i][t]
            next_a = delta + gamma * lam * next_a
            next_v = values[i][t]
            adv[i][t], ret[i][t] = next_a, next_a + values[i][t]
    return adv, ret


@st.composite
def critic_batches(draw):
    """rewards, values (N, C) float64 and a mask: real tokens first, or any pattern (holes pass the carry on)."""
    _, _, mask = draw(rollouts(prefix_mask=draw(st.booleans())))
    N, C = mask.shape
    rewards = torch.tensor(draw(st.lists(st.floats(-2, 2), min_size=N * C, max_size=N * C)), dtype=torch.float64)
    values = torch.tensor(draw(st.lists(st.floats(-2, 2), min_size=N * C, max_size=N * C)), dtype=torch.float64)
    return rewards.view(N, C), values.view(N, C), mask


@pytest.mark.exercise("gae")
@given(critic_batches(), st.floats(0.5, 1), st.floats(0, 1))
def test_gae_matches_naive_loop(batch, gamma, lam):
    """Advantages and returns equal eq. 16's backward recursion over each row's real tokens (masked tokens 0)."""
    rewards, values, mask = batch
    adv, ret = adapters.gae(rewards, values, mask, gamma, lam)
    want_a, want_r = naive_gae(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(want_a, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ret, torch.tensor(want_r, dtype=torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.exercise("gae")
@given(critic_batches(), st.floats(0.5, 1))
def test_gae_lambda_one_is_reward_to_go_minus_value(batch, gamma):
    """With λ = 1, A_t is the discounted reward-to-go minus V_t: the Monte-Carlo advantage."""
    rewards, values, mask = batch
    adv, _ = adapters.gae(rewards, values, mask, gamma, 1.0)
    for i in range(mask.shape[0]):
        real = [t for t in range(mask.shape[1]) if mask[i, t]]
        for k, t in enumerate(real):
            togo = sum(gamma ** j * rewards[i, s].item() for j, s in enumerate(real[k:]))
            assert adv[i, t].item() == pytest.approx(togo - values[i, t].item(), rel=1e-9, abs=1e-9)


@pytest.mark.exercise("gae")
@given(critic_batches(), st.floats(0.5, 1))
def test_gae_lambda_zero_is_the_td_error(batch, gamma):
    """With λ = 0, A_t is the one-step TD error r_t + γ·V_next − V_t (V_next = 0 after the last real token)."""
    rewards, values, mask = batch
    adv, ret = adapters.gae(rewards, values, mask, gamma, 0.0)
    for i in range(mask.shape[0]):
        real = [t for t in range(mask.shape[1]) if mask[i, t]]
        for k, t in enumerate(real):
            v_next = values[i, real[k + 1]].item() if k + 1 < len(real) else 0.0
            want = rewards[i, t].item() + gamma * v_next - values[i, t].item()
            assert adv[i, t].item() == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert torch.equal(ret[~mask], torch.zeros_like(ret[~mask])) and torch.equal(adv[~mask], ret[~mask])


@pytest.mark.exercise("gae")
@given(critic_batches(), st.floats(0.5, 1), st.floats(0, 1))
def test_gae_with_a_perfect_critic_is_zero(batch, gamma, lam):
    """If V_t is the true discounted reward-to-go, every δ_t, hence every advantage, is 0 (up to rounding)."""
    rewards, _, mask = batch
    values = torch.zeros_like(rewards)
    for i in range(mask.shape[0]):
        real = [t for t in range(mask.shape[1]) if mask[i, t]]
        for k, t in enumerate(real):
            values[i, t] = sum(gamma ** j * rewards[i, s].item() for j, s in enumerate(real[k:]))
    adv, ret = adapters.gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, torch.zeros_like(adv), rtol=0, atol=1e-9)
    assert math.isfinite(ret.sum().item())
