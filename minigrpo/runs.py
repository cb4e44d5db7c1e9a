"""A trainer's run directory (`minigrpo train`, `ppo`, `dpo`): check every flag first, refuse to mix
runs, resume safely.

`train` calls `validate(cfg)` (ppo and dpo call `check_run_dir`) before it reads a model or touches
`--out`, so a typo never costs the previous run's log. The rules for `--out`:
  1. A fresh run needs an empty (or new) `--out`. A used one is refused unless `--resume` (continue
     the run in it) or `--overwrite` (delete what `minigrpo train` wrote there, after the models and
     prompts have loaded; anything else in the folder makes it refuse instead).
  2. Each checkpoint records the run's settings (checkpoint/train_config.json). `--resume` compares
     them with the command's: a change to anything that shapes the samples or the updates (seed,
     batch, lr, loss, LoRA, the policy, reward model or prompts, ...) is refused, since the result
     would be neither the old run nor a new one; `FREE` settings may change and are printed.
  3. A checkpoint is written all or nothing (files.atomic_dir); a kill in the middle of its swap is
     recovered on `--resume` (files.recover_dir), and a torn last line of metrics.jsonl (a kill
     mid-write) is dropped: its step is after the checkpoint and is run again.
  4. Ctrl-C stops with one line naming the last checkpoint and how to continue (`interrupted`).
"""
import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from minigrpo.advantages import AGGREGATIONS, SCALES
from minigrpo.distributed import is_main
from minigrpo.errors import InputError
from minigrpo.files import atomic_dir, atomic_file, check_out, read_json, recover_dir
from minigrpo.flags import check_flags
from minigrpo.loss import LOSS_TYPES

FREE = ("steps", "epochs", "save_every", "threads", "release_memory", "resume", "overwrite", "out")  # may change on --resume
PATHS = ("policy", "reward_model", "prompts")  # compared as absolute paths
OUTPUTS = ("metrics.jsonl", "probes.jsonl", "train_config.json", "adapter", "checkpoint")  # what train writes (and adapter-step*)


def _ours(name, outputs=OUTPUTS):
    """Whether an entry of --out is one the trainer writes, or the temp file or folder of one of its atomic writes."""
    name = name.removeprefix(".")  # atomic writes use '.' + the output's name + a suffix
    return any(name == o or name.startswith(o + ".") for o in outputs) or name.startswith("adapter-step")


def validate(cfg):
    """Check train's flags and --out before anything is read or written; returns the checkpoint's state on --resume."""
    check_flags(cfg)
    if cfg.temperature == 0:
        raise InputError("--temperature 0: greedy decoding makes a prompt's G samples identical, so every advantage "
                         "is 0 and nothing is learned; expected a temperature > 0")
    G = cfg.group_size
    if cfg.batch_size % G:
        raise InputError(f"--batch-size {cfg.batch_size} must be a multiple of --group-size {G} (≥ 2): "
                         "advantages are computed within groups of G samples of one prompt")
    for flag, value, choices in (("--loss-type", cfg.loss_type, LOSS_TYPES), ("--aggregation", cfg.aggregation, AGGREGATIONS),
                                 ("--scale", cfg.scale, SCALES)):
        if value not in choices:
            raise InputError(f"{flag} {value!r}: expected one of {', '.join(choices)}")
    return check_run_dir(cfg)


def check_run_dir(cfg, outputs=OUTPUTS, stage="train"):
    """The --out rules above for a trainer writing `outputs`; returns the checkpoint's state on --resume, else None."""
    if cfg.resume and cfg.overwrite:
        raise InputError("--resume and --overwrite: give one (continue the run in --out, or replace it)")
    check_out(cfg.out)
    out = Path(cfg.out)
    if cfg.resume:
        return check_resume(cfg)
    used = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if used and not cfg.overwrite:
        raise InputError(f"--out {out}: already holds {', '.join(used[:4])}{' …' if len(used) > 4 else ''}; continue "
                         "that run with --resume, replace it with --overwrite, or choose another --out")
    foreign = [n for n in used if not _ours(n, outputs)]
    if foreign:
        raise InputError(f"--out {out}: --overwrite deletes only what minigrpo {stage} writes, but the folder also "
                         f"holds {', '.join(foreign[:4])}; choose another --out")
    return None


def prepare_out(cfg, outputs=OUTPUTS):
    """Create --out; with --overwrite, delete the previous run's outputs (check_run_dir found them all ours)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
        for p in out.iterdir():
            if _ours(p.name, outputs):
                shutil.rmtree(p) if p.is_dir() else p.unlink()


def run_config(cfg):
    """The settings a checkpoint records: the config, with the input paths made absolute."""
    return {**asdict(cfg), **{k: os.path.abspath(getattr(cfg, k)) for k in PATHS}}


def check_resume(cfg):
    """The checkpoint's trainer state, after checking that resuming it with these flags continues the same run."""
    ckpt = Path(cfg.out) / "checkpoint"
    if recover_dir(ckpt):
        print(f"resume: completed the checkpoint write a kill had interrupted ({ckpt})")
    if not (ckpt / "trainer_state.pt").is_file():
        raise InputError(f"{ckpt}: no checkpoint to resume from (expected trainer_state.pt; one is saved every "
                         "--save-every steps); start the run again with --overwrite")
    saved = read_json(ckpt / "train_config.json", "train_config.json (the settings of the checkpoint's run)")
    now, defaults = run_config(cfg), {f.name: f.default for f in dataclasses.fields(cfg)}
    changed, free = [], []
    for k, v in now.items():
        was = saved.get(k, defaults[k])
        if was != v:
            (free if k in FREE else changed).append(f"--{k.replace('_', '-')} {v} (was {was})")
    if changed:
        raise InputError(f"--resume: {', '.join(changed)} differ from the settings {ckpt} was trained with; the result "
                         "would be neither that run nor a new one. Resume with its settings, or start a new run")
    state = read_trainer_state(ckpt / "trainer_state.pt")
    if hasattr(cfg, "steps") and cfg.steps < state["step"]:
        raise InputError(f"--steps {cfg.steps}: the checkpoint in {ckpt} is already at step {state['step']}; "
                         f"expected --steps ≥ {state['step']}")
    for line in free:
        if not line.startswith(("--resume", "--out")):
            print(f"resume: {line}")
    return state


def read_trainer_state(path):
    """trainer_state.pt as a dict with an int 'step' and an 'optimizer' state; InputError if it is not one."""
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises several error types
        raise InputError(f"{path}: not a readable trainer state ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or not isinstance(state.get("optimizer"), dict):
        raise InputError(f"{path}: expected a dict with 'step' (int) and 'optimizer'; it was not written by a "
                         "minigrpo trainer")
    return state


def save_checkpoint(cfg, model, opt, constraint, step):
    """Adapter (PEFT layout) + optimizer and constraint state + the run's settings: all `--resume` needs, atomically."""
    from minigrpo.lora import save_adapter
    out = Path(cfg.out)
    with atomic_dir(out / "checkpoint") as tmp:
        save_adapter(model, tmp / "adapter")
        buf = io.BytesIO()  # written by Python, so a full disk is an OSError naming the file
        torch.save({"step": step, "optimizer": opt.state_dict(),
                    "constraint": constraint.state_dict() if constraint else None}, buf)
        (tmp / "trainer_state.pt").write_bytes(buf.getvalue())
        (tmp / "train_config.json").write_text(json.dumps(run_config(cfg), indent=2) + "\n")
    save_adapter(model, out / f"adapter-step{step}")


def resume(cfg, model, opt, constraint, state):
    """Restore adapter, optimizer and constraint from out/checkpoint; drop metrics rows after its step."""
    from minigrpo.lora import load_adapter
    ckpt = Path(cfg.out) / "checkpoint"
    load_adapter(model, ckpt / "adapter")
    try:
        opt.load_state_dict(state["optimizer"])
        if constraint is not None and state["constraint"] is not None:
            constraint.load_state_dict(state["constraint"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise InputError(f"{ckpt / 'trainer_state.pt'}: does not match this run's parameters ({e})") from None
    step = state["step"]
    print(f"resumed from {ckpt} at step {step}")
    if is_main():
        metrics_until(Path(cfg.out) / "probes.jsonl", step)  # probes after the checkpoint are taken again
    return step, metrics_until(Path(cfg.out) / "metrics.jsonl", step, rewrite=is_main())


def metrics_until(path, step, rewrite=True):
    """The rows of metrics.jsonl (or probes.jsonl) up to `step`, the file rewritten without later ones (they are run again)."""
    if not Path(path).is_file():
        return []
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    if not rewrite:  # a data-parallel rank other than 0: rank 0 rewrites it
        return rows
    with atomic_file(path) as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_metrics(path):
    """Rows of metrics.jsonl; a torn last line (a kill mid-write) is dropped, any other bad line is an error."""
    lines = Path(path).read_bytes().decode("utf-8", errors="replace").splitlines(keepends=True)
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) and not line.endswith("\n"):
                print(f"resume: {path}:{n}: dropped a torn last line (the run was killed while writing it)")
                break
            raise InputError(f"{path}:{n}: not valid JSON; metrics.jsonl was edited or damaged") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise InputError(f"{path}:{n}: expected a JSON object with an integer 'step'")
        rows.append(row)
    return rows


def interrupted(cfg):
    """The line Ctrl-C prints: where the last checkpoint is and how to continue from it."""
    ckpt = Path(cfg.out) / "checkpoint"
    with contextlib.suppress(Exception):
        recover_dir(ckpt)
        step = read_trainer_state(ckpt / "trainer_state.pt")["step"]
        return (f"the last checkpoint is {ckpt} (step {step}); to continue, run the same command with --resume "
                "(and without --overwrite)")
    return (f"no checkpoint was saved yet (one is saved every --save-every {cfg.save_every} steps); "
            "to start again, run the same command with --overwrite")


@contextlib.contextmanager
def at_step(step):
    """Name the training step in a FloatingPointError raised inside the block (e.g. the sampler's)."""
    try:
        yield
    except FloatingPointError as e:
        raise FloatingPointError(f"step {step}: {e}; stopping") from None


def warn_no_spread(step, diag, warned):
    """Warn, once per run, on a step where every group's rewards are equal (every advantage 0); returns `warned`."""
    if not warned and diag.get("frac_zero_std") == 1.0:
        print(f"warning: step {step}: every group's rewards are equal, so every advantage is 0 and the step learns "
              "nothing (too few --max-new-tokens, too low a --temperature, or a reward model that cannot tell the "
              "samples apart?); warned once", file=sys.stderr)
        return True
    return warned
