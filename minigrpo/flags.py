"""The ranges of the stages' numeric flags, checked before a stage reads or writes anything.

Every stage's config dataclass is its command line (minigrpo/cli.py); the same field names mean
the same thing in every stage, so one table of ranges serves them all. `check_flags(cfg)` is the
first line of every stage function, so `train(cfg)` called from Python is checked as the command
is. A stage checks what depends on more than one flag itself (e.g. batch size a multiple of G).
"""
import dataclasses
import math

import torch

from minigrpo.errors import InputError

INF = math.inf
# field name → (low, high, low included, high included); None values (an unset optional flag) pass
RANGES = {
    **dict.fromkeys(("steps", "batch_size", "epochs", "max_len", "max_prompt_len", "max_new_tokens", "samples",
                     "limit", "batch_prompts", "inner_iters", "save_every", "lora_r", "vocab_size", "hidden_size",
                     "layers", "heads", "kv_heads", "intermediate_size", "train", "sft_per_prompt",
                     "rm_per_prompt", "minibatches", "ppo_epochs", "sample_batch", "probe_every"), (1, INF, True, False)),
    **dict.fromkeys(("seed", "threads", "test", "ood", "micro_batch", "top_k", "warmup", "epsilon", "epsilon_high", "beta",
                     "weight_decay", "temperature", "kl_coef", "vf_coef", "cliprange", "cliprange_value",
                     "max_prompts", "multiturn"), (0, INF, True, False)),
    **dict.fromkeys(("lr", "safety_lr", "lora_alpha"), (0, INF, False, False)),
    **dict.fromkeys(("edit_frac", "label_noise", "safety_threshold", "gamma", "lam"), (0, 1, True, True)),
    **dict.fromkeys(("lora_dropout", "val_frac"), (0, 1, True, False)),
    "group_size": (2, INF, True, False),  # advantages compare samples within a group
    "top_p": (0, 1, False, True),
}
DTYPES = ("float32", "bfloat16", "float16")


def interval(low, high, low_in, high_in):
    """'[1, ∞)'-style text of a range."""
    return f"{'[' if low_in else '('}{low}, {'∞' if high == INF else high}{']' if high_in else ')'}"


def check_flags(cfg):
    """InputError naming the first flag of `cfg` outside its range (RANGES), or a bad --device / --dtype."""
    for f in dataclasses.fields(cfg):
        value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        if f.name in RANGES and value is not None:
            low, high, low_in, high_in = RANGES[f.name]
            integer = f.type in (int, "int")
            kind = "an integer" if integer else "a number"
            ok = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
                  and math.isfinite(value) and (low <= value if low_in else low < value)
                  and (value <= high if high_in else value < high))
            if not ok:
                raise InputError(f"{flag} {value!r}: expected {kind} in {interval(*RANGES[f.name])}")
    device = getattr(cfg, "device", None)
    if device is not None:
        check_device(device)
    dtype = getattr(cfg, "dtype", None)
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")


def check_device(device):
    """InputError unless `device` names a torch device this machine has ('cpu', 'cuda', 'cuda:1', 'mps')."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device {device!r}: not a device; expected cpu or cuda (cuda:N)") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                             f"{'built without CUDA' if torch.version.cuda is None else 'no GPU found'}); use --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif d.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device}: MPS is not available here; use --device cpu")
    elif d.type not in ("cpu", "mps"):
        raise InputError(f"--device {device}: expected cpu or cuda")
