"""DPO's maths against the formula computed naively: the loss, its gradient's sign, its stats, the pairs."""
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import toy_world
from minigrpo import dpo_loss
from minigrpo.cli import main
from minigrpo.dpo import preference_pairs

# the end-to-end runs use tiny models: one thread is faster
pytestmark = pytest.mark.usefixtures("one_thread")


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
        z = beta * (a - c) - beta * (b - d)  # eq. 7 as written: β log π/π_ref (y_w) − β log π/π_ref (y_l)
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


# ------------------------------------------------------------------ `minigrpo dpo` end to end at toy size


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_world.build(tmp_path_factory.mktemp("dpo"))


def _dpo(toy, out, *extra):
    return main(["dpo", "--policy", str(toy / "policy"), "--reward-model", str(toy / "rm"),
                 "--prompts", str(toy / "world" / "prompts_train.jsonl"), "--out", str(out), "--group-size", "4",
                 "--sample-batch", "6", "--batch-size", "2", "--max-new-tokens", "8", "--max-prompt-len", "64",
                 "--lora-r", "4", "--lr", "1e-2", "--seed", "1", *extra])


def test_dpo_runs_and_saves_peft_adapter(toy, tmp_path):
    """DPO samples G per prompt, trains on the pairs, counts its sampling, and saves an adapter peft loads."""
    out = tmp_path / "run"
    assert _dpo(toy, out, "--epochs", "2") == 0
    cost = json.loads((out / "cost.json").read_text())
    rows = toy_world.rows(out)
    assert cost["completions"] == 12 * 4 and cost["steps"] == len(rows) == 2 * (cost["pairs"] // 2)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # a fresh LoRA is the reference
    for key in ("rewards/accuracies", "rewards/margins", "logps/chosen", "grad_norm"):
        assert key in rows[0], key
    assert cost["backward_tokens"] > 0 and len(cost["models_in_memory"]) == 2
    toy_world.assert_peft_loads(toy / "policy", out / "adapter")


def test_dpo_resume_is_exact(toy, tmp_path):
    """A 1-epoch run resumed to 2 epochs (pairs read back, not resampled) equals one uninterrupted 2-epoch run."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _dpo(toy, full, "--epochs", "2", "--save-every", "100") == 0
    assert _dpo(toy, cut, "--epochs", "1", "--save-every", "100") == 0  # checkpoints at its last step, half way
    half = len(toy_world.rows(cut))
    assert _dpo(toy, cut, "--epochs", "2", "--save-every", "100", "--resume") == 0
    a, b = toy_world.rows(full), toy_world.rows(cut)
    assert half >= 1 and [r["step"] for r in b] == list(range(1, 2 * half + 1)) == [r["step"] for r in a]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5, abs=1e-7)
    from safetensors.torch import load_file
    wa, wb = load_file(full / "adapter" / "adapter_model.safetensors"), load_file(cut / "adapter" / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    ca, cb = (json.loads((d / "cost.json").read_text()) for d in (full, cut))
    assert (ca["forward_tokens"], ca["backward_tokens"], ca["completions"]) == (cb["forward_tokens"], cb["backward_tokens"], cb["completions"])


def test_dpo_keeps_runs_apart(toy, tmp_path, capsys):
    """A fresh dpo into a used --out is refused, and --resume refuses a changed setting (here beta)."""
    out = tmp_path / "run"
    assert _dpo(toy, out, "--epochs", "1") == 0
    assert _dpo(toy, out, "--epochs", "1") == 2
    assert "already holds" in capsys.readouterr().err
    assert _dpo(toy, out, "--epochs", "2", "--resume", "--beta", "0.5") == 2
    assert "--beta 0.5 (was 0.1)" in capsys.readouterr().err
