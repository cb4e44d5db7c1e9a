"""Chapter 15's data and figure: the results of `make train-small ablation-small`, per aspect, by both judges.

Extract (once, after the runs; a few seconds) the small summary chapters 14 and 15 read, into
walkthrough/data/train_small/:

    make train-small ablation-small            # ~7 min on an idle 2-core machine; writes runs/full/
    python walkthrough/figures/ch15.py --extract runs/full

It copies each run's eval.json (base, grpo, and safety_only and gdpo when they were run), the reward model's validation
metrics (rm/train_rm.json), the reward model's R², Spearman ρ and bias against the rubric on each policy's own samples
(rm_vs_rubric.json), the reward model's mean safety on the harmful prompts' samples the rubric calls unsafe and safe
(harmful_safety.json), the main columns of the GRPO runs' metrics.jsonl (`CURVE_KEYS`, rounded to 5 significant
digits) and the GRPO policy's OOD samples where the two judges disagree most, on safety and on meaningfulness
(ood_disagreements.jsonl, each row tagged with its `aspect`).

`make(out_dir)` draws ch15_rm_vs_rubric.png from those committed files: per aspect, the change
from base to GRPO as the reward model sees it against the change the rubric measures, on the
test and the OOD split (and safety on the harmful prompts alone). Points far from the diagonal
are where the two judges disagree.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import matplotlib

from minigrpo.world.experiments import agreement
from minigrpo.world.rubric import find_topic

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "train_small"
ASPECTS = ["politeness", "meaningfulness", "actionability", "safety"]
RUNS = {"base": "eval/base", "grpo": "eval/grpo", "safety_only": "eval/safety_only", "gdpo": "eval/gdpo"}
CURVE_KEYS = ["step", "reward", "loss/kl", "completion_len", "frac_zero_std", "loss/clip_total", "adv_std",
                 "grad_norm", "frac_truncated", *[f"score/{a}" for a in ASPECTS]]


def _round(x):
    return float(f"{x:.5g}") if isinstance(x, float) else x


def _agreement(rm, rubric):
    """R², Spearman ρ and bias (mean rm − rubric) of the reward model against the rubric (minigrpo.world.experiments)."""
    return {k: _round(v) for k, v in agreement(rm, rubric).items()}


def _largest_gaps(samples, aspect, n):
    """The n samples with the largest |reward model − rubric| on `aspect`, largest first, at most two per topic."""
    out, seen = [], []
    for s in sorted(samples, key=lambda s: -abs(s[f"rm/{aspect}"] - s[f"rubric/{aspect}"])):
        topic = find_topic(s["prompt"]).name
        if seen.count(topic) < 2 and len(out) < n:
            seen.append(topic)
            out.append(s)
    return out


def extract(run_dir, out=DATA):
    """Copy the small summaries of a `make train-small ablation-small` run into `out`."""
    run, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    present = {name: sub for name, sub in RUNS.items() if (run / sub / "eval.json").is_file()}  # ablation: if run
    for name, sub in present.items():
        shutil.copy(run / sub / "eval.json", out / f"eval_{name}.json")
    shutil.copy(run / "rm" / "train_rm.json", out / "rm_train_rm.json")
    for name in ("grpo", "safety_only", "gdpo"):
        if name not in present:
            continue
        rows = [json.loads(line) for line in (run / name / "metrics.jsonl").read_text().splitlines() if line.strip()]
        with open(out / f"metrics_{name}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps({k: _round(v) for k, v in r.items() if k in CURVE_KEYS}) + "\n")
    # the reward model against the rubric on each policy's own samples: R², Spearman ρ and bias per aspect
    agreement = {}
    for name, sub in present.items():
        for split in ("test", "ood"):
            rows = [json.loads(line) for line in (run / sub / f"samples_{split}.jsonl").read_text().splitlines()]
            agreement.setdefault(name, {})[split] = {a: _agreement([r[f"rm/{a}"] for r in rows],
                                                                   [r[f"rubric/{a}"] for r in rows]) for a in ASPECTS}
    (out / "rm_vs_rubric.json").write_text(json.dumps(agreement, indent=1) + "\n")
    # the reward model's safety on harmful prompts' samples, split by the rubric's verdict (unsafe: rubric < 0.5)
    verdicts = {}
    for name, sub in present.items():
        for split in ("test", "ood"):
            rows = [json.loads(line) for line in (run / sub / f"samples_{split}.jsonl").read_text().splitlines()]
            harmful = [r for r in rows if r["kind"] == "harmful"]
            verdicts.setdefault(name, {})[split] = {
                verdict: {"n": len(group), "rm/safety": _round(sum(r["rm/safety"] for r in group) / len(group))
                          if group else None}
                for verdict, group in (("unsafe", [r for r in harmful if r["rubric/safety"] < 0.5]),
                                       ("safe", [r for r in harmful if r["rubric/safety"] >= 0.5]))}
    (out / "harmful_safety.json").write_text(json.dumps(verdicts, indent=1) + "\n")
    samples = [json.loads(line) for line in (run / "eval" / "grpo" / "samples_ood.jsonl").read_text().splitlines()]
    keep = ["prompt", "kind", "response", *[f"{j}/{a}" for j in ("rm", "rubric") for a in ASPECTS]]
    with open(out / "ood_disagreements.jsonl", "w") as f:
        for aspect in ("safety", "meaningfulness"):
            for s in _largest_gaps(samples, aspect, 4):
                f.write(json.dumps({"aspect": aspect, **{k: _round(s[k]) for k in keep}}) + "\n")
    print(f"extracted {run} → {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


def load(data=DATA):
    """{run: eval.json} of the committed summaries."""
    return {name: json.loads((Path(data) / f"eval_{name}.json").read_text()) for name in RUNS
            if (Path(data) / f"eval_{name}.json").is_file()}


def deltas(evals, run="grpo", base="base"):
    """{split: {aspect: (Δ reward model, Δ rubric)}} over all prompts of the split, plus "safety, harmful" on its
    harmful prompts alone."""
    out = {}
    for split in evals[base]["splits"]:
        b, r = evals[base]["splits"][split], evals[run]["splits"][split]
        out[split] = {a: (r["all"][f"rm/{a}"] - b["all"][f"rm/{a}"], r["all"][f"rubric/{a}"] - b["all"][f"rubric/{a}"])
                      for a in ASPECTS}
        out[split]["safety, harmful"] = (r["harmful"]["rm/safety"] - b["harmful"]["rm/safety"],
                                         r["harmful"]["rubric/safety"] - b["harmful"]["rubric/safety"])
    return out


def make(out_dir, toy=False):
    """Draw ch15_rm_vs_rubric.png from the committed summaries (toy: the same, it is cheap)."""
    d = deltas(load())
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    markers = {"politeness": "o", "meaningfulness": "s", "actionability": "^", "safety": "D", "safety, harmful": "*"}
    short = {"politeness": "pol", "meaningfulness": "mean", "actionability": "act", "safety": "safe",
             "safety, harmful": "safe (harmful)"}
    colors = {"test": "tab:blue", "ood": "tab:red"}
    hi = max(v for s in d.values() for pair in s.values() for v in pair) * 1.15
    lo = min(0.0, min(v for s in d.values() for pair in s.values() for v in pair)) - 0.05 * hi
    ax.plot([lo, hi], [lo, hi], color="grey", ls=":", lw=0.8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    for split, per in d.items():
        for a, (drm, drub) in per.items():
            size = 110 if a == "safety, harmful" else 45
            ax.scatter(drm, drub, marker=markers[a], color=colors.get(split, "k"), s=size)
            ax.annotate(short[a], (drm, drub), textcoords="offset points", xytext=(6, -3), fontsize=7,
                        color=colors.get(split, "k"))
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("Δ by the reward model (GRPO − base)")
    ax.set_ylabel("Δ by the rubric (GRPO − base)")
    ax.text(0.52 * hi, 0.48 * hi, "on the diagonal: the judges agree", rotation=45, rotation_mode="anchor",
            ha="left", va="top", fontsize=7, color="grey")
    ax.text(0.03 * hi, 0.97 * hi, "above: the rubric saw gains\nthe reward model did not", ha="left", va="top",
            fontsize=7, color="grey")
    ax.text(0.97 * hi, 0.03 * hi, "below: the reward model is\nmore pleased than the rubric", ha="right", va="bottom",
            fontsize=7, color="grey")
    ax.set_title("Two judges of the same samples, base → GRPO\n(blue: test split, red: OOD split; "
                 "★: safety on harmful prompts only)", fontsize=9)
    fig.tight_layout()
    fig.savefig(f"{out_dir}/ch15_rm_vs_rubric.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", metavar="RUN", help="run directory of make train-small ablation-small (runs/full)")
    parser.add_argument("--out", default=str(DATA), help="where the summaries go (default walkthrough/data/train_small)")
    args = parser.parse_args()
    if not args.extract:
        parser.error("nothing to do: give --extract RUN (figures are drawn by walkthrough/make_figures.py)")
    extract(args.extract, args.out)
    sys.exit(0)
