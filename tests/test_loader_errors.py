"""Bad checkpoints give a InputError naming the file and what was expected, never a deep traceback."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoints import tiny_qwen_dir
from minigrpo import InputError, load_policy


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path, _ = tiny_qwen_dir(tmp_path_factory.mktemp("good") / "m")
    return path


@pytest.fixture
def ckpt(good, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(good, dst)
    return dst


def _raises(path, *fragments):
    with pytest.raises(InputError) as e:
        load_policy(path)
    for f in fragments:
        assert f in str(e.value), str(e.value)
    return str(e.value)


def test_missing_directory(tmp_path):
    """A directory that does not exist is named as such."""
    _raises(tmp_path / "nope", "nope", "not found")


def test_missing_config(ckpt):
    """A checkpoint without config.json says which file is missing."""
    (ckpt / "config.json").unlink()
    _raises(ckpt, "config.json", "not found")


def test_config_not_json(ckpt):
    (ckpt / "config.json").write_text("{ not json")
    _raises(ckpt, "config.json", "not valid JSON")


def test_unsupported_architecture(ckpt):
    """An unsupported architecture lists the supported ones."""
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    _raises(ckpt, "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def test_missing_config_field(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["hidden_size"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    _raises(ckpt, "config.json", "hidden_size")


def test_rope_scaling_refused(ckpt):
    """A RoPE scaling we do not implement is refused, not silently ignored."""
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    _raises(ckpt, "yarn", "not supported")


def test_truncated_safetensors(ckpt):
    """A truncated weights file is reported as such, naming the file."""
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    _raises(ckpt, "model.safetensors")


def test_corrupt_header(ckpt):
    f = ckpt / "model.safetensors"
    f.write_bytes(b"\xff" * 64)
    _raises(ckpt, "model.safetensors", "not a readable safetensors file")


def test_missing_tensor(ckpt):
    """A missing tensor is named."""
    sd = load_file(ckpt / "model.safetensors")
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, ckpt / "model.safetensors")
    _raises(ckpt, "missing tensors", "model.layers.1.mlp.up_proj.weight")


def test_unexpected_tensor(ckpt):
    sd = load_file(ckpt / "model.safetensors")
    sd["model.layers.0.extra.weight"] = torch.zeros(3)
    save_file(sd, ckpt / "model.safetensors")
    _raises(ckpt, "unexpected tensors", "model.layers.0.extra.weight")


def test_wrong_shape(ckpt):
    """A wrongly shaped tensor names the tensor, the found and the expected shape."""
    sd = load_file(ckpt / "model.safetensors")
    sd["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(7, 64)
    save_file(sd, ckpt / "model.safetensors")
    msg = _raises(ckpt, "model.layers.0.self_attn.k_proj.weight", "(7, 64)")
    assert "expected (32, 64)" in msg


def test_index_names_missing_shard(tmp_path):
    """A sharded index naming an absent shard names that shard."""
    path, _ = tiny_qwen_dir(tmp_path / "m", max_shard_size="40KB")
    shard = sorted(path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    _raises(path, "model.safetensors.index.json", shard.name)


def test_no_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    _raises(ckpt, "no model.safetensors")


def test_tokenizer_missing(ckpt):
    (ckpt / "tokenizer.json").unlink()
    _raises(ckpt, "tokenizer.json", "not found")


def test_tokenizer_without_chat_tokens(ckpt):
    """A tokenizer lacking the ChatML special tokens is refused, naming them."""
    from minigrpo.bpe import train_bpe
    train_bpe(["plain text only"] * 5, 280, ["<|endoftext|>"]).save(str(ckpt / "tokenizer.json"))
    _raises(ckpt, "tokenizer.json", "<|im_start|>")


def test_bad_dtype(ckpt):
    with pytest.raises(InputError, match="float64"):
        load_policy(ckpt, dtype="float64")
