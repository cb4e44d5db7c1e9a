"""The `minigrpo` command: one sub-command per pipeline stage, each built from a config dataclass.

Like CleanRL's `Args`, a stage's config dataclass *is* its command line: every field becomes a
`--flag` (underscores → dashes) whose help is the field's `metadata["help"]`. Each entry below
names a stage's config class and its entry function `fn(cfg)`; follow the import to read the stage.
`main` is the one place that turns failures into one line on stderr: bad input (InputError, exit
2), non-finite numbers (FloatingPointError, exit 1), a full disk (exit 1), Ctrl-C (exit 130), and
under torchrun a peer rank that stopped (exit 1; its own line says why). `train` and `ppo` run
data-parallel under `torchrun` (minigrpo/distributed.py); the other stages refuse it.
The stages are imported eagerly: every one of them imports torch, which is nearly all of the
start-up time, so importing them lazily would save nothing measurable.
"""
import argparse
import dataclasses
import errno
import sys
import typing

from minigrpo.compare import CompareConfig, compare
from minigrpo.distributed import PeerStopped, launched, leave
from minigrpo.errors import InputError
from minigrpo.evaluate import EvalConfig, SampleConfig, evaluate, sample
from minigrpo.report import ReportConfig, report
from minigrpo.train import TrainConfig, train
from minigrpo.train_dpo import DPOConfig, dpo
from minigrpo.train_ppo import PPOConfig, ppo
from minigrpo.train_rm import TrainRMConfig, train_rm
from minigrpo.world.base_policy import SFTConfig, TokenizerConfig, train_sft, train_tokenizer
from minigrpo.world.experiments import ExperimentsConfig, SeedsConfig, experiments, seeds
from minigrpo.world.generator import WorldConfig, make_world

DATA_PARALLEL = ("train", "ppo")  # the stages that run under torchrun, one process per rank
# name: (config dataclass, entry function, one-line help)
SUBCOMMANDS = {
    "world": (WorldConfig, make_world, "write the embedded world's prompts and data sets"),
    "train": (TrainConfig, train, "multi-objective GRPO with LoRA on a frozen Qwen policy"),
    "sample": (SampleConfig, sample, "print completions of a policy (+ adapter)"),
    "eval": (EvalConfig, evaluate, "score a policy (+ adapter) with the reward model (and, on world prompts, the rubric)"),
    "report": (ReportConfig, report, "write report.md: base vs runs tables and curves"),
    "tokenizer": (TokenizerConfig, train_tokenizer, "train the embedded world's BPE tokenizer"),
    "sft": (SFTConfig, train_sft, "train the embedded world's tiny Qwen2 base policy by SFT"),
    "train-rm": (TrainRMConfig, train_rm, "train the multi-aspect reward model"),
    "ppo": (PPOConfig, ppo, "PPO with a LoRA critic: the RLHF baseline GRPO drops the critic from"),
    "dpo": (DPOConfig, dpo, "DPO on pairs the reward model labels: the offline baseline"),
    "compare": (CompareConfig, compare, "write compare.md: outcome and cost of GRPO, PPO, DPO"),
    "seeds": (SeedsConfig, seeds, "write seeds.md: base vs GRPO over seeds, mean ± std (make seeds-small)"),
    "experiments": (ExperimentsConfig, experiments, "write experiments.md: group size, constraint, calibration, hacking, multi-turn"),
}


def _flag_type(tp):
    """The argparse type for a dataclass field annotation (str, int, float, bool, Optional[...])."""
    if isinstance(tp, str):
        tp = {"str": str, "int": int, "float": float, "bool": bool}.get(tp.split("|")[0].strip(), str)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def add_dataclass_args(parser, cls):
    """Add one `--flag` per field of dataclass `cls` to `parser`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()
        tp = _flag_type(hints.get(f.name, str))
        if tp is bool:
            parser.add_argument(flag, default=default, action=argparse.BooleanOptionalAction, help=help_)
        else:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            parser.add_argument(flag, type=tp, default=default, required=required,
                                help=f"{help_} (default: {default})" if not required else help_)


def build_parser():
    parser = argparse.ArgumentParser(prog="minigrpo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (cls, _, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=(cls.__doc__ or help_).strip())
        add_dataclass_args(p, cls)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    cls, fn, _ = SUBCOMMANDS[args.command]
    cfg = cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
    rank, K = launched()
    say = f"minigrpo {args.command}" + (f" (rank {rank} of {K})" if K > 1 else "")
    if K > 1 and args.command not in DATA_PARALLEL:
        print(f"{say}: error: runs in one process; only {' and '.join(DATA_PARALLEL)} run under torchrun "
              f"(here WORLD_SIZE={K}); run it without torchrun", file=sys.stderr)
        return 2
    code = _run(fn, cfg, say)
    if K > 1:  # a torchrun rank: leave now, rank 0 last, without the interpreter's teardown (distributed.leave)
        leave(code)
    return code


def _run(fn, cfg, say):
    """Run a stage; an expected failure becomes one line on stderr and an exit code."""
    try:
        fn(cfg)
    except InputError as e:  # bad user input: a clear message, not a traceback
        print(f"{say}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # NaN/inf in the model or its outputs: the stage names the step
        print(f"{say}: error: {e}", file=sys.stderr)
        return 1
    except PeerStopped as e:  # under torchrun: another rank stopped, and its own line says why
        print(f"{say}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C; train's Interrupted says where its last checkpoint is
        print(f"{say}: interrupted{f'; {e}' if str(e) else ''}", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"{say}: error: {e.filename or 'a file'}: the disk is full ({e.strerror}); outputs are written "
              "all or nothing: free some space and run the command again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
