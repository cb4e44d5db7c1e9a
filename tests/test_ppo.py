"""PPO's maths against naive loops and the published formulas: GAE, whitening, per-token rewards, the clipped losses."""
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import toy_world
from minigrpo import gae
from minigrpo.cli import main
from minigrpo.ppo import (explained_variance, masked_whiten, ppo_policy_loss, ppo_value_loss, token_rewards)

# the end-to-end runs use tiny models: one thread is faster
pytestmark = pytest.mark.usefixtures("one_thread")


@st.composite
def rollouts(draw, holes=True):
    """Random (rewards, values, mask) in float64, N ≤ 5, C ≤ 7; masks right-padded, or arbitrary with `holes`."""
    N, C = draw(st.integers(1, 5)), draw(st.integers(1, 7))

    def mat():
        return torch.tensor(draw(st.lists(st.floats(-3, 3), min_size=N * C, max_size=N * C)), dtype=torch.float64).view(N, C)

    if holes and draw(st.booleans()):
        mask = torch.tensor(draw(st.lists(st.booleans(), min_size=N * C, max_size=N * C))).view(N, C)
    else:  # completions of different lengths, possibly empty (a fully masked row)
        lengths = draw(st.lists(st.integers(0, C), min_size=N, max_size=N))
        mask = torch.arange(C)[None] < torch.tensor(lengths)[:, None]
    return mat(), mat(), mask


GAMMAS = st.floats(0.5, 1.0)
LAMS = st.floats(0.0, 1.0)


def naive_gae(rewards, values, mask, gamma, lam):
    """Row by row over the list of real tokens, Schulman et al. 2016 eq. 16 as written: A_t = Σ_l (γλ)^l δ_{t+l}."""
    N, C = rewards.shape
    adv = [[0.0] * C for _ in range(N)]
    for i in range(N):
        real = [t for t in range(C) if mask[i, t]]
        v = [values[i, t].item() for t in real] + [0.0]  # V = 0 after the episode ends
        deltas = [rewards[i, t].item() + gamma * v[j + 1] - v[j] for j, t in enumerate(real)]
        for j, t in enumerate(real):
            adv[i][t] = sum((gamma * lam) ** l * deltas[j + l] for l in range(len(real) - j))
    return torch.tensor(adv, dtype=torch.float64)


@given(rollouts(), GAMMAS, LAMS)
def test_gae_matches_naive_sum(batch, gamma, lam):
    """GAE's vectorised backward recursion equals the explicit discounted sum of TD residuals, per row."""
    r, v, m = batch
    adv, ret = gae(r, v, m, gamma=gamma, lam=lam)
    assert torch.allclose(adv, naive_gae(r, v, m, gamma, lam), atol=1e-9)
    assert torch.allclose(ret, torch.where(m, adv + v, torch.zeros_like(v)), atol=1e-12)


@given(rollouts(), rollouts(holes=False), GAMMAS, LAMS)
def test_gae_masked_tokens_change_nothing(batch, junk, gamma, lam):
    """Whatever rewards and values masked tokens hold, the advantages and returns are the same, and 0 there."""
    r, v, m = batch
    adv, ret = gae(r, v, m, gamma=gamma, lam=lam)
    noise = torch.randn(r.shape, dtype=r.dtype, generator=torch.Generator().manual_seed(0)) * 100
    adv2, ret2 = gae(torch.where(m, r, noise), torch.where(m, v, -noise), m, gamma=gamma, lam=lam)
    assert torch.equal(adv, adv2) and torch.equal(ret, ret2)
    assert (adv[~m] == 0).all() and (ret[~m] == 0).all()


@given(rollouts(holes=False))
def test_gae_lambda_one_gives_monte_carlo(batch):
    """With λ = 1, γ = 1, advantages are returns − values and returns are the reward-to-go (Monte Carlo)."""
    r, v, m = batch
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    to_go = (r * m).flip(1).cumsum(1).flip(1) * m  # (N, C)
    assert torch.allclose(ret, to_go, atol=1e-9)
    assert torch.allclose(adv, (ret - v) * m, atol=1e-9)


@given(rollouts(holes=False), GAMMAS)
def test_gae_lambda_zero_is_one_step_td(batch, gamma):
    """With λ = 0 each advantage is its own TD residual r_t + γ·V_{t+1} − V_t (V = 0 after the last token)."""
    r, v, m = batch
    adv, _ = gae(r, v, m, gamma=gamma, lam=0.0)
    v_next = torch.cat([v[:, 1:] * m[:, 1:], torch.zeros_like(v[:, :1])], 1)  # (N, C)
    assert torch.allclose(adv, (r + gamma * v_next - v) * m, atol=1e-9)


def test_gae_shape_misuse():
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))


@given(rollouts())
def test_whitening_ignores_masked_tokens(batch):
    """Whitened advantages have mean 0 and (Bessel) variance 1 over real tokens, are 0 on masked ones,
    and do not depend on what masked tokens hold."""
    x, junk, m = batch
    if m.sum() < 2 or x[m].var() < 1e-3:
        return
    w = masked_whiten(x, m)
    assert (w[~m] == 0).all()
    var = x[m].var().item()  # Bessel-corrected, as TRL's masked_var(unbiased=True)
    assert abs(w[m].mean().item()) < 1e-9 and w[m].var().item() == pytest.approx(var / (var + 1e-8), rel=1e-9)
    assert torch.equal(w, masked_whiten(torch.where(m, x, junk * 50), m))


@given(rollouts(), st.floats(0.0, 0.5))
def test_token_rewards_naive(batch, kl_coef):
    """The reward is −β·(logp − ref) at every real token, plus the score at each row's last real token."""
    logp, ref, m = batch
    score = torch.arange(m.shape[0], dtype=torch.float64) + 1.5
    r = token_rewards(score, logp, ref, m, kl_coef)
    for i in range(m.shape[0]):
        real = [t for t in range(m.shape[1]) if m[i, t]]
        for t in range(m.shape[1]):
            want = -kl_coef * (logp[i, t] - ref[i, t]).item() if m[i, t] else 0.0
            if real and t == real[-1]:
                want += score[i].item()
            assert r[i, t].item() == pytest.approx(want, abs=1e-9)


@given(rollouts(), st.floats(0.05, 0.4))
def test_policy_loss_naive(batch, eps):
    """The clipped surrogate equals −min(ρA, clip(ρ, 1±ε)A) averaged over real tokens, computed token by token."""
    logp, adv, m = batch
    old = logp + torch.randn(logp.shape, dtype=logp.dtype, generator=torch.Generator().manual_seed(1)) * 0.3
    loss, _ = ppo_policy_loss(logp, old, adv, m, cliprange=eps)
    terms = []
    for i, t in m.nonzero().tolist():
        rho = math.exp(logp[i, t].item() - old[i, t].item())
        a = adv[i, t].item()
        terms.append(-min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a))
    want = sum(terms) / len(terms) if terms else 0.0
    assert loss.item() == pytest.approx(want, abs=1e-9)


def test_policy_loss_gradient_and_clip():
    """At ratio 1 the gradient is −A/n per token; outside the clip on the side A pushes to, it is 0."""
    logp = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[0.0, 0.0, -0.5, 0.5]], dtype=torch.float64)  # ratios 1, 1, e^.5 > 1.2, e^-.5 < 0.8
    adv = torch.tensor([[1.0, -2.0, 1.0, -1.0]], dtype=torch.float64)
    loss, stats = ppo_policy_loss(logp, old, adv, torch.ones(1, 4, dtype=torch.bool), cliprange=0.2)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, 0.5, 0.0, 0.0]], dtype=torch.float64))
    assert stats["clipfrac"] == 0.5


@given(rollouts(), st.floats(0.05, 0.5))
def test_value_loss_naive(batch, c):
    """½·mean over real tokens of max((V − R)², (clip(V, V_old ± c) − R)²), token by token."""
    v, ret, m = batch
    old = v + torch.randn(v.shape, dtype=v.dtype, generator=torch.Generator().manual_seed(2))
    loss, _ = ppo_value_loss(v, old, ret, m, cliprange_value=c)
    terms = []
    for i, t in m.nonzero().tolist():
        vv, o, R = v[i, t].item(), old[i, t].item(), ret[i, t].item()
        terms.append(max((vv - R) ** 2, (min(max(vv, o - c), o + c) - R) ** 2))
    want = 0.5 * sum(terms) / len(terms) if terms else 0.0
    assert loss.item() == pytest.approx(want, abs=1e-9)


def test_explained_variance():
    """A perfect critic explains all the variance; a constant one none."""
    ret = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    m = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(ret, ret, m) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, 2.0), ret, m) == pytest.approx(0.0)


# ------------------------------------------------------------------ `minigrpo ppo` end to end at toy size


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_world.build(tmp_path_factory.mktemp("ppo"))


def _ppo(toy, out, *extra):
    return main(["ppo", "--policy", str(toy / "policy"), "--reward-model", str(toy / "rm"),
                 "--prompts", str(toy / "world" / "prompts_train.jsonl"), "--out", str(out), "--batch-size", "4",
                 "--minibatches", "2", "--ppo-epochs", "2", "--max-new-tokens", "8", "--max-prompt-len", "64",
                 "--lora-r", "4", "--lr", "1e-2", "--seed", "1", *extra])


def test_ppo_runs_and_saves_peft_adapter(toy, tmp_path):
    """Two PPO steps log their metrics, write cost.json with three models, and save an adapter peft loads."""
    out = tmp_path / "run"
    assert _ppo(toy, out, "--steps", "2") == 0
    rows = toy_world.rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("loss", "pg_loss", "vf_loss", "kl", "reward", "clipfrac", "explained_var", "score/safety", "time_update"):
        assert key in rows[0], key
    cost = json.loads((out / "cost.json").read_text())
    assert cost["completions"] == 8 and len(cost["models_in_memory"]) == 3
    # with G = 1, sampling passes each rollout's T = Σ(P + C) real tokens once; then reference + old values (2T),
    # then 2 epochs × (policy + critic) forward (4T) and backward (4T): forward 7T, backward 4T
    assert cost["backward_tokens"] > 0 and 4 * cost["forward_tokens"] == 7 * cost["backward_tokens"]
    assert (out / "critic" / "value_head.pt").is_file() and (out / "critic" / "adapter" / "adapter_config.json").is_file()
    toy_world.assert_peft_loads(toy / "policy", out / "adapter")


def test_ppo_resume_is_exact(toy, tmp_path):
    """Stopping after step 2 and resuming gives the same steps 3–4, adapter and token counts as one run."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _ppo(toy, full, "--steps", "4", "--save-every", "2") == 0
    assert _ppo(toy, cut, "--steps", "2", "--save-every", "2") == 0
    assert _ppo(toy, cut, "--steps", "4", "--save-every", "2", "--resume") == 0
    a, b = toy_world.rows(full), toy_world.rows(cut)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for k in ("loss", "reward", "vf_loss", "kl", "completion_len"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (ra["step"], k)
    from safetensors.torch import load_file
    wa, wb = load_file(full / "adapter" / "adapter_model.safetensors"), load_file(cut / "adapter" / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    ca, cb = (json.loads((d / "cost.json").read_text()) for d in (full, cut))
    assert (ca["forward_tokens"], ca["backward_tokens"], ca["completions"]) == (cb["forward_tokens"], cb["backward_tokens"], cb["completions"])


def test_ppo_bad_minibatches(toy, tmp_path, capsys):
    """A batch that does not split into minibatches is refused, naming both flags."""
    assert _ppo(toy, tmp_path / "r", "--steps", "1", "--minibatches", "3") == 2
    assert "--minibatches" in capsys.readouterr().err


def test_ppo_keeps_runs_apart(toy, tmp_path, capsys):
    """A fresh ppo into a used --out is refused (its old checkpoint is never resumed); --resume refuses a changed lr."""
    out = tmp_path / "run"
    assert _ppo(toy, out, "--steps", "2", "--save-every", "2") == 0
    before = (out / "metrics.jsonl").read_bytes()
    assert _ppo(toy, out, "--steps", "2") == 2
    assert "already holds" in capsys.readouterr().err and (out / "metrics.jsonl").read_bytes() == before
    assert _ppo(toy, out, "--steps", "3", "--save-every", "2", "--resume", "--lr", "1e-1") == 2
    assert "--lr 0.1 (was" in capsys.readouterr().err
    assert _ppo(toy, out, "--steps", "1", "--overwrite") == 0
    assert [r["step"] for r in toy_world.rows(out)] == [1] and not (out / "adapter-step2").exists()
