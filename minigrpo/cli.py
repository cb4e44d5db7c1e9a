"""The `minigrpo` command: one sub-command per pipeline stage, each built from a config dataclass.

Like CleanRL's `Args`, a stage's config dataclass *is* its command line: every field becomes a
`--flag` (underscores → dashes) whose help is the field's `metadata["help"]`. Each entry below
names the module, its config class and its entry function `fn(cfg)`.
"""
import argparse
import dataclasses
import importlib
import sys
import typing

# name: (module, config dataclass, entry function, one-line help)
SUBCOMMANDS = {
    "world": ("minigrpo.world", "WorldConfig", "make_world", "write the embedded world's prompts and data sets"),
    "train": ("minigrpo.train", "TrainConfig", "train", "multi-objective GRPO with LoRA on a frozen Qwen policy"),
    "sample": ("minigrpo.evaluate", "SampleConfig", "sample", "print completions of a policy (+ adapter)"),
    "eval": ("minigrpo.evaluate", "EvalConfig", "evaluate", "score a policy (+ adapter) with the reward model and rubric"),
    "report": ("minigrpo.report", "ReportConfig", "report", "write report.md: base vs GRPO tables and curves"),
    "tokenizer": ("minigrpo.base_policy", "TokenizerConfig", "train_tokenizer", "train the embedded world's BPE tokenizer"),
    "sft": ("minigrpo.base_policy", "SFTConfig", "train_sft", "train the tiny Qwen2 base policy by SFT"),
    "train-rm": ("minigrpo.train_rm", "TrainRMConfig", "train_rm", "train the multi-aspect reward model"),
    "ppo": ("minigrpo.train_ppo", "PPOConfig", "ppo", "PPO with a LoRA critic: the RLHF baseline GRPO drops the critic from"),
    "dpo": ("minigrpo.train_dpo", "DPOConfig", "dpo", "DPO on pairs the reward model labels: the offline baseline"),
    "compare": ("minigrpo.compare", "CompareConfig", "compare", "write compare.md: outcome and cost of GRPO, PPO, DPO"),
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
    for name, (module, cls_name, _, help_) in SUBCOMMANDS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        p = sub.add_parser(name, help=help_, description=(cls.__doc__ or help_).strip())
        add_dataclass_args(p, cls)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module, cls_name, fn_name, _ = SUBCOMMANDS[args.command]
    mod = importlib.import_module(module)
    cls = getattr(mod, cls_name)
    cfg = cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
    from minigrpo.errors import InputError
    try:
        getattr(mod, fn_name)(cfg)
    except InputError as e:  # bad user input: a clear message, not a traceback
        print(f"minigrpo {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
