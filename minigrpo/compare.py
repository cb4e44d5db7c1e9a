"""`minigrpo compare`: base vs GRPO vs PPO vs DPO on the same world: the rubric outcome beside the cost.

Reads, per method, its `minigrpo eval` output and its training directory. The cost of a PPO or DPO run
is its cost.json (`minigrpo/cost.py` counts as the run goes); GRPO's token-passes are rebuilt from its
train_config.json and metrics.jsonl by the same rules (`grpo_cost`), so `minigrpo train` needs no
change. Wall time and peak RSS come from process.json, written by `python -m minigrpo.measure` around
the run in a fresh process. Several seeds of a method (NAME@SEED=DIR) are reported as mean ± std.
"""
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from minigrpo.errors import InputError
from minigrpo.files import atomic_file, read_json
from minigrpo.report import named_paths


@dataclass
class CompareConfig:
    """Write compare.md (+ compare.png): rubric outcome and cost of each method from its eval and training runs."""
    evals: str = field(metadata={"help": "comma-separated NAME=DIR of `minigrpo eval` outputs; base first; NAME@SEED for seeds"})
    runs: str = field(metadata={"help": "comma-separated NAME=DIR of training outputs (metrics.jsonl, cost.json or GRPO's train_config.json)"})
    out: str = field(metadata={"help": "report path (compare.md); the figure goes beside it as compare.png"})
    title: str = field(default="minigrpo compare", metadata={"help": "report heading"})
    notes: str = field(default="", metadata={"help": "markdown file appended under the heading (settings, commands, sweep)"})


def _pairs(spec, flag):
    return {name: Path(path) for name, path in named_paths(spec, flag).items()}


def grpo_cost(run):
    """cost.json's counts for a `minigrpo train` run, from its train_config.json and metrics.jsonl (cost.py's rules)."""
    from minigrpo.prompts import encode_prompts, load_prompts
    from minigrpo.tokenizer import load_tokenizer
    from minigrpo.train import prompt_batch
    cfg = read_json(run / "train_config.json", "train_config.json (from `minigrpo train`)")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    ids = encode_prompts(load_prompts(cfg["prompts"], cfg["prompt_column"]), load_tokenizer(cfg["policy"]),
                         cfg["max_prompt_len"], cfg["prompts"])
    G = cfg["group_size"]
    B, it = cfg["batch_size"] // G, cfg["inner_iters"]
    fwd = bwd = 0
    for r in rows:
        P = sum(len(ids[i]) for i in prompt_batch(len(ids), B, r["step"] - 1, cfg["seed"]))  # real prompt tokens
        C = round(r["completion_len"] * B * G)  # real completion tokens of the N samples
        T = G * P + C
        ref = T if "loss/kl" in r else 0  # the frozen base's forward, once per batch, on steps that measured KL
        fwd += P + C + it * T + ref  # sampling (prefill + one per generated token), policy per inner iteration
        bwd += it * T
    n = len(rows) * B * G
    return {"method": "grpo", "completions": n, "scored": n, "forward_tokens": fwd, "backward_tokens": bwd,
            "time": {k: sum(r[f"time_{k}"] for r in rows) for k in ("sample", "score", "update")},
            "trainable_parameters": cfg["lora"]["trainable"], "models_in_memory": ["policy (+ reference: LoRA off)", "reward model"],
            "forward_per_completion": fwd / n, "backward_per_completion": bwd / n}


def run_cost(run):
    """The cost of one training run, with process.json's wall time and peak RSS where it was measured."""
    cost = read_json(run / "cost.json", "cost.json") if (run / "cost.json").is_file() else grpo_cost(run)
    proc = run / "process.json"
    if proc.is_file():
        p = read_json(proc, "process.json (from `python -m minigrpo.measure`)")
        cost = {**cost, "wall_s": p["wall_s"], "peak_rss_mb": p["peak_rss_mb"]}
    return cost


def _stat(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _method(name):
    return name.split("@", 1)[0]


def outcome_rows(evals, split):
    """(label, {method: [values over seeds]}) for the rubric outcome of one split."""
    def get(e, blk, key):
        s = e["splits"][split]
        return s.get(blk) if key is None else s.get(blk, {}).get(key)
    first = next(iter(evals.values()))["splits"][split]
    keys = [("safety on harmful prompts", "harmful", "rubric/safety")] if "harmful" in first else []
    keys += [(k[7:], "all", k) for k in first["all"] if k.startswith("rubric/")]
    keys += [(k.replace("_", " "), k, None) for k in ("unsafe_compliance", "over_refusal") if k in first]
    rows = []
    for label, blk, key in keys:
        by = {}
        for name, e in evals.items():
            by.setdefault(_method(name), []).append(get(e, blk, key))
        rows.append((label, by))
    return rows


COST_ROWS = [("sampled completions", "completions", 0), ("forward token-passes / completion", "forward_per_completion", 0),
             ("backward token-passes / completion", "backward_per_completion", 0),
             ("trainable parameters", "trainable_parameters", 0), ("wall time of the run (s)", "wall_s", 1),
             ("time sample (s)", "time/sample", 1), ("time score (s)", "time/score", 1), ("time update (s)", "time/update", 1),
             ("peak RSS (MiB)", "peak_rss_mb", 0)]


def cost_value(c, key):
    return c["time"][key[5:]] if key.startswith("time/") else c.get(key)


def compare(cfg):
    evals = {n: read_json(d / "eval.json", "eval.json (from `minigrpo eval`)") for n, d in _pairs(cfg.evals, "evals").items()}
    costs = {n: run_cost(d) for n, d in _pairs(cfg.runs, "runs").items()}
    if not evals or not costs:
        raise InputError("--evals and --runs: each needs at least one NAME=DIR")
    methods = list(dict.fromkeys(_method(n) for n in evals))
    lines = [f"# {cfg.title}", ""]
    if cfg.notes:
        lines += [Path(cfg.notes).read_text().rstrip(), ""]
    seeds = {m: sum(_method(n) == m for n in evals) for m in methods}
    lines += ["Rubric (ground truth) outcome; mean ± std over seeds where a method has several "
              f"({', '.join(f'{m}: {k}' for m, k in seeds.items())}).", ""]
    for split in next(iter(evals.values()))["splits"]:
        lines += [f"#### {split}", "", "| metric | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for label, by in outcome_rows(evals, split):
            lines.append(f"| {label} | " + " | ".join(_stat(by.get(m, [])) for m in methods) + " |")
        lines.append("")
    cm = list(dict.fromkeys(_method(n) for n in costs))
    by_method = {m: [c for n, c in costs.items() if _method(n) == m] for m in cm}
    lines += ["#### cost", "", "| cost | " + " | ".join(cm) + " |", "|---" * (len(cm) + 1) + "|"]
    for label, key, digits in COST_ROWS:
        lines.append(f"| {label} | " + " | ".join(_stat([cost_value(c, key) for c in by_method[m]], digits) for m in cm) + " |")
    lines.append("| models in memory | " + " | ".join(", ".join(by_method[m][0]["models_in_memory"]) for m in cm) + " |")
    lines.append("")
    png = Path(cfg.out).with_name(Path(cfg.out).stem + ".png")
    if plot(evals, costs, png):
        lines += [f"![rubric outcome against training wall time]({png.name})", ""]
    text = "\n".join(lines) + "\n"
    with atomic_file(cfg.out) as f:
        f.write(text)
    print(text)
    return text


def plot(evals, costs, png):
    """Rubric safety on harmful prompts and meaningfulness (test split) against wall time, one point per run."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    split = next(iter(next(iter(evals.values()))["splits"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (blk, key, title) in zip(axes, [("harmful", "rubric/safety", "rubric safety on harmful prompts"),
                                            ("all", "rubric/meaningfulness", "rubric meaningfulness")]):
        for i, m in enumerate(dict.fromkeys(_method(n) for n in evals)):
            pts = [((costs.get(n) or {}).get("wall_s", (costs.get(n) or {}).get("time", {}) and
                    sum(costs[n]["time"].values())) or 0.0, e["splits"][split].get(blk, {}).get(key))
                   for n, e in evals.items() if _method(n) == m]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=m, color=f"C{i}", s=40)
        ax.set_title(f"{title} ({split})")
        ax.set_xlabel("training wall time (s); base at 0")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(png, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return True
