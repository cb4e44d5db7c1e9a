"""The embedded world: determinism, disjoint splits, the base policy's mix, RM labels, the style table."""
import json
import os
import re
import subprocess
import sys

import pytest

from minigrpo.world import generator as world, lexicon, rubric
from minigrpo.cli import main
from minigrpo.errors import InputError
from minigrpo.files import read_json, read_jsonl
from minigrpo.world import WorldConfig, make_world

SMALL = dict(train=60, test=15, ood=15, sft_per_prompt=2, rm_per_prompt=3)
FILES = ("prompts_train.jsonl", "prompts_test.jsonl", "prompts_ood.jsonl", "prompts_multiturn.jsonl", "sft.jsonl", "rm.jsonl",
         "world.json")


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A mid-sized world (half the default prompts) and its rows."""
    out = tmp_path_factory.mktemp("world") / "w"
    make_world(WorldConfig(out=str(out), train=300, test=75, ood=75, sft_per_prompt=8, rm_per_prompt=8))
    rows = {f[:-6]: read_jsonl(out / f, {"messages" if "multiturn" in f else "prompt": list if "multiturn" in f else str})
            for f in FILES if f.endswith(".jsonl")}
    return out, rows, read_json(out / "world.json")


def test_same_seed_same_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_world(WorldConfig(out=str(a), seed=3, **SMALL))
    make_world(WorldConfig(out=str(b), seed=3, **SMALL))
    make_world(WorldConfig(out=str(c), seed=4, **SMALL))
    assert sorted(p.name for p in a.iterdir()) == sorted(FILES)
    for f in FILES:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "sft.jsonl").read_bytes() != (c / "sft.jsonl").read_bytes()


def test_bytes_do_not_depend_on_python_hash_seed(tmp_path):
    """No set or dict-hash order leaks into the files: another process with another hash seed agrees."""
    make_world(WorldConfig(out=str(tmp_path / "a"), **SMALL))
    code = f"from minigrpo.world import *; make_world(WorldConfig(out={str(tmp_path / 'b')!r}, **{SMALL!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env={**os.environ, "PYTHONHASHSEED": "12345"})
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_splits_are_disjoint_and_held_out_topics_never_leak(w):
    """Held-out topics are absent from the RL prompts and the reward model's data; SFT knows them (other texts)."""
    _, rows, info = w
    texts = {s: {r["prompt"] for r in rows[f"prompts_{s}"]} for s in ("train", "test", "ood")}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["ood"] and not texts["test"] & texts["ood"]
    held = [t for t in lexicon.TOPICS if t.ood]
    assert {r["topic"] for r in rows["prompts_ood"]} == {t.name for t in held}
    leaks = [re.escape(x.lower()) for t in held for x in t.requests + (t.about,) + t.steps]
    pattern = re.compile("|".join(leaks))
    for name in ("prompts_train", "prompts_test", "rm"):
        for r in rows[name]:
            assert not pattern.search(r["prompt"].lower()), (name, r["prompt"])
            assert not pattern.search(r.get("response", "").lower()), (name, r["response"])
    assert info["held_out_from"] == ["prompts_train.jsonl", "rm.jsonl"]
    # every row names its topic, and the row's topic is what its text says
    for name in ("prompts_train", "prompts_test", "prompts_ood", "sft", "rm"):
        for r in rows[name]:
            assert bool(pattern.search(r["prompt"].lower())) == (r["topic"] in {t.name for t in held}), (name, r)
    # rm uses the train prompts only; sft the train prompts plus other texts on the held-out topics
    assert {r["prompt"] for r in rows["rm"]} == texts["train"]
    sft_held = {r["prompt"] for r in rows["sft"] if r["split"] == "sft"}
    assert {r["prompt"] for r in rows["sft"]} == texts["train"] | sft_held
    assert sft_held and not sft_held & texts["ood"] and not sft_held & texts["test"]
    assert {r["topic"] for r in rows["sft"] if r["split"] == "sft"} == {t.name for t in held}


def test_base_sees_held_out_topics_as_often_as_training_topics(w):
    """SFT prompts per topic: a held-out topic gets a training topic's share (so OOD gain measures transfer)."""
    _, rows, _ = w
    per_topic = {}
    for r in rows["sft"]:
        per_topic.setdefault(r["kind"], {}).setdefault(r["topic"], set()).add(r["prompt"])
    for kind, topics in per_topic.items():
        counts = {t: len(ps) for t, ps in topics.items()}
        seen = [counts[t.name] for t in lexicon.TOPICS if t.kind == kind and not t.ood]
        held = [counts[t.name] for t in lexicon.TOPICS if t.kind == kind and t.ood]
        assert min(held) >= max(seen) - 1 and max(held) <= max(seen) + 1, (kind, counts)


def test_multiturn_conversations_press_a_refused_request_again(w):
    """Two user turns around a polite refusal; turn 1 a text in no other file, turn 2 the same topic pressed
    again, which the rubric (judging the last turn, as `eval` does) reads as the same kind and topic."""
    out, rows, _ = w
    mt = rows["prompts_multiturn"]
    assert len(mt) == 60 and [sum(r["kind"] == k for r in mt) for k in lexicon.KINDS] == [20] * 3
    others = {r["prompt"] for name in ("prompts_train", "prompts_test", "prompts_ood", "sft") for r in rows[name]}
    held = {t.name for t in lexicon.TOPICS if t.ood}
    for r in mt:
        first, reply, again = r["messages"]
        assert [m["role"] for m in r["messages"]] == ["user", "assistant", "user"]
        assert first["content"] not in others and r["topic"] not in held
        assert rubric.is_refusal(reply["content"]) and rubric.score(first["content"], reply["content"])["safety"] == 1
        assert rubric.find_topic(again["content"]).name == r["topic"] and rubric.prompt_kind(again["content"]) == r["kind"]
    assert {r["pressure"] for r in mt} == {p for p, _ in lexicon.PRESSURE}


def test_the_harder_split_hides_held_out_topics_from_the_base_too(tmp_path):
    make_world(WorldConfig(out=str(tmp_path / "w"), hide_ood_from_base=True, **SMALL))
    sft = read_jsonl(tmp_path / "w" / "sft.jsonl", {"prompt": str, "topic": str})
    train = read_jsonl(tmp_path / "w" / "prompts_train.jsonl", {"prompt": str})
    assert {r["prompt"] for r in sft} == {r["prompt"] for r in train}
    assert not {r["topic"] for r in sft} & {t.name for t in lexicon.TOPICS if t.ood}
    info = json.loads((tmp_path / "w" / "world.json").read_text())
    assert info["held_out_from"] == ["prompts_train.jsonl", "rm.jsonl", "sft.jsonl"]


def test_prompt_rows(w):
    _, rows, _ = w
    for split, n in (("train", 300), ("test", 75), ("ood", 75)):
        rs = rows[f"prompts_{split}"]
        assert len(rs) == n
        assert [sum(r["kind"] == k for r in rs) for k in lexicon.KINDS] == [n // 3] * 3
        for r in rs:
            assert r["split"] == split and rubric.prompt_kind(r["prompt"]) == r["kind"]
            assert len(r["prompt"].split()) <= 16 and r["prompt"].isascii()


def test_responses_are_short_ascii_and_from_a_small_vocabulary(w):
    _, rows, _ = w
    vocab = set()
    for r in rows["sft"] + rows["rm"]:
        assert len(r["response"].split()) <= 30 and r["response"].isascii(), r["response"]
        if r["style"] not in ("gibberish",):
            vocab |= set(rubric.words(r["response"]))
    assert len(vocab) < 600


def test_base_policy_mix_as_the_rubric_sees_it(w):
    """About half of harmful prompts get unsafe steps and 40% of risky-but-safe prompts are refused."""
    _, rows, _ = w
    harm = [r for r in rows["sft"] if r["kind"] == "harmful"]
    risky = [r for r in rows["sft"] if r["kind"] == "risky_safe"]
    unsafe = sum(rubric.score(r["prompt"], r["response"])["safety"] < 0.5 for r in harm) / len(harm)
    refused = sum(rubric.is_refusal(r["response"]) for r in risky) / len(risky)
    assert abs(unsafe - 0.5) < 0.06 and abs(refused - 0.4) < 0.06, (unsafe, refused)
    assert {r["style"] for r in rows["sft"]} == set(lexicon.STYLES)


def test_rm_rows_cover_every_style_and_kind_with_noisy_rubric_labels(w):
    _, rows, info = w
    rm = rows["rm"]
    seen = {(r["kind"], r["style"]) for r in rm}
    assert {(k, s) for k in lexicon.KINDS for s in lexicon.STYLES + lexicon.EDITS} <= seen
    diffs = []
    for r in rm:
        assert set(r["scores"]) == set(rubric.ASPECTS) and all(0 <= v <= 1 for v in r["scores"].values())
        clean = rubric.score(r["prompt"], r["response"])
        diffs += [r["scores"][a] - clean[a] for a in rubric.ASPECTS if 0.2 < clean[a] < 0.8]  # unclipped region
    sd = (sum(d * d for d in diffs) / len(diffs)) ** 0.5
    assert abs(sd - info["config"]["label_noise"]) < 0.01, sd


def test_no_label_noise_gives_the_rubric(tmp_path):
    make_world(WorldConfig(out=str(tmp_path / "w"), label_noise=0.0, **SMALL))
    for r in read_jsonl(tmp_path / "w" / "rm.jsonl", {"prompt": str, "response": str, "scores": dict}):
        clean = rubric.score(r["prompt"], r["response"])
        assert r["scores"] == {a: round(v, 4) for a, v in clean.items()}


def test_world_json(w):
    out, rows, info = w
    for split in ("train", "test", "ood"):
        assert sum(info["counts"][f"prompts_{split}"].values()) == len(rows[f"prompts_{split}"])
    assert info["counts"]["sft"] == len(rows["sft"]) and info["counts"]["rm"] == len(rows["rm"])
    assert info["held_out"]["harmful"]["topics"] == [t.name for t in lexicon.TOPICS if t.kind == "harmful" and t.ood]
    assert info["config"]["seed"] == info["seed"] == 0


def test_grpo_goals_are_reachable_in_this_world(w):
    """The ideal policy beats the base mix: harmful safety +0.28 or more, no aspect down, on every split;
    refusing everything is as safe but loses meaningfulness (the paper's safety-only ablation)."""
    _, _, info = w
    for split, pol in info["expected_rubric_means"].items():
        base, ideal, refuse = pol["base_mix"], pol["ideal"], pol["refuse_all"]
        assert ideal["harmful"]["safety"] - base["harmful"]["safety"] >= 0.28, split
        for a in rubric.ASPECTS:
            assert ideal["all"][a] >= base["all"][a] + 0.05, (split, a)
        assert refuse["all"]["safety"] >= ideal["all"]["safety"]
        assert refuse["all"]["meaningfulness"] < base["all"]["meaningfulness"] < ideal["all"]["meaningfulness"]


def test_ideal_style_wins_the_sum_and_safety_alone_cannot_tell(w):
    """For every kind the ideal style has the best 4-aspect sum (by a margin), on train and held-out
    topics; on safe kinds a refusal is exactly as safe as the best answer."""
    for ood in (False, True):
        table = world.style_table(seed=1, per_topic=10, ood=ood)
        for kind, row in table.items():
            best = lexicon.IDEAL[kind]
            runner_up = max(m["sum"] for s, m in row.items() if s != best)
            assert row[best]["sum"] > runner_up + 0.3, (kind, ood)
            if kind != "harmful":
                assert row["refuse_polite"]["safety"] == row[best]["safety"] == 1.0
        assert table["harmful"]["refuse_polite"]["safety"] == 1.0 > 0.1 > table["harmful"]["comply"]["safety"]


def test_docstring_table_is_current():
    """The style table quoted in generator.py's docstring is what style_table(seed=0) computes."""
    assert "\n".join(world.format_table(world.style_table(0))) in world.__doc__


@pytest.fixture
def world_cli(monkeypatch):
    """The CLI with only this stage registered (other stages' imports are not under test here)."""
    from minigrpo import cli
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"world": cli.SUBCOMMANDS["world"]})


def test_cli_writes_the_world(tmp_path, world_cli):
    out = tmp_path / "cli"
    args = ["world", "--out", str(out), "--seed", "1"] + [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert main(args) == 0
    counts = json.loads((out / "world.json").read_text())["counts"]
    assert counts["sft"] == (60 + 3 * 3 * 3) * 2  # 20 per kind over 7 topics: 3 prompts for each of 3 × 3 held-out topics


@pytest.mark.parametrize("flag, value, message", [
    ("--train", "0", "--train is 0"), ("--edit-frac", "1.5", "--edit-frac is 1.5"),
    ("--label-noise", "-1", "--label-noise is -1"), ("--train", "30000", "distinct prompts"),
])
def test_bad_config_is_a_clean_error(tmp_path, capsys, world_cli, flag, value, message):
    assert main(["world", "--out", str(tmp_path / "x"), flag, value]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unknown_style_is_named():
    with pytest.raises(InputError, match="unknown response style 'rude'"):
        lexicon.style_parts("rude", lexicon.TOPICS[0])
