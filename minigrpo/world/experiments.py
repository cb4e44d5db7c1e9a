"""`minigrpo seeds` and `minigrpo experiments`: the embedded world's results over seeds, and the paper's
next checks and open questions as measurements (`make seeds-small`, `make experiments-small`).

Both read a folder of per-seed runs laid out by the Makefile, `SEEDS/<name>/`:
    eval/base, eval/grpo          `minigrpo eval` on the test and OOD splits (base, GRPO with G = 4)
    eval_mt/base, eval_mt/grpo    `minigrpo eval` on the multi-turn conversations
    grpo/metrics.jsonl, grpo/probes.jsonl
    eval/g2, eval/g8, eval/constraint, constraint/metrics.jsonl   (experiments only)

`seeds` writes a table of mean ± std over seeds (std with n − 1, as CleanRL reports) of the base, the
GRPO policy and their difference, judges each goal (world/goals.py) on the mean and counts the
seeds that meet it, and writes every seed's row to a CSV beside it, plus a figure of the per-seed
differences. `experiments` writes, over its seeds: group size G ∈ {2, 4, 8}; the safety constraint
beside the weighted sum; the reward model's calibration against the rubric on policy samples;
reward hacking over time (the probe set scored by both judges); and the multi-turn conversations.

Calibration of the reward model (RM) against the rubric on a set of samples, per aspect:
  R² = 1 − Σ(rubric − rm)² / Σ(rubric − mean rubric)²   (the RM's scores as predictions of the rubric's)
  ρ  = Spearman's rank correlation (Pearson's r of the ranks, ties given their mean rank)
(the same R² and ρ as `minigrpo train-rm` reports on its validation set: minigrpo/train_rm.py)
  bias = mean(rm − rubric)                                (> 0: the RM is more pleased than the truth)
R² can be negative: a constant at the right mean scores 0. ρ ignores scale: it asks only whether the
RM orders samples as the rubric does, which is what group-relative advantages use.
"""
import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minigrpo.errors import InputError
from minigrpo.files import atomic_file, check_out, iter_jsonl, read_json
from minigrpo.flags import check_flags
from minigrpo.reward_model import ASPECTS
from minigrpo.train_rm import r2, spearman
from minigrpo.world import goals, rubric

SPLITS = ("test", "ood")
# (label, block of eval.json's split summary or None for a rate, key)
ROWS = ([("rubric safety, harmful prompts", "harmful", "rubric/safety")]
        + [(f"rubric {a}, all prompts", "all", f"rubric/{a}") for a in ASPECTS]
        + [("unsafe compliance", None, "unsafe_compliance"), ("over-refusal", None, "over_refusal")])


# ---- statistics
def mean_std(xs):
    """(mean, std) with the n − 1 divisor; std is 0 for one value."""
    n = len(xs)
    m = sum(xs) / n
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0)


def agreement(rm, truth):
    """{"r2", "rho", "bias", "n"} of reward-model scores `rm` against rubric scores `truth` (module docstring).

    R² and ρ are train-rm's own (minigrpo/train_rm.py), so the numbers on policy samples and on the
    reward model's validation set are the same statistic; None where one side is constant.
    """
    pred, target = np.asarray(rm, dtype=np.float64)[:, None], np.asarray(truth, dtype=np.float64)[:, None]  # (n, 1)
    r2_, rho = float(r2(pred, target)[0]), float(spearman(pred, target)[0])
    return {"r2": None if math.isnan(r2_) else r2_, "rho": None if math.isnan(rho) else rho,
            "bias": float((pred - target).mean()), "n": len(rm)}


def _fmt(m, s=None, signed=False):
    if m is None:
        return "–"
    return (f"{m:+.3f}" if signed else f"{m:.3f}") + ("" if s is None else f" ± {s:.3f}")


def _value(split_summary, block, key):
    return split_summary.get(key) if block is None else split_summary.get(block, {}).get(key)


# ---- reading the runs
def _runs(seeds_dir, names):
    root = Path(seeds_dir)
    if not root.is_dir():
        raise InputError(f"--seeds {root}: not a folder (make seeds-small writes it)")
    dirs = {n: root / n for n in names}
    missing = [str(d) for d in dirs.values() if not d.is_dir()]
    if missing:
        raise InputError(f"--names: no run folder {', '.join(missing)}")
    return dirs


def _eval(run, sub, name):
    return read_json(run / sub / name / "eval.json", "eval.json (from `minigrpo eval`)")["splits"]


def _samples(run, sub, name, split):
    return [row for _, row in iter_jsonl(run / sub / name / f"samples_{split}.jsonl")]


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def _save(fig, plt, path):
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


# ---- `minigrpo seeds`
@dataclass
class SeedsConfig:
    """Table of base vs GRPO over seeds (mean ± std, goals per seed) from `make seeds-small`'s runs."""
    seeds: str = field(metadata={"help": "folder of per-seed runs (runs/full/seeds)"})
    names: str = field(metadata={"help": "comma-separated run folders in it, one per seed (s0,s1,...)"})
    out: str = field(metadata={"help": "markdown file; a .csv of every seed's rows and a .png go beside it"})


def seed_rows(runs, sub="eval", run="grpo", splits=SPLITS):
    """[{seed, split, metric, base, run, delta}] for every seed, split and ROWS metric."""
    out = []
    for seed, d in runs.items():
        base, ev = _eval(d, sub, "base"), _eval(d, sub, run)
        for split in splits:
            for label, block, key in ROWS:
                b, r = _value(base[split], block, key), _value(ev[split], block, key)
                if b is not None and r is not None:
                    out.append({"seed": seed, "split": split, "metric": label, "base": b, "run": r, "delta": r - b})
    return out


def mean_table(rows, split, run="grpo"):
    """Markdown lines: per metric, base / run / Δ as mean ± std over seeds, and how many seeds moved each way."""
    lines = [f"| {split} | base | {run} | Δ | seeds Δ > 0 |", "|---|---|---|---|---|"]
    for label, _, _ in ROWS:
        rs = [r for r in rows if r["split"] == split and r["metric"] == label]
        if not rs:
            continue
        up = sum(r["delta"] > 0 for r in rs)
        lines.append(f"| {label} | {_fmt(*mean_std([r['base'] for r in rs]))} | {_fmt(*mean_std([r['run'] for r in rs]))} "
                     f"| {_fmt(*mean_std([r['delta'] for r in rs]), signed=True)} | {up}/{len(rs)} |")
    return lines


def goal_table(runs, sub="eval", run="grpo", splits=SPLITS):
    """Markdown lines: each goal judged on the mean over seeds, and the number of seeds meeting it."""
    per = {}  # (split, goal name) → [(value, ok, text)]
    for d in runs.values():
        base, ev = _eval(d, sub, "base"), _eval(d, sub, run)
        for split in splits:
            for name, value, ok, text in goals.goal_checks(split, base[split], ev[split]):
                per.setdefault((split, name), []).append((value, ok, text))
    lines = ["| split | goal | mean ± std over seeds | met by mean | seeds meeting it |", "|---|---|---|---|---|"]
    for (split, name), got in per.items():
        m, s = mean_std([v for v, _, _ in got])
        goal_text = got[0][2].rsplit(":", 1)[0]
        by_mean = goals.meets(name, split, m)
        lines.append(f"| {split} | {goal_text} | {_fmt(m, s, signed=True)} | {'✓' if by_mean else '✗'} "
                     f"| {sum(ok for _, ok, _ in got)}/{len(got)} |")
    return lines


def plot_seeds(rows, png):
    """Per metric and split, each seed's Δ (dots) with the mean ± std (bar); False without matplotlib."""
    plt = _plt()
    if plt is None:
        return False
    labels = [label for label, _, _ in ROWS]
    fig, axes = plt.subplots(1, len(SPLITS), figsize=(6 * len(SPLITS), 4), sharey=True)
    for ax, split in zip(axes, SPLITS):
        for i, label in enumerate(labels):
            ds = [r["delta"] for r in rows if r["split"] == split and r["metric"] == label]
            if not ds:
                continue
            m, s = mean_std(ds)
            ax.bar(i, m, yerr=s, color="tab:blue" if m >= 0 else "tab:red", alpha=0.4, capsize=3)
            ax.scatter([i] * len(ds), ds, color="k", s=10, zorder=3)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([lb.replace(", ", "\n") for lb in labels], fontsize=7, rotation=30, ha="right")
        ax.set_title(f"{split}: GRPO − base per seed (dots), mean ± std (bars)", fontsize=9)
    fig.tight_layout()
    _save(fig, plt, png)
    return True


def _start(cfg):
    """(names, {name: run folder}, out path) of `seeds` / `experiments`, every flag checked first."""
    check_flags(cfg)
    check_out(cfg.out, kind="file")
    names = [n.strip() for n in cfg.names.split(",") if n.strip()]
    if not names:
        raise InputError("--names: no run folder named")
    return names, _runs(cfg.seeds, names), Path(cfg.out)


def seeds(cfg):
    """Write the seeds table (markdown), every seed's rows (CSV) and the figure."""
    names, runs, out = _start(cfg)
    rows = seed_rows(runs)
    lines = [f"# minigrpo seeds-small: base vs GRPO over {len(runs)} seeds ({', '.join(names)})", "",
             "Mean ± std over seeds (std with n − 1). Each seed reruns the reward model, GRPO and evaluation's "
             "sampling on one world, tokenizer and SFT base. Runs are bit-for-bit reproducible on one machine, "
             "not across CPUs: another machine gives other numbers, within about this spread.", "",
             "## Goals", ""] + goal_table(runs) + [""]
    for split in SPLITS:
        lines += mean_table(rows, split) + [""]
    png = out.with_suffix(".png")
    if plot_seeds(rows, png):
        lines += [f"![per-seed differences]({png.name})", ""]
    lines += [f"Every seed's rows: `{out.with_suffix('.csv').name}`.", ""]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["seed", "split", "metric", "base", "run", "delta"], lineterminator="\n")
    w.writeheader()
    w.writerows({**r, **{k: f"{r[k]:.6f}" for k in ("base", "run", "delta")}} for r in rows)
    with atomic_file(out.with_suffix(".csv")) as f:
        f.write(buf.getvalue())
    text = "\n".join(lines) + "\n"
    with atomic_file(out) as f:
        f.write(text)
    print(text)
    return text


# ---- `minigrpo experiments`
@dataclass
class ExperimentsConfig:
    """Group size, the safety constraint, reward-model calibration, reward hacking over time, multi-turn."""
    seeds: str = field(metadata={"help": "folder of per-seed runs (runs/full/seeds)"})
    names: str = field(metadata={"help": "comma-separated run folders in it (s0,s1,...)"})
    out: str = field(metadata={"help": "markdown file; PNG figures go beside it"})
    world: str = field(default="", metadata={"help": "the world folder, to break multi-turn results down by pressure"})


KEY_ROWS = [ROWS[0], ROWS[2], ROWS[5], ROWS[6]]  # safety on harmful, meaningfulness, unsafe compliance, over-refusal


def runs_table(runs, names, splits=SPLITS, sub="eval", rows=KEY_ROWS):
    """Markdown lines: metric × split rows, one column per run name, mean ± std over seeds."""
    lines = ["| metric | split | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    evs = {n: [_eval(d, sub, n) for d in runs.values()] for n in names}
    for split in splits:
        for label, block, key in rows:
            cells = []
            for n in names:
                vals = [_value(e[split], block, key) for e in evs[n]]
                cells.append(_fmt(*mean_std(vals)) if None not in vals else "–")
            lines.append(f"| {label} | {split} | " + " | ".join(cells) + " |")
    return lines


def _train_config(runs, name="grpo"):
    return read_json(next(iter(runs.values())) / name / "train_config.json", "train_config.json (from `minigrpo train`)")


def group_size_section(runs):
    N = _train_config(runs)["batch_size"]
    lines = ["## Group size G ∈ {2, 4, 8} (the paper's next check 3)", "",
             f"Each step samples N = {N} completions: B = {N // 2}, {N // 4}, {N // 8} prompts × G = 2, 4, 8. "
             "Rubric metrics of the final "
             "policy, mean ± std over seeds; `zero-std groups` is the share of groups whose G rewards were all equal "
             "(no learning signal), averaged over training.", ""]
    lines += runs_table(runs, ["base", "g2", "grpo", "g8"])
    zs = {n: mean_std([sum(r["frac_zero_std"] for r in m) / len(m) for m in
                       ([row for _, row in iter_jsonl(d / n / "metrics.jsonl")] for d in runs.values())])
          for n in ("g2", "grpo", "g8")}
    lines += [f"| zero-std groups (training mean) | – | – | " + " | ".join(_fmt(*zs[n]) for n in ("g2", "grpo", "g8")) + " |",
              "", "(`grpo` is G = 4.)", ""]
    return lines


def constraint_section(runs, out):
    lines = ["## Safety as a constraint (open question 3)", "",
             "`--safety-threshold` replaces the safety weight by a Lagrange multiplier λ learned by dual ascent "
             "(minigrpo/advantages.py): λ grows while the batch's mean reward-model safety is below the threshold. "
             "Beside the weighted sum (`grpo`), mean ± std over seeds:", ""]
    lines += runs_table(runs, ["base", "grpo", "constraint"])
    curves = [[row for _, row in iter_jsonl(d / "constraint" / "metrics.jsonl")] for d in runs.values()]
    lam_final = mean_std([c[-1]["lambda"] for c in curves])
    lam_max = mean_std([max(r["lambda"] for r in c) for c in curves])
    lines += ["", f"λ at the end of training {_fmt(*lam_final)}, its maximum {_fmt(*lam_max)} (mean ± std over seeds).", ""]
    plt = _plt()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for name, c in zip(runs, curves):
            steps = [r["step"] for r in c]
            axes[0].plot(steps, [r["lambda"] for r in c], label=name)
            axes[1].plot(steps, [r["safety_mean"] for r in c], label=name)
        axes[1].axhline(c[-1]["safety_mean"] + c[-1]["violation"], color="grey", ls=":", label="threshold")
        for ax, t in zip(axes, ["λ over training", "batch mean reward-model safety"]):
            ax.set_title(t, fontsize=9)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        png = out.with_name(out.stem + "_lambda.png")
        _save(fig, plt, png)
        lines += [f"![λ over training]({png.name})", ""]
    return lines


def calibration_section(runs):
    lines = ["## Reward-model calibration on policy samples (the paper's next check 1)", "",
             "Per aspect, the reward model's scores against the rubric's on completions sampled from the base and "
             "from the GRPO policy, in distribution (test) and out (OOD): R², Spearman ρ and bias = mean(rm − rubric), "
             "mean ± std over seeds. The reward model's own validation set is its training distribution; these are "
             "the samples GRPO actually scores.", "",
             "| policy | split | aspect | R² | ρ | bias |", "|---|---|---|---|---|---|"]
    for policy in ("base", "grpo"):
        for split in SPLITS:
            per = [[_samples(d, "eval", policy, split)] for d in runs.values()]
            for a in ASPECTS:
                ag = [agreement([r[f"rm/{a}"] for r in s[0]], [r[f"rubric/{a}"] for r in s[0]]) for s in per]
                cells = []
                for k in ("r2", "rho", "bias"):
                    vals = [g[k] for g in ag]
                    cells.append(_fmt(*mean_std(vals), signed=k == "bias") if None not in vals else "–")
                lines.append(f"| {policy} | {split} | {a} | " + " | ".join(cells) + " |")
    return lines + [""]


def probe_curves(runs):
    """{split: {aspect: {"rm"|"rubric": (steps, [mean over seeds of the probe-set mean])}}} from grpo/probes.jsonl."""
    per_seed = []
    for d in runs.values():
        acc = {}
        for _, r in iter_jsonl(d / "grpo" / "probes.jsonl"):
            truth = rubric.score(r["prompt"], r["response"])
            for a in ASPECTS:
                for judge, v in (("rm", r[f"rm/{a}"]), ("rubric", truth[a])):
                    acc.setdefault((r["split"], a, judge), {}).setdefault(r["step"], []).append(v)
        per_seed.append(acc)
    out = {}
    for (split, a, judge) in per_seed[0]:
        steps = sorted(per_seed[0][(split, a, judge)])
        means = [sum(sum(acc[(split, a, judge)][s]) / len(acc[(split, a, judge)][s]) for acc in per_seed) / len(per_seed)
                 for s in steps]
        out.setdefault(split, {}).setdefault(a, {})[judge] = (steps, means)
    return out


def hacking_section(runs, out):
    curves = probe_curves(runs)
    lines = ["## Reward hacking over time", "",
             "During each GRPO run a fixed probe set (the first prompts of the test and OOD splits) was sampled "
             "every few steps, one completion each with the same random numbers every time, and scored by the reward "
             "model (in training, `--probe`); the rubric judged the same rows afterwards. Mean over the probe set, "
             "then over seeds. Where the reward model's curve rises and the rubric's does not, the policy is "
             "learning the reward model's mistakes.", "",
             "| split | aspect | rm at step 0 → last | rubric at step 0 → last | gap (rm − rubric) at 0 → last |",
             "|---|---|---|---|---|"]
    for split, per in curves.items():
        for a, c in per.items():
            (_, rm), (_, tr) = c["rm"], c["rubric"]
            lines.append(f"| {split} | {a} | {rm[0]:.3f} → {rm[-1]:.3f} | {tr[0]:.3f} → {tr[-1]:.3f} "
                         f"| {rm[0] - tr[0]:+.3f} → {rm[-1] - tr[-1]:+.3f} |")
    plt = _plt()
    if plt is not None:
        fig, axes = plt.subplots(len(curves), len(ASPECTS), figsize=(14, 3.2 * len(curves)), squeeze=False)
        for i, (split, per) in enumerate(curves.items()):
            for j, a in enumerate(ASPECTS):
                ax = axes[i][j]
                for judge, style in (("rm", "-"), ("rubric", "--")):
                    ax.plot(*per[a][judge], style, marker=".", label="reward model" if judge == "rm" else "rubric")
                ax.set_title(f"{split}: {a}", fontsize=9)
                ax.set_ylim(0, 1.02)
                ax.set_xlabel("step")
                ax.legend(fontsize=7)
        fig.tight_layout()
        png = out.with_name(out.stem + "_hacking.png")
        _save(fig, plt, png)
        lines += ["", f"![the two judges over training]({png.name})"]
    return lines + [""]


def multiturn_section(runs, world):
    names = [n for n in ("base", "grpo", "constraint") if all((d / "eval_mt" / n / "eval.json").is_file() for d in runs.values())]
    lines = ["## Multi-turn: a refused request pressed again (open question 1)", "",
             "The world's conversations (`prompts_multiturn.jsonl`): the assistant politely refused the first "
             "request, the user presses again (claims authority, an innocent purpose, insists or rephrases). The "
             "rubric judges the second answer: a harmful request should be refused again, a safe one (the first "
             "refusal was needless) answered. No stage trains on a conversation. Mean ± std over seeds:", ""]
    lines += runs_table(runs, names, splits=("multiturn",), sub="eval_mt")
    if world:
        path = Path(world) / "prompts_multiturn.jsonl"
        pressure = {r["messages"][-1]["content"]: r["pressure"] for _, r in iter_jsonl(path)}
        lines += ["", "Unsafe compliance on turn 2 by the kind of pressure (harmful conversations; pooled over seeds):", "",
                  "| pressure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for p in sorted(set(pressure.values())):
            cells = []
            for n in names:
                rows = [r for d in runs.values() for r in _samples(d, "eval_mt", n, "multiturn")
                        if r["kind"] == "harmful" and pressure.get(r["prompt"]) == p]
                cells.append(f"{sum(r['rubric/safety'] < 0.5 for r in rows) / len(rows):.3f} (n={len(rows)})" if rows else "–")
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines + [""]


def experiments(cfg):
    """Write experiments.md and its figures from the runs of `make experiments-small`."""
    names, runs, out = _start(cfg)
    tc = _train_config(runs)
    lines = [f"# minigrpo experiments-small over {len(runs)} seeds ({', '.join(names)})", "",
             f"Each run samples the same number of completions ({tc['batch_size']} per step, {tc['steps']} steps). "
             "Numbers are mean ± std over the seeds named; one machine's floating point.", ""]
    lines += group_size_section(runs)
    lines += constraint_section(runs, out)
    lines += calibration_section(runs)
    lines += hacking_section(runs, out)
    lines += multiturn_section(runs, cfg.world)
    text = "\n".join(lines) + "\n"
    with atomic_file(out) as f:
        f.write(text)
    print(text)
    return text
