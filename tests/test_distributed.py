"""Data-parallel `minigrpo train` and `minigrpo ppo` under torchrun (2 gloo ranks on CPU) equal one process.

Each torchrun launch costs a few seconds of imports per rank, so runs are shared between tests.
Settings that make "equal to 1e-5" a fair test of the code rather than of float luck:
  * lr 3e-4: AdamW divides by √v + eps, so a weight whose gradient is near 0 moves by up to
    lr·δg/eps for a rounding difference δg; at lr 1e-2 even one process with another
    --micro-batch drifts by 2e-5 in three steps. The rounding differences between K = 1 and K = 2
    are real (other padding, another summation order), so the tolerance must absorb them.
  * a random reward model (`spread_reward_model`): the 1-epoch toy one scores gibberish within
    1e-4 of a constant, and an advantage divides by that spread, which turns 6e-8 of rounding in
    the scores into 1e-3 in the advantages.
The logged loss and grad_norm are compared too: AdamW is blind to a gradient's scale, so a rank
that averaged instead of summed would pass an adapter-only check.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import toy_world
from checkpoints import tiny_qwen_dir
from minigrpo import generate, load_policy
from minigrpo.cli import main
from minigrpo.reward_model import load_reward_model, save_reward_model
from minigrpo.train import micro_batches, weight

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
METRICS = ("loss", "grad_norm", "reward", "completion_len", "adv_std", "lambda", "loss/tokens", "loss/clip_total",
           "pg_loss", "vf_loss", "kl", "explained_var", "clipfrac", "value_mean")


def spread_reward_model(d):
    """Replace d/rm with a random one (weights N(0, 0.3²), norms kept) whose scores of gibberish spread over ~0.1."""
    rm = load_reward_model(d / "rm")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in rm.named_parameters():
            if "norm" not in name.lower():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    save_reward_model(rm, d / "rm_random")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = toy_world.build(tmp_path_factory.mktemp("ddp"))
    spread_reward_model(d)
    return d


def _args(toy, stage, out, *extra):
    return [stage, "--policy", str(toy / "policy"), "--reward-model", str(toy / "rm_random"),
            "--prompts", str(toy / "world" / "prompts_train.jsonl"), "--out", str(out), "--max-new-tokens", "8",
            "--max-prompt-len", "64", "--lora-r", "4", "--lr", "3e-4", "--seed", "1", "--threads", "1", *extra]


def torchrun(args, script=("-m", "minigrpo.cli"), timeout=120):
    """`torchrun --standalone --nproc_per_node 2` of the command, this checkout first on the path; the finished process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MINIGRPO_DIST_TIMEOUT_S": "60", "PYTHONFAULTHANDLER": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *script, *args], env=env, capture_output=True, text=True, timeout=timeout)


def assert_same_run(one, two, adapter="adapter", steps=None):
    """The adapters agree to 1e-5 and the logged metrics of every step (or the first `steps`) to rounding."""
    a = load_file(one / adapter / "adapter_model.safetensors")
    b = load_file(two / adapter / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max(t.abs().max().item() for k, t in a.items() if "lora_B" in k) > 1e-4  # training moved it: the check bites
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-5), (k, (a[k] - b[k]).abs().max().item())
    ra, rb = toy_world.rows(one)[:steps], toy_world.rows(two)[:steps]
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for k in METRICS:
            if k in x:
                assert y[k] == pytest.approx(x[k], rel=1e-4, abs=1e-5), (x["step"], k)  # losses are sums that cancel


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-12000:]


# ------------------------------------------------------------------ the pieces, without processes


def test_sampler_offset_draws_the_rows_of_the_whole_call(tmp_path):
    """In fp64, sampling prompts [2, 4) of a batch with first_prompt=2 gives exactly those rows of the whole call."""
    path, _ = tiny_qwen_dir(tmp_path / "m", seed=5)
    model, tok = load_policy(path, dtype="float32")
    model.double()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 9, 3, 7)]
    kw = dict(num_samples=2, max_new_tokens=10, seed=4, eos_token_ids=list(range(3, 40)))
    whole = generate(model, tok, prompts, **kw)
    for lo in (0, 2):
        part = generate(model, tok, prompts[lo:lo + 2], first_prompt=lo, **kw)
        C = part.completion_ids.shape[1]
        assert torch.equal(whole.completion_ids[2 * lo:2 * lo + 4, :C], part.completion_ids)
        assert not whole.completion_mask[2 * lo:2 * lo + 4, C:].any()
    unshifted = generate(model, tok, prompts[2:], **kw)  # without the offset: prompt 0's uniforms, other samples
    assert not torch.equal(unshifted.completion_ids[:, :3], whole.completion_ids[4:, :3])


@pytest.mark.parametrize("N,K,mb", [(8, 2, 8), (8, 2, 6), (8, 2, 2), (12, 3, 5), (12, 4, 12)])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_rank_pieces_add_up_to_the_micro_batches(N, K, mb, loss_type):
    """The ranks' pieces tile the batch inside the micro-batches, and their weights add up to one process's."""
    lengths = torch.arange(N) % 5 + 1  # (N,) tokens per row
    whole = {(s, min(s + mb, N)): weight(loss_type, s, min(s + mb, N), mb, lengths) for s in range(0, N, mb)}
    assert [(s, e) for s, e in micro_batches(0, N, mb)] == list(whole)  # one process: its micro-batches
    got = dict.fromkeys(whole, 0.0)
    for r in range(K):
        first = r * N // K
        for s, e in micro_batches(first, N // K, mb):
            m0 = (first + s) // mb * mb
            assert first + e <= min(m0 + mb, N)  # never straddles a micro-batch
            got[(m0, min(m0 + mb, N))] += weight(loss_type, first + s, first + e, mb, lengths)
    assert got == pytest.approx(whole, rel=1e-12)


def test_one_process_stages_refuse_torchrun(toy, tmp_path, monkeypatch, capsys):
    """A stage that is not data-parallel, started by torchrun with 2 ranks, stops with one line instead of racing."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["dpo", "--policy", str(toy / "policy"), "--reward-model", str(toy / "rm"), "--prompts",
                 str(toy / "world" / "prompts_train.jsonl"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "minigrpo dpo (rank 1 of 2): error: runs in one process" in err and not (tmp_path / "r").exists()


# ------------------------------------------------------------------ torchrun, 2 ranks, against one process

TRAIN = {"grpo": ("--scale", "batch", "--safety-threshold", "0.9", "--beta", "0.05"),  # global std, λ; KL path
         "dapo": ("--loss-type", "dapo", "--inner-iters", "2", "--micro-batch", "2"),
         "bnpo": ("--loss-type", "bnpo", "--micro-batch", "6")}  # a micro-batch straddles the ranks


@pytest.mark.parametrize("loss_type", sorted(TRAIN))
def test_train_two_ranks_equal_one_process(toy, tmp_path, loss_type):
    """GRPO on 2 ranks (each B/2 prompts, gradients summed) gives one process's adapter and metrics, 3 steps.

    For dapo the 2-rank run stops at step 2 and a 2-rank --resume finishes it: a resumed run equals
    the uninterrupted one (a copy of its checkpoint resumed by one process too: the world size is free).
    """
    flags = ("--batch-size", "8", "--group-size", "2", *TRAIN[loss_type])
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_args(toy, "train", one, "--steps", "3", "--save-every", "2", *flags)) == 0
    if loss_type != "dapo":
        _ok(torchrun(_args(toy, "train", two, "--steps", "3", "--save-every", "2", *flags)))
        assert_same_run(one, two)
        return
    _ok(torchrun(_args(toy, "train", two, "--steps", "2", "--save-every", "2", *flags)))
    assert_same_run(one, two, adapter="adapter-step2", steps=2)
    shutil.copytree(two, tmp_path / "two_then_one")
    _ok(torchrun(_args(toy, "train", two, "--steps", "3", "--save-every", "2", "--resume", *flags)))
    assert_same_run(one, two)
    assert main(_args(toy, "train", tmp_path / "two_then_one", "--steps", "3", "--save-every", "2", "--resume",
                      *flags)) == 0
    assert_same_run(one, tmp_path / "two_then_one")


def test_ppo_two_ranks_equal_one_process(toy, tmp_path):
    """PPO on 2 ranks (rollouts split, whitening and minibatch token means global, gradients summed) equals one process."""
    flags = ("--steps", "3", "--batch-size", "4", "--minibatches", "2", "--ppo-epochs", "2")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_args(toy, "ppo", one, *flags)) == 0
    _ok(torchrun(_args(toy, "ppo", two, *flags)))
    assert_same_run(one, two)
    a, b = (load_file(d / "critic" / "adapter" / "adapter_model.safetensors") for d in (one, two))
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)  # the critic's gradients are summed too
    ca, cb = (json.loads((d / "cost.json").read_text()) for d in (one, two))
    assert (ca["completions"], ca["forward_tokens"], ca["backward_tokens"]) == (cb["completions"], cb["forward_tokens"],
                                                                                cb["backward_tokens"])


def test_batch_must_split_over_the_ranks(toy, tmp_path):
    """3 prompts per step on 2 ranks: every rank stops with one line naming the flags, nothing written."""
    proc = torchrun(_args(toy, "train", tmp_path / "r", "--steps", "1", "--batch-size", "6", "--group-size", "2"))
    assert proc.returncode != 0
    for r in (0, 1):
        assert (f"minigrpo train (rank {r} of 2): error: --batch-size 6 / --group-size 2 = 3 prompts per step do not "
                "split over 2 ranks") in proc.stderr
    assert not (tmp_path / "r").exists()


FAIL_ON_RANK_1 = """
import os, sys
import minigrpo.reward_model as rm
score = rm.RewardModel.score
if os.environ["RANK"] == "1":  # only this rank's reward model returns NaN
    rm.RewardModel.score = lambda self, *a, **k: score(self, *a, **k) * float("nan")
from minigrpo.cli import main
sys.exit(main())
"""


def test_a_failing_rank_stops_the_others(toy, tmp_path):
    """Rank 1 meets a NaN reward: it says so in one line, rank 0 stops too, torchrun exits non-zero, no hang."""
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(FAIL_ON_RANK_1)
    proc = torchrun(_args(toy, "train", tmp_path / "r", "--steps", "2", "--batch-size", "8", "--group-size", "2"),
                    script=(str(script),), timeout=90)
    assert proc.returncode != 0
    assert "minigrpo train (rank 1 of 2): error: step 1: rewards is not finite" in proc.stderr
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
