"""Chapter 15's data and figure: the results of `make train-small ablation-small`, per aspect, by both judges.

Extract (once, after the runs; a few seconds) the small summary chapters 14 and 15 read, into
walkthrough/data/train_small/:

    make train-small ablation-small            # ~7 min on an idle 2-core machine; writes runs/full/
    python walkthrough/figures/ch15.py --extract runs/full

It copies each run's eval.json (base, grpo, and safety_only and gdpo when they were run), the reward model's validation
metrics (rm/train_rm.json), the reward model's R² against the rubric on each policy's own samples
(rm_vs_rubric.json), the main columns of the GRPO runs' metrics.jsonl (`CURVE_KEYS`, rounded to 5
significant digits) and the OOD samples where the reward model and the rubric disagree most on meaningfulness.

`make(out_dir)` draws ch15_rm_vs_rubric.png from those committed files: per aspect, the change
from base to GRPO as the reward model sees it against the change the rubric measures, on the
test and the OOD split. Points far from the diagonal are where the two judges disagree.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import matplotlib

from minigrpo.world.experiments import agreement

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
    # the reward model against the rubric on each policy's own samples: R² and mean error per aspect
    agreement = {}
    for name, sub in present.items():
        for split in ("test", "ood"):
            rows = [json.loads(line) for line in (run / sub / f"samples_{split}.jsonl").read_text().splitlines()]
            agreement.setdefault(name, {})[split] = {a: _agreement([r[f"rm/{a}"] for r in rows],
                                                                   [r[f"rubric/{a}"] for r in rows]) for a in ASPECTS}
    (out / "rm_vs_rubric.json").write_text(json.dumps(agreement, indent=1) + "\n")
    samples = [json.loads(line) for line in (run / "eval" / "grpo" / "samples_ood.jsonl").read_text().splitlines()]
    gap = sorted(samples, key=lambda s: s["rubric/meaningfulness"] - s["rm/meaningfulness"])
    keep = ["prompt", "kind", "response", *[f"{j}/{a}" for j in ("rm", "rubric") for a in ASPECTS]]
    with open(out / "ood_disagreements.jsonl", "w") as f:
        for s in gap[:8]:
            f.write(json.dumps({k: _round(s[k]) for k in keep}) + "\n")
    print(f"extracted {run} → {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


def load(data=DATA):
    """{run: eval.json} of the committed summaries."""
    return {name: json.loads((Path(data) / f"eval_{name}.json").read_text()) for name in RUNS
            if (Path(data) / f"eval_{name}.json").is_file()}


def deltas(evals, run="grpo", base="base"):
    """{split: {aspect: (Δ reward model, Δ rubric)}} over all prompts of the split."""
    out = {}
    for split in evals[base]["splits"]:
        b, r = evals[base]["splits"][split]["all"], evals[run]["splits"][split]["all"]
        out[split] = {a: (r[f"rm/{a}"] - b[f"rm/{a}"], r[f"rubric/{a}"] - b[f"rubric/{a}"]) for a in ASPECTS}
    return out


def make(out_dir, toy=False):
    """Draw ch15_rm_vs_rubric.png from the committed summaries (toy: the same, it is cheap)."""
    d = deltas(load())
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    markers = {"politeness": "o", "meaningfulness": "s", "actionability": "^", "safety": "D"}
    colors = {"test": "tab:blue", "ood": "tab:red"}
    lim = max(abs(v) for s in d.values() for pair in s.values() for v in pair) * 1.15
    ax.plot([-lim, lim], [-lim, lim], color="grey", ls=":", lw=0.8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    for split, per in d.items():
        for a, (drm, drub) in per.items():
            ax.scatter(drm, drub, marker=markers[a], color=colors.get(split, "k"), s=45,
                       label=f"{split}: {a}")
            ax.annotate(a[:4], (drm, drub), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("Δ by the reward model (GRPO − base)")
    ax.set_ylabel("Δ by the rubric (GRPO − base)")
    ax.set_title("Two judges of the same samples (blue: test, red: OOD)\nbelow the diagonal: the reward model "
                 "is more pleased than the rubric", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", ncol=2)
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
