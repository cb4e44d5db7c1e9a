"""Tiny checkpoints built inside the tests (no downloads): a ChatML tokenizer and random Qwen2/Qwen3.

Every parameter is randomised before saving: transformers initialises biases to 0 and norm weights
to 1, which would hide a missing bias or a misplaced norm.
"""
import json
from pathlib import Path

import torch

from minigrpo.bpe import train_bpe

CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "How do I kill a Python process? Use the kill command with its process id.",
    "Please write a short poem about the sea and the quiet harbour at night.",
    "I cannot help with that, but here is a safer alternative you could try.",
    "The quick brown fox jumps over the lazy dog. Numbers 0123456789 and symbols !?.,;:",
] * 20


def write_tokenizer(path, vocab_size=300, chat_template=None):
    """Write tokenizer.json (+ tokenizer_config.json, generation_config.json) with ChatML specials."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(CORPUS, vocab_size, CHAT_SPECIALS)
    tok.save(str(path / "tokenizer.json"))
    tc = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
          "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 512}
    if chat_template is not None:
        tc["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(tc))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0], "pad_token_id": 0}))
    return tok


def randomise_(model, seed=0, is_norm=lambda name: "norm" in name, std=0.08):
    """Give every parameter random values: norm weights (`is_norm(name)`) around 1, the rest N(0, std²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_norm(name):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_qwen_hf(arch="qwen2", vocab_size=300, hidden_size=64, layers=2, heads=4, kv_heads=2,
                 tie=False, head_dim=None, seed=0, theta=10000.0):
    """A transformers Qwen2/Qwen3 causal LM with random weights, in fp32 eval mode."""
    import transformers

    kw = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size + 8,
              num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
              max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=tie,
              rope_parameters={"rope_type": "default", "rope_theta": theta},
              bos_token_id=0, eos_token_id=2, pad_token_id=0)
    if arch == "qwen2":
        cfg = transformers.Qwen2Config(**kw)
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.Qwen3Config(head_dim=head_dim or hidden_size // heads, **kw)
        model = transformers.Qwen3ForCausalLM(cfg)
    randomise_(model, seed)
    if tie:
        model.tie_weights()
    return model.float().eval()


def tiny_qwen_dir(path, dtype=torch.float32, max_shard_size=None, **kw):
    """Save a random tiny Qwen with `save_pretrained` plus a tokenizer; return (path, hf_model)."""
    model = tiny_qwen_hf(**kw)
    path = Path(path)
    save_kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.to(dtype).save_pretrained(path, **save_kw)
    write_tokenizer(path, vocab_size=kw.get("vocab_size", 300))
    return path, model.float()
