"""Load a Qwen2/Qwen2.5/Qwen3 checkpoint directory in the Hugging Face layout, strictly and frugally.

A directory holds `config.json`, the weights (`model.safetensors`, or shards listed by
`model.safetensors.index.json`) and the tokenizer files (see minigrpo/tokenizer.py).

Strict: every tensor the model needs must be in the files with the right shape, and nothing else
may be (transformers' own tolerated extras aside: a tied `lm_head.weight`, rotary `inv_freq`).
Frugal: the model is built on the `meta` device (no memory), then each tensor is read from the
memory-mapped file and put in place, so peak memory stays near one copy of the model.
"""
import json
from pathlib import Path, PurePosixPath

import torch

from minigrpo.errors import InputError
from minigrpo.files import read_json, read_model_config, read_tensors, safetensors_names
from minigrpo.qwen import Qwen, QwenConfig

SUPPORTED = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _field(raw, name, path, kind=(int,), default=None):
    """Read a config field, or raise naming the file, the field, what was found and expected.

    Integer fields are sizes and counts: they must be positive.
    """
    if name not in raw:
        if default is not None:
            return default
        raise InputError(f"{path}: missing field '{name}'")
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InputError(f"{path}: field '{name}' is {value!r}, expected {' or '.join(k.__name__ for k in kind)}")
    if kind == (int,) and value < 1:
        raise InputError(f"{path}: field '{name}' is {value!r}, expected a positive integer")
    return value


def load_config(path):
    """Read `config.json` of a checkpoint directory into a QwenConfig (sizes never come from elsewhere)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: checkpoint directory not found")
    raw, cfg_path, arch = read_model_config(path, SUPPORTED)
    family = SUPPORTED[arch]
    if raw.get("hidden_act", "silu") != "silu":
        raise InputError(f"{cfg_path}: hidden_act '{raw['hidden_act']}' is not supported; expected 'silu'")
    if raw.get("use_sliding_window"):
        raise InputError(f"{cfg_path}: use_sliding_window=true is not supported (Qwen2.5 ships with it off)")
    # rope_theta: official Qwen configs keep it at the top level; transformers ≥ 5 writes rope_parameters
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise InputError(f"{cfg_path}: field 'rope_parameters' / 'rope_scaling' is {rope!r}, expected an object")
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise InputError(f"{cfg_path}: RoPE scaling {rope!r} is not supported; expected rope_type 'default'")
    theta = raw.get("rope_theta", rope.get("rope_theta"))
    if not isinstance(theta, (int, float)) or isinstance(theta, bool):
        raise InputError(f"{cfg_path}: rope_theta not found at the top level nor in rope_parameters")
    H = _field(raw, "hidden_size", cfg_path)
    nh = _field(raw, "num_attention_heads", cfg_path)
    nkv = _field(raw, "num_key_value_heads", cfg_path, default=nh)
    if nh % nkv:
        raise InputError(f"{cfg_path}: num_attention_heads={nh} is not a multiple of num_key_value_heads={nkv}")
    head_dim = _field(raw, "head_dim", cfg_path) if raw.get("head_dim") is not None else H // nh
    return QwenConfig(
        vocab_size=_field(raw, "vocab_size", cfg_path),
        hidden_size=H,
        intermediate_size=_field(raw, "intermediate_size", cfg_path),
        num_hidden_layers=_field(raw, "num_hidden_layers", cfg_path),
        num_attention_heads=nh,
        num_key_value_heads=nkv,
        head_dim=head_dim,
        rms_norm_eps=float(_field(raw, "rms_norm_eps", cfg_path, (int, float), 1e-6)),
        rope_theta=float(theta),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=bool(raw.get("attention_bias", family == "qwen2")),
        qk_norm=family == "qwen3",
        max_position_embeddings=int(raw.get("max_position_embeddings", 32768)),
    )


def weight_files(path):
    """Map tensor name → safetensors file, from the index of a sharded save or the single file."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, "safetensors index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(f"{index}: missing or empty 'weight_map'")
        bad = next((v for v in weight_map.values() if not isinstance(v, str)), None)
        if bad is not None:
            raise InputError(f"{index}: 'weight_map' value {bad!r} is not a file name")
        for shard in sorted(set(weight_map.values())):
            parts = PurePosixPath(shard.replace("\\", "/"))
            if parts.is_absolute() or ".." in parts.parts:  # an index may only name files inside the checkpoint
                raise InputError(f"{index}: shard '{shard}' is outside the checkpoint directory; expected a file in {path}")
            if not (path / shard).is_file():
                raise InputError(f"{index}: names shard '{shard}', which is not in {path}")
        return {name: path / shard for name, shard in weight_map.items()}
    single = path / "model.safetensors"
    if not single.is_file():
        raise InputError(f"{path}: no model.safetensors nor model.safetensors.index.json")
    return {name: single for name in safetensors_names(single)}


def load_weights(model, path, dtype=None):
    """Fill a model built on the meta device from the safetensors files, tensor by tensor.

    dtype None keeps each tensor's stored dtype; a dtype converts each tensor as it is read.
    Raises InputError for a missing, unexpected or wrongly shaped tensor, naming it.
    """
    expected = {n: p.shape for n, p in model.named_parameters(remove_duplicate=False)}
    tied = model.config.tie_word_embeddings
    if tied:
        expected.pop("lm_head.weight")
    files = weight_files(path)
    if tied:  # a tied checkpoint may still store lm_head.weight; it is the embedding and is not read
        files.pop("lm_head.weight", None)
    files = {n: f for n, f in files.items() if not n.endswith("rotary_emb.inv_freq")}  # a buffer, recomputed
    for name, t in read_tensors(path, files, expected):
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        module._parameters[attr] = torch.nn.Parameter(t if dtype is None else t.to(dtype), requires_grad=False)


def load_policy(path, dtype=None, device="cpu"):
    """Load `(model, tokenizer)` from a Hugging Face checkpoint directory of Qwen2/Qwen2.5/Qwen3.

    dtype None keeps the checkpoint's dtype; "float32"/"bfloat16"/"float16" (or a torch.dtype)
    converts. Parameters come back frozen (requires_grad False): LoRA adds the trainable ones.
    """
    from minigrpo.tokenizer import load_tokenizer

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InputError(f"dtype '{dtype}' is not supported; expected one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    cfg = load_config(path)
    tokenizer = load_tokenizer(path)
    with torch.device("meta"):
        model = Qwen(cfg)
    load_weights(model, path, dtype)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    # dtype None: the checkpoint's dtype is that of its embedding (a few fp32 norms follow it)
    model = model.to(device=device, dtype=dtype or model.model.embed_tokens.weight.dtype)
    model.eval()
    return model, tokenizer


def save_policy(model, tokenizer_dir, path, extra_files=None):
    """Write a model in the Hugging Face layout (config.json + model.safetensors), atomically.

    Used by the embedded world to save its tiny base policy, so that `transformers` loads it too.
    The tokenizer files are copied from `tokenizer_dir`; `extra_files` maps file name → text.
    """
    import shutil

    from safetensors.torch import save

    from minigrpo.files import atomic_dir
    c = model.config
    config = {
        "architectures": ["Qwen3ForCausalLM" if c.qk_norm else "Qwen2ForCausalLM"],
        "model_type": "qwen3" if c.qk_norm else "qwen2",
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim,
        "hidden_act": "silu", "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_word_embeddings, "max_position_embeddings": c.max_position_embeddings,
        "use_sliding_window": False, "attention_dropout": 0.0,
        "torch_dtype": str(model.lm_head.weight.dtype).removeprefix("torch."),
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if c.tie_word_embeddings:
        state.pop("lm_head.weight")
    with atomic_dir(path) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "model.safetensors").write_bytes(save(state, metadata={"format": "pt"}))  # 0644, as every output
        for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copy(Path(tokenizer_dir) / name, tmp / name)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
