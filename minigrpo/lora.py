"""LoRA: low-rank adapters on frozen linear layers (Hu et al. 2021, arXiv 2106.09685), PEFT-compatible.

A targeted `nn.Linear` W becomes `LoRALinear`: y = W x + b + s · B A dropout(x), with A (r, in),
B (out, r) and s = α/r (or α/√r with rsLoRA, Kalajdzievski 2023, arXiv 2312.03732). As PEFT's
`reset_lora_parameters`: A ~ kaiming_uniform(a=√5) (i.e. U(−1/√in, 1/√in)) and B = 0, so a fresh
adapter leaves every output unchanged. Only A and B train; everything else is frozen.

Names match PEFT's, so adapters move between the two with a fixed prefix and nothing else:
    ours   model.layers.0.self_attn.q_proj.lora_A.weight              (base: ….q_proj.base_layer.weight)
    PEFT   base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
`save_adapter` writes PEFT's layout (adapter_config.json + adapter_model.safetensors) and
`load_adapter` reads adapters written by PEFT (tests/test_lora.py checks both directions).

Where we depart from PEFT:
  1. One adapter per model (no adapter names), linear layers only, bias "none"; configs using
     DoRA, rank/alpha patterns, layers_to_transform, modules_to_save etc. are refused, not ignored.
  2. Merging twice is an error (PEFT warns and does nothing).
As PEFT (`autocast_adapter_dtype`), A and B are kept in fp32 when the base is bf16/fp16, and the
LoRA branch is computed in fp32 then cast to the base output's dtype.
"""
import contextlib
import json
import math
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigrpo.errors import InputError
from minigrpo.files import atomic_dir, read_json, read_tensors, safetensors_names

PREFIX = "base_model.model."  # PEFT's prefix for the wrapped causal LM's parameter names
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# adapter_config.json fields we do not implement: a true / non-empty value is refused on load
UNSUPPORTED = ("use_dora", "fan_in_fan_out", "lora_bias", "modules_to_save", "layers_to_transform",
               "rank_pattern", "alpha_pattern", "exclude_modules", "layer_replication",
               "trainable_token_indices", "target_parameters", "alora_invocation_tokens", "use_qalora")


class LoRALinear(nn.Module):
    """A frozen `base_layer` (nn.Linear) plus the trainable low-rank update s · B A."""

    def __init__(self, base, r, alpha, dropout=0.0, rslora=False):
        super().__init__()
        self.base_layer = base
        w = base.weight
        dtype = torch.float32 if w.dtype in (torch.bfloat16, torch.float16) else w.dtype
        # Built (and default-initialised) in PEFT's order, then re-initialised as PEFT does, so
        # the same torch seed gives the same A as peft.get_peft_model.
        self.lora_A = nn.Linear(base.in_features, r, bias=False, device=w.device, dtype=dtype)  # A (r, in)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=w.device, dtype=dtype)  # B (out, r)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dropout_p = dropout
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # PEFT reset_lora_parameters
        nn.init.zeros_(self.lora_B.weight)
        self.r, self.alpha, self.rslora = r, alpha, rslora
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r  # rsLoRA: α/√r; LoRA: α/r
        self.merged = False  # True while s·BA has been added into base_layer.weight
        self.disabled = False  # True inside `lora_disabled`

    def forward(self, x):
        # PEFT's Linear.forward, with the three linear layers' arithmetic called directly (F.linear is
        # what nn.Linear.forward runs): the same numbers without three module dispatches per call,
        # a noticeable share of the tiny CPU model's time (the sampler calls this 28 times a token)
        base = self.base_layer
        y = F.linear(x, base.weight, base.bias)  # (..., out)
        if self.merged or self.disabled:
            return y
        a = self.lora_A.weight
        h = x if x.dtype == a.dtype else x.to(a.dtype)  # bf16/fp16 base: the branch in fp32
        if self.dropout_p > 0:
            h = self.lora_dropout(h)  # identity in eval mode
        delta = F.linear(F.linear(h, a), self.lora_B.weight) * self.scaling  # (..., out): s · B A x
        return y + (delta if delta.dtype == y.dtype else delta.to(y.dtype))

    def delta_weight(self):
        """s · B A (out, in): what merging adds to the base weight (PEFT's get_delta_weight)."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # (out, in)

    def extra_repr(self):
        return f"r={self.r}, alpha={self.alpha}, rslora={self.rslora}, merged={self.merged}"


def lora_layers(model):
    """{module name: LoRALinear} in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _matches(name, targets):
    """PEFT's rule: a string is a regex that must match the whole module name; a list matches a
    module whose name equals an entry or ends with '.' + entry."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _targets(model, targets):
    """The (name, nn.Linear) pairs that `targets` selects, or InputError naming what matched nothing."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, targets)]
    for t in [targets] if isinstance(targets, str) else targets:  # stricter than PEFT: each must match
        if not any(_matches(n, t if isinstance(targets, str) else [t]) for n, _ in found):
            ends = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
            raise InputError(f"LoRA target '{t}' matches no linear layer of the model (their names end in {ends})")
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    for n, m in found:
        if embed is not None and m.weight is embed.weight:
            raise InputError(f"LoRA target '{n}' shares its weight with the embeddings (tied); merging would change them")
    return found


def count_parameters(model):
    """{"trainable", "total", "percent"}: parameters with requires_grad, all parameters (tied counted once)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / total}


def add_lora(model, r=16, alpha=32, dropout=0.0, targets=DEFAULT_TARGETS, rslora=False):
    """Wrap the linear layers named by `targets` in `LoRALinear` and freeze everything else.

    `targets`: module-name suffixes (e.g. "q_proj"), or one regex string matched against the whole
    module name (PEFT's rule). Returns {"trainable", "total", "percent", "modules"}.
    """
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise InputError(f"LoRA rank r is {r!r}, expected a positive integer")
    if lora_layers(model):
        raise RuntimeError("add_lora: the model already has LoRA layers (one adapter per model)")
    found = _targets(model, targets)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, linear in found:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, LoRALinear(linear, r, alpha, dropout, rslora))
    return {**count_parameters(model), "modules": len(found)}


@torch.no_grad()
def merge_lora(model):
    """Add s·BA into every base weight (the LoRA branch is then skipped). Merging twice is an error."""
    layers = lora_layers(model)
    if not layers:
        raise RuntimeError("merge_lora: the model has no LoRA layers")
    for name, m in layers.items():
        if m.merged:
            raise RuntimeError(f"merge_lora: '{name}' is already merged (call unmerge_lora first)")
    for m in layers.values():
        w = m.base_layer.weight
        w += m.delta_weight().to(w.dtype)
        m.merged = True


@torch.no_grad()
def unmerge_lora(model):
    """Subtract s·BA from every merged base weight (exact up to the weight dtype's rounding)."""
    for name, m in lora_layers(model).items():
        if not m.merged:
            raise RuntimeError(f"unmerge_lora: '{name}' is not merged")
        w = m.base_layer.weight
        w -= m.delta_weight().to(w.dtype)
        m.merged = False


@contextlib.contextmanager
def lora_disabled(model):
    """Inside the block the model is its frozen base: the reference policy at no second model's cost."""
    layers = list(lora_layers(model).values())
    merged = any(m.merged for m in layers)
    if merged:
        unmerge_lora(model)
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m in layers:
            m.disabled = False
        if merged:
            merge_lora(model)


@contextlib.contextmanager
def lora_merged(model):
    """Inside the block each adapted layer runs one matmul with a merged copy W + s·BA; on exit the
    original base weights are back, untouched (unmerging by subtraction would round them).

    For sampling (`minigrpo train --sample-merged`): on the tiny CPU model a rollout is dispatch-bound
    and the adapter branch is over a third of each layer's operations, so merged sampling is ~27%
    faster (README, "At the real vocabulary").
    The merged weights round differently from the two-branch forward, so the samples differ in
    their last bits' worth of probability from unmerged sampling (a draw near a CDF boundary can
    flip); TRL does the same when it hands merged weights to vLLM. Costs a copy of every adapted
    weight for the duration of the block. Layers already merged or disabled are left as they are.
    """
    layers = [m for m in lora_layers(model).values() if not m.merged and not m.disabled]
    originals = [m.base_layer.weight for m in layers]
    with torch.no_grad():
        for m, w in zip(layers, originals):
            m.base_layer.weight = nn.Parameter(w + m.delta_weight().to(w.dtype), requires_grad=False)
            m.merged = True
    try:
        yield model
    finally:
        for m, w in zip(layers, originals):
            m.base_layer.weight = w
            m.merged = False


def _suffix_list(model, names):
    """PEFT target_modules for the adapted `names`: their last parts if those select exactly them, else the names."""
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
    linear = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, LoRALinear))
              and not n.endswith((".base_layer", ".lora_A", ".lora_B"))]
    return suffixes if sorted(n for n in linear if _matches(n, suffixes)) == sorted(names) else sorted(names)


def save_adapter(model, path):
    """Write the adapter in PEFT's layout (adapter_config.json + adapter_model.safetensors), atomically."""
    from safetensors.torch import save
    layers = lora_layers(model)
    if not layers:
        raise RuntimeError("save_adapter: the model has no LoRA layers")
    first = next(iter(layers.values()))
    if any((m.r, m.alpha, m.rslora) != (first.r, first.alpha, first.rslora) for m in layers.values()):
        raise RuntimeError("save_adapter: LoRA layers differ in r/alpha/rslora; PEFT patterns are not supported")
    drop = first.lora_dropout.p if isinstance(first.lora_dropout, nn.Dropout) else 0.0
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": None, "revision": None,
        "inference_mode": True, "r": first.r, "lora_alpha": first.alpha, "lora_dropout": drop,
        "target_modules": _suffix_list(model, list(layers)), "bias": "none", "use_rslora": first.rslora,
        "fan_in_fan_out": False, "init_lora_weights": True, "modules_to_save": None,
        "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
        "use_dora": False,
    }
    tensors = {}
    for name, m in layers.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = m.lora_A.weight.detach().contiguous().cpu()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = m.lora_B.weight.detach().contiguous().cpu()
    with atomic_dir(path) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        # bytes written by Python: the usual 0644 permissions (save_file makes 0600) and a clean ENOSPC error
        (tmp / "adapter_model.safetensors").write_bytes(save(tensors, metadata={"format": "pt"}))


def read_adapter_config(path):
    """The fields of a PEFT LoRA adapter_config.json we use, checked; InputError names the bad field."""
    cfg_path = Path(path) / "adapter_config.json"
    raw = read_json(cfg_path, "adapter_config.json (the LoRA adapter's configuration)")
    if raw.get("peft_type") != "LORA":
        raise InputError(f"{cfg_path}: field 'peft_type' is {raw.get('peft_type')!r}, expected 'LORA'")
    r = raw.get("r")
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise InputError(f"{cfg_path}: field 'r' is {r!r}, expected a positive integer")
    alpha = raw.get("lora_alpha", 8)  # PEFT's default
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise InputError(f"{cfg_path}: field 'lora_alpha' is {alpha!r}, expected a number")
    targets = raw.get("target_modules")
    if not (isinstance(targets, str) or (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))):
        raise InputError(f"{cfg_path}: field 'target_modules' is {targets!r}, expected a list of module names or a regex string")
    if raw.get("bias", "none") != "none":
        raise InputError(f"{cfg_path}: field 'bias' is {raw['bias']!r}, expected 'none'")
    for key in UNSUPPORTED:
        if raw.get(key):
            raise InputError(f"{cfg_path}: field '{key}' is {raw[key]!r}; minigrpo supports only plain LoRA (expected it unset)")
    dropout = raw.get("lora_dropout", 0.0)
    return {"r": r, "alpha": alpha, "targets": targets, "dropout": float(dropout or 0.0),
            "rslora": bool(raw.get("use_rslora", False))}


def load_adapter(model, path):
    """Load a PEFT LoRA adapter directory into `model`, adding LoRA layers first if it has none.

    Into a model that already has LoRA layers the tensors are copied in place (an optimizer holding
    them keeps working) and the file's α / rsLoRA set the scaling. Every check runs before the
    model is touched; a missing, unexpected or wrongly shaped tensor is named in the InputError.
    """
    path = Path(path)
    cfg = read_adapter_config(path)
    file = path / "adapter_model.safetensors"
    if not file.is_file():
        hint = " (adapter_model.bin found: re-save it with safetensors)" if (path / "adapter_model.bin").is_file() else ""
        raise InputError(f"{path}: adapter_model.safetensors not found{hint}")
    layers = lora_layers(model)
    if any(m.merged for m in layers.values()):
        raise RuntimeError("load_adapter: the model's LoRA is merged; call unmerge_lora first")
    shapes = {}  # module name → (in, out, r) the model has or will have
    if layers:
        shapes = {n: (m.base_layer.in_features, m.base_layer.out_features, m.r) for n, m in layers.items()}
    else:
        shapes = {n: (m.in_features, m.out_features, cfg["r"]) for n, m in _targets(model, cfg["targets"])}
    expected = {}
    for n, (i, o, r) in shapes.items():
        expected[f"{PREFIX}{n}.lora_A.weight"] = (r, i)
        expected[f"{PREFIX}{n}.lora_B.weight"] = (o, r)
    hint = {"unexpected": " that the model has no LoRA layer for (target mismatch)",
            "missing": f": target_modules {cfg['targets']!r} select layers the file has no weights for",
            "shape": lambda key: f" (rank r = {shapes[key.removeprefix(PREFIX).rsplit('.', 2)[0]][2]})"}
    tensors = dict(read_tensors(file, {k: file for k in safetensors_names(file)}, expected, hint=hint))
    if not layers:
        add_lora(model, cfg["r"], cfg["alpha"], cfg["dropout"], cfg["targets"], cfg["rslora"])
        layers = lora_layers(model)
    with torch.no_grad():
        for n, m in layers.items():
            m.lora_A.weight.copy_(tensors[f"{PREFIX}{n}.lora_A.weight"])
            m.lora_B.weight.copy_(tensors[f"{PREFIX}{n}.lora_B.weight"])
            m.alpha, m.rslora = cfg["alpha"], cfg["rslora"]
            m.scaling = m.alpha / math.sqrt(m.r) if m.rslora else m.alpha / m.r  # as in LoRALinear
    return model
