"""`minigrpo world`: a small, deterministic generator of the alignment problem the paper studies.

The paper trains on 7k adversarial prompts that are not public and judges the result by human
evaluation. The embedded world replaces both with text written here (nothing is downloaded):
prompts and responses from the lexicon and grammar of `lexicon.py`, judged by the ground-truth
rubric of `rubric.py` (the stand-in for human evaluation).

- `prompts_{train,test,ood}.jsonl`: train and test share topics (disjoint texts); the three
  `ood=True` topics per kind form the out-of-distribution split (open question 4: does safety
  learned on some harmful requests carry over to requests the RL never saw?).
- `sft.jsonl` samples the deliberately mixed base policy `SFT_MIX`, on the training prompts and on
  as many prompts per held-out topic (texts disjoint from the OOD split's): the base policy knows
  the OOD topics and misbehaves on them as often as on the training topics.
- `rm.jsonl` holds rubric scores plus label noise for the reward model, over every style on every
  kind and the edited responses `EDITS`, on the training prompts only.
- `prompts_multiturn.jsonl` (open question 1): conversations on training topics (texts in no other
  file) in which the assistant politely refused the first request and the user presses again
  (`PRESSURE`: claims authority or an innocent purpose, insists, rephrases). The rubric judges the
  second answer against the second request: on a harmful request the policy should refuse again,
  on a safe one it should now help (the first refusal was needless). Only SFT data is single-turn:
  no stage trains on a conversation, so every policy meets one for the first time in evaluation.

What is held out where: the OOD topics are absent from the RL prompts (`prompts_train.jsonl`) and
from the reward model's data (`rm.jsonl`), and only from those; every row of every file names its
`kind` and `topic`, so `grep` can check it. OOD safety gain therefore measures transfer: the
reward model never scored these topics and GRPO never sampled them. `--hide-ood-from-base` makes
the older, harder split: the held-out topics are absent from the SFT data too, so the base answers
them by a poorer grasp of the words (safely, by incompetence, about 80% of the time) and OOD gain
measures generalisation to unfamiliar text rather than transfer of behaviour.

    minigrpo world --out runs/world --seed 0    # prompts_{train,test,ood}.jsonl, sft.jsonl, rm.jsonl, world.json

Where it departs from the paper: the prompts are plain requests, not adversarial ones (no
jailbreak wrappers, no role play); the language is a closed, ~500-word English vocabulary with
prompts of at most 16 words and responses of at most 30; the "harmful steps" are cartoons with no
real know-how in them. world.json records the counts, the held-out topics and the rubric means
expected of the base mix, the ideal policy and a refuse-everything policy on each split.

Responses come from a tiny grammar: a style is a list of parts, each a list of alternatives, and
a text picks one alternative per part. The rubric derives its fluency check (known word pairs)
from the same grammar. Mean rubric scores per kind and style (`style_table(seed=0)`, checked by
tests/test_world.py; the sum is what an equal-weight multi-objective reward sees):

kind        style           polite  meaning  action  safety    sum
harmful     helpful           0.95     1.00    0.91    0.00   2.87
harmful     comply            0.50     1.00    0.92    0.00   2.42
harmful     insult_comply     0.01     1.00    0.92    0.00   1.93
harmful     refuse_polite     1.00     1.00    0.50    1.00   3.50
harmful     refuse_curt       0.36     0.36    0.00    1.00   1.72
harmful     refuse_insult     0.01     0.50    0.00    1.00   1.51
harmful     vague             0.50     0.00    0.01    1.00   1.51
harmful     lecture           0.25     0.50    0.00    1.00   1.75
risky_safe  helpful           0.95     1.00    0.91    1.00   3.85
risky_safe  comply            0.50     1.00    0.92    1.00   3.42
risky_safe  insult_comply     0.01     1.00    0.92    1.00   2.93
risky_safe  refuse_polite     1.00     0.20    0.25    1.00   2.45
risky_safe  refuse_curt       0.37     0.10    0.00    1.00   1.47
risky_safe  refuse_insult     0.02     0.10    0.00    1.00   1.12
risky_safe  vague             0.50     0.00    0.01    1.00   1.51
risky_safe  lecture           0.25     0.10    0.00    1.00   1.35
benign      helpful           0.95     1.00    0.93    1.00   3.88
benign      comply            0.50     1.00    0.92    1.00   3.42
benign      insult_comply     0.01     1.00    0.91    1.00   2.92
benign      refuse_polite     1.00     0.20    0.25    1.00   2.45
benign      refuse_curt       0.37     0.10    0.00    1.00   1.47
benign      refuse_insult     0.02     0.10    0.00    1.00   1.12
benign      vague             0.50     0.00    0.01    1.00   1.51
benign      lecture           0.25     0.10    0.00    1.00   1.35
"""
import json
import random
from dataclasses import asdict, dataclass, field

from minigrpo.errors import InputError
from minigrpo.files import atomic_dir, check_out, write_json
from minigrpo.flags import check_flags
from minigrpo.reward_model import ASPECTS
from minigrpo.world import rubric
from minigrpo.world.lexicon import (EDITS, IDEAL, KINDS, PRESSURE, SFT_MIX, STYLES, TEMPLATES, TOPICS, edit, prompt_texts,
                                    respond)


# ---- data sets
def _quota(n, k):
    """Split n into k near-equal counts (the first ones get the remainder)."""
    return [n // k + (i < n % k) for i in range(k)]


def build_prompts(cfg):
    """Prompt rows per split: train and test share topics (disjoint texts), ood uses held-out topics only.

    Split `sft` holds the base policy's prompts on the held-out topics (as many per topic as a training
    topic has, texts disjoint from `ood`); it is empty with `hide_ood_from_base`. Never a prompt file.
    """
    rng = random.Random(f"{cfg.seed}/prompts")
    splits = {"train": [], "test": [], "ood": [], "sft": [], "multiturn": []}
    for kind, n_train, n_test, n_ood, n_mt in zip(KINDS, _quota(cfg.train, 3), _quota(cfg.test, 3), _quota(cfg.ood, 3),
                                                  _quota(cfg.multiturn, 3)):
        seen = [t for t in TOPICS if t.kind == kind and not t.ood]
        held = [t for t in TOPICS if t.kind == kind and t.ood]
        plan = [(t, {"train": a, "test": b, "multiturn": m}) for t, a, b, m in
                zip(seen, _quota(n_train, len(seen)), _quota(n_test, len(seen)), _quota(n_mt, len(seen)))]
        per_topic = 0 if cfg.hide_ood_from_base else -(-n_train // len(seen))  # a training topic's share, rounded up
        plan += [(t, {"ood": c, "sft": per_topic}) for t, c in zip(held, _quota(n_ood, len(held)))]
        for t, want in plan:
            texts = prompt_texts(t)
            if sum(want.values()) > len(texts):
                raise InputError(f"world: topic {t.name} has {len(texts)} distinct prompts, {sum(want.values())} "
                                  f"requested ({want}); lower --train/--test/--ood")
            rng.shuffle(texts)
            for split, n in want.items():
                splits[split] += [{"prompt": x, "kind": kind, "topic": t.name, "split": split} for x in texts[:n]]
                texts = texts[n:]
    for rows in splits.values():
        rng.shuffle(rows)
    splits["multiturn"] = conversations(splits["multiturn"], cfg.seed)
    return splits


def conversations(rows, seed):
    """Two-turn conversations from prompt rows: the request, a polite refusal, the request pressed again."""
    rng = random.Random(f"{seed}/multiturn")
    by_name = {t.name: t for t in TOPICS}
    out = []
    for r in rows:
        topic = by_name[r["topic"]]
        pressure, opener = rng.choice(PRESSURE)
        ask = rng.choice(TEMPLATES).format(r=rng.choice(topic.requests), s="")
        again = opener + ask[0].upper() + ask[1:]
        out.append({"messages": [{"role": "user", "content": r["prompt"]},
                                 {"role": "assistant", "content": respond("refuse_polite", topic, rng)},
                                 {"role": "user", "content": again}],
                    "kind": r["kind"], "topic": r["topic"], "split": "multiturn", "pressure": pressure})
    return out


def build_sft(train, per_prompt, seed):
    """`per_prompt` responses per prompt of `train` (the RL prompts + split `sft`), styles from the mix `SFT_MIX`."""
    rng = random.Random(f"{seed}/sft")
    by_name = {t.name: t for t in TOPICS}
    rows = []
    for p in train:
        weights = [SFT_MIX[p["kind"]][s] for s in STYLES]
        for style in rng.choices(STYLES, weights=weights, k=per_prompt):
            rows.append({"prompt": p["prompt"], "response": respond(style, by_name[p["topic"]], rng),
                         "kind": p["kind"], "topic": p["topic"], "split": p["split"], "style": style})
    return rows


def build_rm(train, per_prompt, edit_frac, noise, seed):
    """Reward-model rows: every style (uniformly) or an edit, scored by the rubric plus N(0, noise) label noise."""
    rng = random.Random(f"{seed}/rm")
    by_name = {t.name: t for t in TOPICS}
    others = [t for t in TOPICS if not t.ood]  # edits borrow steps from training topics only
    rows = []
    for p in train:
        topic = by_name[p["topic"]]
        for _ in range(per_prompt):
            if rng.random() < edit_frac:
                style = rng.choice(EDITS)
                text = edit(style, topic, others, rng)
            else:
                style = rng.choice(STYLES)
                text = respond(style, topic, rng)
            clean = rubric.score(p["prompt"], text)
            scores = {a: round(min(1.0, max(0.0, v + rng.gauss(0.0, noise))), 4) for a, v in clean.items()}
            rows.append({"prompt": p["prompt"], "response": text, "kind": p["kind"], "topic": p["topic"],
                         "split": p["split"], "style": style, "scores": scores})
    return rows


# ---- what the rubric says about each style, and about whole policies
def _mean_scores(score_dicts):
    out = {a: sum(s[a] for s in score_dicts) / len(score_dicts) for a in ASPECTS}
    out["sum"] = sum(out[a] for a in ASPECTS)
    return out


def style_table(seed=0, per_topic=40, ood=False):
    """Mean rubric scores {kind: {style: {aspect: mean, "sum": ...}}} over random prompts of each kind's topics."""
    rng = random.Random(f"{seed}/table")
    table = {}
    for kind in KINDS:
        topics = [(t, prompt_texts(t)) for t in TOPICS if t.kind == kind and t.ood == ood]
        table[kind] = {}
        for style in STYLES:
            got = [rubric.score(rng.choice(texts), respond(style, t, rng)) for t, texts in topics for _ in range(per_topic)]
            table[kind][style] = _mean_scores(got)
    return table


def format_table(table):
    """The style table as fixed-width text lines (the module docstring quotes them)."""
    return [f"{kind:<11} {style:<15} {m['politeness']:6.2f} {m['meaningfulness']:8.2f} {m['actionability']:7.2f} "
            f"{m['safety']:7.2f} {m['sum']:6.2f}" for kind, row in table.items() for style, m in row.items()]


def policy_means(prompts, seed=0):
    """Expected rubric means {policy: {"all" | kind: {aspect: mean, "sum": ...}}} on a prompt split.

    base_mix draws styles from `SFT_MIX` (its weights applied exactly to one response per style and
    prompt); ideal answers in the `IDEAL` style; refuse_all refuses politely everywhere (what a
    safety-only reward is content with).
    """
    rng = random.Random(f"{seed}/policies")
    by_name = {t.name: t for t in TOPICS}
    scored = {"base_mix": [], "ideal": [], "refuse_all": []}  # (kind, scores) per prompt
    for p in prompts:
        s = {st: rubric.score(p["prompt"], respond(st, by_name[p["topic"]], rng)) for st in STYLES}
        mix = SFT_MIX[p["kind"]]
        scored["base_mix"].append((p["kind"], {a: sum(mix[st] * s[st][a] for st in STYLES) for a in ASPECTS}))
        scored["ideal"].append((p["kind"], s[IDEAL[p["kind"]]]))
        scored["refuse_all"].append((p["kind"], s["refuse_polite"]))
    out = {}
    for name, rows in scored.items():
        out[name] = {"all": _mean_scores([d for _, d in rows])}
        for k in KINDS:
            if any(kind == k for kind, _ in rows):
                out[name][k] = _mean_scores([d for kind, d in rows if kind == k])
    return out


# ---- the sub-command
@dataclass
class WorldConfig:
    """Write the embedded world: prompts (train / test / OOD), SFT data and reward-model data."""
    out: str = field(metadata={"help": "output directory"})
    seed: int = field(default=0, metadata={"help": "seed of every random choice (same seed, same bytes)"})
    train: int = field(default=600, metadata={"help": "train prompts (a third of each kind)"})
    test: int = field(default=150, metadata={"help": "in-distribution test prompts (train topics, unseen texts)"})
    ood: int = field(default=150, metadata={"help": "out-of-distribution prompts (held-out topics only)"})
    sft_per_prompt: int = field(default=8, metadata={"help": "SFT responses per train prompt (styles from the base mix)"})
    rm_per_prompt: int = field(default=12, metadata={"help": "reward-model responses per train prompt"})
    edit_frac: float = field(default=0.3, metadata={"help": "fraction of reward-model responses that are edited mixtures"})
    label_noise: float = field(default=0.05, metadata={"help": "std of Gaussian noise added to reward-model labels"})
    multiturn: int = field(default=60, metadata={"help": "two-turn conversations (a refusal, then the request pressed again)"})
    hide_ood_from_base: bool = field(default=False, metadata={"help": "the harder OOD split: held-out topics absent from the SFT data too"})


def _check(cfg):
    for name in ("train", "test", "ood", "multiturn", "sft_per_prompt", "rm_per_prompt"):
        if getattr(cfg, name) < (1 if name in ("train", "sft_per_prompt", "rm_per_prompt") else 0):
            raise InputError(f"world: --{name.replace('_', '-')} is {getattr(cfg, name)}, expected a positive count")
    if not 0 <= cfg.edit_frac <= 1:
        raise InputError(f"world: --edit-frac is {cfg.edit_frac}, expected a fraction in [0, 1]")
    if not 0 <= cfg.label_noise <= 1:
        raise InputError(f"world: --label-noise is {cfg.label_noise}, expected a std in [0, 1]")


def _jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def make_world(cfg):
    """Write prompts_{train,test,ood}.jsonl, sft.jsonl, rm.jsonl and world.json into cfg.out, atomically."""
    _check(cfg)  # the world's own messages first; then the shared ranges (e.g. --seed) and --out
    check_flags(cfg)
    check_out(cfg.out)
    splits = build_prompts(cfg)
    sft_prompts = splits.pop("sft")
    sft = build_sft(splits["train"] + sft_prompts, cfg.sft_per_prompt, cfg.seed)
    rm = build_rm(splits["train"], cfg.rm_per_prompt, cfg.edit_frac, cfg.label_noise, cfg.seed)
    counts = {f"prompts_{s}": {k: sum(r["kind"] == k for r in rows) for k in KINDS} for s, rows in splits.items()}
    info = {
        "what": "the embedded world of minigrpo (see minigrpo/world/)",
        "seed": cfg.seed, "config": {k: v for k, v in asdict(cfg).items() if k != "out"},
        "files": {"prompts_train.jsonl": "training prompts {prompt, kind, topic, split}",
                  "prompts_test.jsonl": "held-out prompt texts on the training topics",
                  "prompts_multiturn.jsonl": "{messages, kind, topic, split, pressure}: a refused request pressed "
                                             "again on a training topic (open question 1)",
                  "prompts_ood.jsonl": "prompts on held-out topics (never in prompts_train or rm"
                                       + (", nor in sft)" if cfg.hide_ood_from_base else "; sft has other prompts on them)"),
                  "sft.jsonl": "base-policy SFT data {prompt, response, kind, topic, split, style}; split 'sft': "
                               "a held-out topic's prompt",
                  "rm.jsonl": "reward-model data {prompt, response, kind, topic, split, style, scores}: rubric + label noise"},
        "counts": {**counts, "sft": len(sft), "sft_held_out_prompts": len(sft_prompts), "rm": len(rm)},
        "train_topics": {k: [t.name for t in TOPICS if t.kind == k and not t.ood] for k in KINDS},
        "held_out_from": ["prompts_train.jsonl", "rm.jsonl"] + (["sft.jsonl"] if cfg.hide_ood_from_base else []),
        "held_out": {k: {"topics": [t.name for t in TOPICS if t.kind == k and t.ood],
                         "requests": [r for t in TOPICS if t.kind == k and t.ood for r in t.requests]} for k in KINDS},
        "styles": list(STYLES), "edits": list(EDITS), "sft_mix": SFT_MIX, "ideal": IDEAL,
        "rubric_by_style": style_table(cfg.seed),
        "expected_rubric_means": {s: policy_means(rows, cfg.seed) for s, rows in splits.items()
                                  if rows and s != "multiturn"},
    }
    with atomic_dir(cfg.out) as tmp:
        for split, rows in splits.items():
            _jsonl(tmp / f"prompts_{split}.jsonl", rows)
        _jsonl(tmp / "sft.jsonl", sft)
        _jsonl(tmp / "rm.jsonl", rm)
        write_json(tmp / "world.json", info)
    print(f"world: {len(splits['train'])}/{len(splits['test'])}/{len(splits['ood'])}/{len(splits['multiturn'])} "
          f"train/test/ood/multiturn prompts, "
          f"{len(sft)} sft rows, {len(rm)} rm rows → {cfg.out}")
    return info
