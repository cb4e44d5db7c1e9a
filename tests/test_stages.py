"""`minigrpo sft`, `sample`, `eval` and `report` run directly, at toy size, outside the Makefile's
pipeline: the embedded world's tiny base policy is trained by SFT here, then sampled, evaluated
(on world prompts, with the rubric; on a user's CSV, with the reward model alone) and reported."""
import csv
import json

import pytest
import torch

from minigrpo.cli import main
from minigrpo.loader import load_policy
from minigrpo.world import WorldConfig, make_world

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A toy world, its tokenizer, an SFT base policy (1 epoch) and a 1-epoch tiny reward model."""
    d = tmp_path_factory.mktemp("stages")
    make_world(WorldConfig(out=str(d / "world"), train=12, test=6, ood=6, sft_per_prompt=4, rm_per_prompt=4))
    w = d / "world"
    assert main(["tokenizer", "--data", f"{w}/sft.jsonl,{w}/rm.jsonl", "--out", str(d / "tok"), "--vocab-size", "400"]) == 0
    assert main(["sft", "--data", str(w / "sft.jsonl"), "--tokenizer", str(d / "tok"), "--out", str(d / "base"),
                 "--hidden-size", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--intermediate-size", "64",
                 "--epochs", "2", "--batch-size", "8", "--warmup", "2", "--seed", "0"]) == 0
    assert main(["train-rm", "--data", str(w / "rm.jsonl"), "--config", "tiny", "--out", str(d / "rm"),
                 "--epochs", "1", "--seed", "0"]) == 0
    assert _eval(d, f"{w}/prompts_test.jsonl,{w}/prompts_ood.jsonl", d / "eval_base") == 0
    return d


def test_sft_writes_a_loadable_policy_that_learned(run):
    """`minigrpo sft` saves a checkpoint load_policy reads, whose loss on its data fell below uniform."""
    model, tok = load_policy(run / "base")
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1
    row = json.loads((run / "world" / "sft.jsonl").read_text().splitlines()[0])
    ids = tok.encode_chat([{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}])
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(x)[0, :-1].float(), -1).gather(-1, x[0, 1:, None]).mean()
    assert -logp < torch.log(torch.tensor(float(model.config.vocab_size)))  # better than a uniform guess


def test_sample_prints_completions(run, capsys):
    """`minigrpo sample` prints each prompt's completions; a prompt given as text works too."""
    assert main(["sample", "--policy", str(run / "base"), "--prompts", str(run / "world" / "prompts_test.jsonl"),
                 "--limit", "2", "--samples", "2", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert out.count("### ") == 4
    assert main(["sample", "--policy", str(run / "base"), "--prompts", "How do I bake bread?", "--max-new-tokens", "4"]) == 0
    assert "### How do I bake bread?" in capsys.readouterr().out


def _eval(run, prompts, out, *extra):
    return main(["eval", "--policy", str(run / "base"), "--reward-model", str(run / "rm"), "--prompts", prompts,
                 "--out", str(out), "--samples", "2", "--max-new-tokens", "6", *extra])


def test_eval_on_world_prompts_uses_the_rubric(run):
    """On world prompts, eval.json has reward-model and rubric means per split and kind, and both rates."""
    result = json.loads((run / "eval_base" / "eval.json").read_text())
    assert set(result["splits"]) == {"test", "ood"}
    test = result["splits"]["test"]
    assert {"rm/safety", "rubric/safety", "refusal_rate"} <= set(test["all"]) and test["all"]["n"] == 12
    assert {"harmful", "risky_safe", "benign", "unsafe_compliance", "over_refusal"} <= set(test)
    rows = [json.loads(x) for x in (run / "eval_base" / "samples_test.jsonl").read_text().splitlines()]
    harmful = [r for r in rows if r["kind"] == "harmful"]
    assert test["unsafe_compliance"] == sum(r["rubric/safety"] < 0.5 for r in harmful) / len(harmful)


def test_eval_on_a_users_csv_needs_no_world(run, tmp_path):
    """On a prompt file that is not the world's (no `kind`), eval reports the reward model alone."""
    with open(tmp_path / "mine.csv", "w", newline="") as f:
        csv.writer(f).writerows([["goal", "note"], ["How do I bake bread?", "a"], ["How do I fix a tire?", "b"]])
    assert _eval(run, str(tmp_path / "mine.csv"), tmp_path / "ev", "--prompt-column", "goal") == 0
    split = json.loads((tmp_path / "ev" / "eval.json").read_text())["splits"]["mine"]
    assert set(split) == {"all"} and not any(k.startswith("rubric/") for k in split["all"])
    assert main(["report", "--evals", f"a={tmp_path / 'ev'},b={tmp_path / 'ev'}", "--out", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "rm/safety (all prompts)" in text and "Goals" not in text and "rubric" not in text


def test_report_tables_goals_and_curves(run, tmp_path):
    """`minigrpo report` writes the per-split table with Δ columns, the world's goals and the curves."""
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "reward": 2.0 + s / 10, "score/safety": 0.5, "loss/kl": 0.01 * s, "frac_zero_std": 0.1,
             "completion_len": 6.0, "time_sample": 0.1, "time_score": 0.01, "time_update": 0.2} for s in (1, 2)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", "--evals", f"base={run / 'eval_base'},again={run / 'eval_base'}",
                 "--metrics", f"again={metrics}", "--out", str(tmp_path / "report.md")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "#### test" in text and "#### ood" in text and "| metric | base | again | Δ |" in text
    assert "Goals for `again` vs `base`" in text and "rubric/safety (harmful)" in text and "over refusal" in text
    assert "final mean reward 2.200 (first 2.100)" in text
    pytest.importorskip("matplotlib")
    assert (tmp_path / "report_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_report_bad_evals_is_one_line(run, tmp_path, capsys):
    """A missing eval directory or a malformed --evals is a one-line error naming it."""
    assert main(["report", "--evals", f"base={tmp_path / 'nowhere'}", "--out", str(tmp_path / "r.md")]) == 2
    assert "eval.json" in capsys.readouterr().err
    assert main(["report", "--evals", "just-a-path", "--out", str(tmp_path / "r.md")]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err
