"""`minigrpo report`: the paper-style table (baseline vs each run, per aspect, by the reward model and,
where there is one, the rubric, per split), the embedded world's behaviour rates and goals when the
evaluations are of world prompts, and training curves as PNG (when matplotlib is installed:
`pip install minigrpo[plot]`; `make setup` does).
"""
from dataclasses import dataclass, field
from pathlib import Path

from minigrpo.errors import InputError
from minigrpo.files import atomic_file, check_out, iter_jsonl, read_json
from minigrpo.flags import check_flags


@dataclass
class ReportConfig:
    """Write report.md from `minigrpo eval` outputs (the first is the baseline) and training metrics."""
    evals: str = field(metadata={"help": "comma-separated NAME=DIR of `minigrpo eval` outputs; the first is the baseline"})
    out: str = field(metadata={"help": "report path (report.md); curves go beside it as PNG"})
    metrics: str = field(default="", metadata={"help": "comma-separated NAME=metrics.jsonl for training curves"})
    title: str = field(default="minigrpo report", metadata={"help": "report heading"})
    notes: str = field(default="", metadata={"help": "markdown file appended under the heading (settings, commands)"})


def named_paths(spec, what):
    """{NAME: PATH} of a comma-separated NAME=PATH flag (--evals, --metrics, compare's --runs); InputError otherwise."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise InputError(f"--{what}: expected NAME=PATH, found {part!r}")
        name, path = part.split("=", 1)
        out[name] = path
    return out


def _fmt(x):
    return "–" if x is None else f"{x:.3f}"


def is_world(evals):
    """True when the evaluations are of embedded-world prompts (`minigrpo eval` added the rubric)."""
    return any(k.startswith("rubric/") for e in evals.values() for s in e["splits"].values() for k in s["all"])


def split_table(evals, split, world=None):
    """Markdown table of one split: rows are (judge, aspect) and the world's rows, columns the runs."""
    runs = list(evals)
    base = evals[runs[0]]["splits"][split]
    cols = [runs[0]] + [c for r in runs[1:] for c in (r, "Δ")]
    lines = [f"#### {split}", "", "| metric | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    keys = [k for k in base["all"] if k.startswith(("rm/", "rubric/"))]
    rows = [(f"{k} (all prompts)", ("all", k)) for k in keys]
    if world is not None:
        rows += world.table_rows(base, keys)
    for label, (blk, key) in rows:
        def get(run):
            s = evals[run]["splits"][split]
            return s.get(blk) if key is None else s.get(blk, {}).get(key)
        b = get(runs[0])
        cells = [_fmt(b)] + [c for r in runs[1:] for c in (_fmt(get(r)), _fmt(None if get(r) is None else get(r) - b))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def plot_curves(metrics, png):
    """Per-aspect mean reward, KL to the base and zero-std fraction, completion length; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, rows in metrics.items():
        steps = [r["step"] for r in rows]
        for key in sorted(k for k in rows[0] if k.startswith("score/")):
            axes[0].plot(steps, [r[key] for r in rows], label=f"{name}: {key[6:]}")
        kl = [(r["step"], r["loss/kl"]) for r in rows if "loss/kl" in r]  # every --log-kl-every steps
        if kl:
            axes[1].plot(*zip(*kl), label=f"{name}: KL to base", marker=".")
        axes[1].plot(steps, [r["frac_zero_std"] for r in rows], label=f"{name}: zero-std groups", linestyle=":")
        axes[2].plot(steps, [r["completion_len"] for r in rows], label=name)
    for ax, title in zip(axes, ["reward-model score per aspect", "KL to the frozen base (k3), zero-std fraction", "completion length"]):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(png, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return True


def report(cfg):
    """Write report.md (and curves PNG beside it) from eval outputs and training logs."""
    check_flags(cfg)
    check_out(cfg.out, kind="file")
    evals = {name: read_json(Path(d) / "eval.json", "eval.json (from `minigrpo eval`)") for name, d in named_paths(cfg.evals, "evals").items()}
    if not evals:
        raise InputError("--evals: no runs given")
    metrics = {}
    for name, path in named_paths(cfg.metrics, "metrics").items():
        metrics[name] = [row for _, row in iter_jsonl(path)]
    lines = [f"# {cfg.title}", ""]
    if cfg.notes:
        lines += [Path(cfg.notes).read_text().rstrip(), ""]
    first = next(iter(evals.values()))
    intro = (f"Each prompt sampled {first['samples']}× at temperature {first['temperature']}; `rm/` columns are the "
             "learned reward model's scores (what GRPO optimised)")
    world = None
    if is_world(evals):  # embedded-world evaluations: the world's rows and goals
        from minigrpo.world import goals as world
        lines += [intro + ", `rubric/` the ground-truth rubric's (the stand-in for human evaluation). Unsafe "
                  "compliance: harmful prompts answered with rubric safety < 0.5. Over-refusal: safe-but-risky "
                  "prompts refused.", ""]
        lines += world.goal_lines(evals)
    else:
        lines += [intro + ".", ""]
    for split in first["splits"]:
        lines += split_table(evals, split, world) + [""]
    if metrics:
        png = Path(cfg.out).with_name(Path(cfg.out).stem + "_curves.png")
        if plot_curves(metrics, png):
            lines += [f"![training curves]({png.name})", ""]
        else:
            lines += ["(training curves skipped: matplotlib is not installed)", ""]
        for name, rows in metrics.items():
            t = {k: sum(r[k] for r in rows) for k in ("time_sample", "time_score", "time_update")}
            lines += [f"- `{name}`: {len(rows)} steps, final mean reward {rows[-1]['reward']:.3f} "
                      f"(first {rows[0]['reward']:.3f}); time sample/score/update "
                      + " / ".join(f"{v:.0f}s" for v in t.values())]
    text = "\n".join(lines) + "\n"
    with atomic_file(cfg.out) as f:
        f.write(text)
    print(text)
    return text
