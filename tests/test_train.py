"""`minigrpo train` end to end at toy size: a random tiny Qwen2 saved by transformers, a tiny reward
model trained by `minigrpo train-rm`, world prompts; plus exact resume and the fail-fast errors."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import toy_world
from minigrpo import InputError
from minigrpo.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """World prompts, a tokenizer, a transformers-saved random Qwen2 and a 1-epoch tiny reward model."""
    return toy_world.build(tmp_path_factory.mktemp("train"))


def _train(setup, out, *extra):
    args = ["train", "--policy", str(setup / "policy"), "--reward-model", str(setup / "rm"),
            "--prompts", str(setup / "world" / "prompts_train.jsonl"), "--out", str(out),
            "--batch-size", "8", "--group-size", "4", "--max-new-tokens", "8", "--max-prompt-len", "64",
            "--lora-r", "4", "--lr", "1e-2", "--seed", "1", *extra]
    return main(args)


def test_two_steps(setup, tmp_path):
    """Two steps run, log every metric the issue lists, and save a PEFT-layout adapter."""
    out = tmp_path / "run"
    assert _train(setup, out, "--steps", "2") == 0
    rows = toy_world.rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ["loss", "reward", "frac_zero_std", "completion_len", "frac_truncated", "time_sample", "time_score",
                "time_update", "loss/clip_total", "loss/ratio_mean", "reward_mean/safety", "frac_zero_std/safety",
                "score/politeness", "loss/kl", "adv_std", "adv_min", "adv_max", "rm_truncated"]:
        assert key in rows[0], key
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_release_memory_changes_nothing_but_the_allocator(setup, tmp_path):
    """`--release-memory` (a process-wide glibc setting, so run in a fresh process) trains the same
    adapter bit for bit as a run without it, and is recorded in train_config.json."""
    from safetensors.torch import load_file
    plain, released = tmp_path / "plain", tmp_path / "released"
    assert _train(setup, plain, "--steps", "2") == 0
    args = ["train", "--policy", str(setup / "policy"), "--reward-model", str(setup / "rm"),
            "--prompts", str(setup / "world" / "prompts_train.jsonl"), "--out", str(released),
            "--batch-size", "8", "--group-size", "4", "--max-new-tokens", "8", "--max-prompt-len", "64",
            "--lora-r", "4", "--lr", "1e-2", "--seed", "1", "--steps", "2", "--release-memory"]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "minigrpo.cli", *args], capture_output=True, text=True, cwd=root,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = load_file(plain / "adapter" / "adapter_model.safetensors")
    b = load_file(released / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((released / "train_config.json").read_text())["release_memory"] is True


def test_sample_merged_trains_and_cannot_change_on_resume(setup, tmp_path, capsys):
    """`--sample-merged` samples from merged weights, trains the adapter as usual, and, since it changes
    the samples, is refused as a change on --resume."""
    out = tmp_path / "run"
    assert _train(setup, out, "--steps", "2", "--save-every", "1", "--sample-merged") == 0
    rows = toy_world.rows(out)
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["grad_norm"] > 0
    assert json.loads((out / "train_config.json").read_text())["sample_merged"] is True
    assert _train(setup, out, "--steps", "3", "--resume") == 2
    assert "--sample-merged False (was True)" in capsys.readouterr().err


def test_resume_is_exact(setup, tmp_path):
    """Stopping after step 2 and resuming gives the same steps 3–4 and the same adapter as one run."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _train(setup, full, "--steps", "4", "--save-every", "2") == 0
    assert _train(setup, cut, "--steps", "2", "--save-every", "2") == 0
    assert _train(setup, cut, "--steps", "4", "--save-every", "2", "--resume") == 0
    a, b = toy_world.rows(full), toy_world.rows(cut)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for k in ("loss", "reward", "completion_len", "grad_norm"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (ra["step"], k)
    from safetensors.torch import load_file
    wa = load_file(full / "adapter" / "adapter_model.safetensors")
    wb = load_file(cut / "adapter" / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_probes_watch_without_changing_the_run(setup, tmp_path):
    """--probe: rows at step 0, every K steps and the last, per prompt of each file, scored by the reward model;
    the adapter is bit-identical to a run without probes, and a resumed run writes the same probes."""
    w = setup / "world"
    probe = ["--probe", f"{w / 'prompts_test.jsonl'},{w / 'prompts_ood.jsonl'}", "--probe-every", "2"]
    plain, probed, cut = tmp_path / "plain", tmp_path / "probed", tmp_path / "cut"
    assert _train(setup, plain, "--steps", "3") == 0
    assert _train(setup, probed, "--steps", "3", *probe) == 0
    a = (plain / "adapter" / "adapter_model.safetensors").read_bytes()
    assert (probed / "adapter" / "adapter_model.safetensors").read_bytes() == a
    rows = [json.loads(line) for line in (probed / "probes.jsonl").read_text().splitlines()]
    n_test = len((w / "prompts_test.jsonl").read_text().splitlines())
    n_ood = len((w / "prompts_ood.jsonl").read_text().splitlines())
    assert [r["step"] for r in rows] == [0] * (n_test + n_ood) + [2] * (n_test + n_ood) + [3] * (n_test + n_ood)
    assert [r["split"] for r in rows[:n_test + n_ood]] == ["test"] * n_test + ["ood"] * n_ood
    for r in rows:
        assert {"prompt", "kind", "topic", "response", "rm/safety"} <= set(r) and 0 <= r["rm/safety"] <= 1
    # a resumed run: probes after its checkpoint are dropped and taken again, the file ends up the same
    assert _train(setup, cut, "--steps", "2", "--save-every", "1", *probe) == 0
    with open(cut / "probes.jsonl", "a") as f:  # a probe of step 3 written just before a kill
        f.write(json.dumps({**rows[-1], "step": 3}) + "\n")
    assert _train(setup, cut, "--steps", "3", "--save-every", "1", "--resume", *probe) == 0
    assert (cut / "probes.jsonl").read_text() == (probed / "probes.jsonl").read_text()


def test_batch_not_divisible_into_groups(setup, tmp_path):
    with pytest.raises(InputError, match="multiple of --group-size"):
        from minigrpo.train import TrainConfig, train
        train(TrainConfig(policy=str(setup / "policy"), reward_model=str(setup / "rm"),
                          prompts=str(setup / "world" / "prompts_train.jsonl"), out=str(tmp_path), batch_size=10))


def test_no_trainable_parameters(setup, tmp_path, capsys):
    """LoRA targets that match nothing stop the run with a message naming them."""
    assert _train(setup, tmp_path / "r", "--steps", "1", "--lora-targets", "nonexistent_proj") == 2
    assert "nonexistent_proj" in capsys.readouterr().err


def test_prompts_too_long(setup, tmp_path, capsys):
    """Prompts over --max-prompt-len are counted and reported, never cut."""
    assert _train(setup, tmp_path / "r", "--steps", "1", "--max-prompt-len", "5") == 2
    err = capsys.readouterr().err
    assert "exceed --max-prompt-len=5" in err and "prompts_train.jsonl" in err


def test_nan_reward_stops_with_step(setup, tmp_path, monkeypatch, capsys):
    """A NaN reward stops training, naming the step and the statistic: one line, exit 1 (no traceback)."""
    import minigrpo.reward_model as rm_mod
    original = rm_mod.RewardModel.score
    monkeypatch.setattr(rm_mod.RewardModel, "score", lambda self, *a, **k: original(self, *a, **k) * float("nan"))
    assert _train(setup, tmp_path / "r", "--steps", "1") == 1
    assert "step 1: rewards is not finite" in capsys.readouterr().err


def test_csv_prompts(setup, tmp_path):
    """Prompts come from a CSV column too (AdvBench's `goal`, XSTest's `prompt`)."""
    rows = [json.loads(line) for line in (setup / "world" / "prompts_train.jsonl").read_text().splitlines()]
    with open(tmp_path / "p.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["goal", "target"])
        w.writerows([[r["prompt"], "x"] for r in rows])
    args = ["train", "--policy", str(setup / "policy"), "--reward-model", str(setup / "rm"),
            "--prompts", str(tmp_path / "p.csv"), "--prompt-column", "goal", "--out", str(tmp_path / "r"),
            "--steps", "1", "--batch-size", "8", "--max-new-tokens", "4", "--lora-r", "2"]
    assert main(args) == 0
    assert len(toy_world.rows(tmp_path / "r")) == 1


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_logged_loss_statistics_cover_the_whole_step(setup, tmp_path, loss_type):
    """With micro-batches and inner iterations, the logged loss and loss/* are those of the whole step.

    Token statistics are token-weighted over every micro-batch and inner iteration, so splitting
    the batch into micro-batches (which adds up to the same gradients for grpo and dapo) must log
    the same numbers, and loss/tokens is the completion tokens of the whole batch.
    """
    runs = {}
    for mb in ("8", "2"):
        out = tmp_path / f"mb{mb}"
        assert _train(setup, out, "--steps", "1", "--micro-batch", mb, "--inner-iters", "3",
                      "--loss-type", loss_type, "--lr", "5e-2") == 0
        runs[mb] = toy_world.rows(out)[0]
    whole, split = runs["8"], runs["2"]
    assert split["loss/tokens"] == pytest.approx(whole["completion_len"] * 8)
    assert split["loss/clip_total"] > 0  # inner iterations 2 and 3 move the ratio off 1
    for k in ("loss", "loss/kl", "loss/clip_total", "loss/clip_low", "loss/clip_high", "loss/ratio_mean",
              "loss/adv_mean", "loss/tokens"):
        assert split[k] == pytest.approx(whole[k], rel=1e-4, abs=1e-6), k
