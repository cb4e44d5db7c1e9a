"""The decoder against transformers: logit parity on random tiny checkpoints, padding, dtypes, cache."""
import json

import pytest
import torch

from checkpoints import tiny_qwen_dir
from minigrpo import load_policy

VOCAB = 300


def _logits_hf(hf, ids):
    with torch.no_grad():
        return hf(ids).logits.float()


CASES = {
    "qwen2-gqa": dict(arch="qwen2", heads=4, kv_heads=2),
    "qwen2-kv1": dict(arch="qwen2", heads=4, kv_heads=1),
    "qwen2-mha-tied": dict(arch="qwen2", heads=4, kv_heads=4, tie=True),
    "qwen3-gqa": dict(arch="qwen3", heads=4, kv_heads=2),
    "qwen3-kv1-tied-headdim": dict(arch="qwen3", heads=4, kv_heads=1, tie=True, head_dim=24),
    "qwen3-mha": dict(arch="qwen3", heads=4, kv_heads=4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, case):
    """Our logits equal transformers' within 1e-4 (fp32) for every architecture variant."""
    path, hf = tiny_qwen_dir(tmp_path / case, seed=len(case), **CASES[case])
    model, _ = load_policy(path)
    ids = torch.randint(0, VOCAB, (3, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(ids)
    assert ours.dtype == torch.float32 and ours.shape == (3, 13, VOCAB)
    assert (ours - _logits_hf(hf, ids)).abs().max().item() <= 1e-4


def test_rope_theta_both_spellings(tmp_path):
    """rope_theta is read from the top level (official Qwen) and from rope_parameters (transformers ≥ 5)."""
    path, hf = tiny_qwen_dir(tmp_path / "m", theta=12345.0)
    ids = torch.randint(0, VOCAB, (2, 9))
    model, _ = load_policy(path)
    a = model(ids)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["rope_parameters"]["rope_theta"] == 12345.0
    cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]  # the official Qwen2.5 spelling
    (path / "config.json").write_text(json.dumps(cfg))
    model2, _ = load_policy(path)
    b = model2(ids)
    assert model2.config.rope_theta == 12345.0
    assert torch.equal(a, b) and (a - _logits_hf(hf, ids)).abs().max() <= 1e-4


def test_sharded_checkpoint(tmp_path):
    """A checkpoint split into shards with an index loads to the same logits."""
    path, hf = tiny_qwen_dir(tmp_path / "m", max_shard_size="40KB")
    assert (path / "model.safetensors.index.json").is_file()
    assert len(list(path.glob("model-*.safetensors"))) > 1
    model, _ = load_policy(path)
    ids = torch.randint(0, VOCAB, (2, 7))
    assert (model(ids) - _logits_hf(hf, ids)).abs().max() <= 1e-4


def test_bfloat16_checkpoint(tmp_path):
    """A bf16 checkpoint loads as bf16 (dtype None keeps it), matches transformers in bf16, and fp32 within bf16 tolerance."""
    path, hf = tiny_qwen_dir(tmp_path / "m", dtype=torch.bfloat16)
    model, _ = load_policy(path)
    assert model.lm_head.weight.dtype == torch.bfloat16
    ids = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        ours = model(ids)
        hf_bf16 = hf.to(torch.bfloat16)(ids).logits.float()
    assert (ours - hf_bf16).abs().max() <= 2e-2 * hf_bf16.abs().max()
    model32, _ = load_policy(path, dtype="float32")
    assert model32.lm_head.weight.dtype == torch.float32
    ref = model32(ids)  # the same bf16-rounded weights computed in fp32
    assert (ours - ref).abs().max() <= 3e-2 * ref.abs().max()


def test_fp32_checkpoint_loaded_as_bf16(tmp_path):
    """load_policy(dtype="bfloat16") converts an fp32 checkpoint; its logits stay within bf16 tolerance."""
    path, hf = tiny_qwen_dir(tmp_path / "m")
    model, _ = load_policy(path, dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    ids = torch.randint(0, VOCAB, (2, 10))
    ref = _logits_hf(hf, ids)
    assert (model(ids) - ref).abs().max() <= 3e-2 * ref.abs().max()


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_left_padding_invariance(tmp_path, arch):
    """Each row of a left-padded batch gets, at every real position, the logits it gets alone."""
    path, _ = tiny_qwen_dir(tmp_path / arch, arch=arch)
    model, _ = load_policy(path)
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, VOCAB, (n,), generator=g) for n in (9, 4, 1, 7)]
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):], mask[i, T - len(r):] = r, 1
    with torch.no_grad():
        batch = model(ids, attention_mask=mask)
        for i, r in enumerate(rows):
            alone = model(r[None])
            assert (batch[i, T - len(r):] - alone[0]).abs().max() <= 1e-5


def test_left_padding_matches_transformers_with_positions(tmp_path):
    """With transformers given the same mask-derived positions, padded batches agree at real positions."""
    path, hf = tiny_qwen_dir(tmp_path / "m")
    model, _ = load_policy(path)
    ids = torch.randint(3, VOCAB, (2, 8))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8])
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=pos).logits
        ours = model(ids, attention_mask=mask)
    real = mask.bool()
    assert (ours[real] - ref[real]).abs().max() <= 1e-4


def test_kv_cache_matches_full_forward(tmp_path):
    """Prefill then one token at a time through the KV cache gives the full forward's logits."""
    path, _ = tiny_qwen_dir(tmp_path / "m", arch="qwen3")
    model, _ = load_policy(path)
    ids = torch.randint(3, VOCAB, (2, 10))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded row
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        cache = model.new_cache(2, 12)
        steps = [model(ids[:, :6], attention_mask=mask[:, :6], cache=cache)]
        for t in range(6, 10):
            steps.append(model(ids[:, t:t + 1], attention_mask=mask[:, t:t + 1], cache=cache))
    inc = torch.cat(steps, 1)
    real = mask.bool()
    assert (inc[real] - full[real]).abs().max() <= 1e-5
    assert cache.length == 10 and cache.seen.tolist() == [7, 10]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("variant", ["fp32", "lora", "bf16"])
def test_step_equals_forward_bit_for_bit(tmp_path, case, variant):
    """`step` (the sampler's one-token path) computes forward with T = 1 exactly: same logits, same cache.

    Rows that stopped (live False) ride along as padding, as in the sampler; with LoRA, the adapter is
    unmerged and non-zero. bf16 runs SDPA where fp32 runs decode_attention: both paths are covered.
    """
    from minigrpo import add_lora
    path, _ = tiny_qwen_dir(tmp_path / "m", **CASES[case])
    model, _ = load_policy(path, dtype="bfloat16" if variant == "bf16" else None)
    if variant == "lora":
        torch.manual_seed(0)
        add_lora(model, r=4, alpha=8)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
    ids = torch.randint(3, VOCAB, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded prompt
    caches = [model.new_cache(3, 12), model.new_cache(3, 12)]
    with torch.no_grad():
        for cache in caches:
            model(ids, attention_mask=mask, cache=cache)
        live = torch.tensor([True, True, True])
        for t in range(4):
            tok = torch.randint(3, VOCAB, (3,))
            a = model(tok[:, None], attention_mask=live[:, None].long(), cache=caches[0])[:, -1]
            b = model.step(tok, live, caches[1])
            assert torch.equal(a, b), f"step {t}: max |Δ| {(a - b).abs().max()}"
            live = live & torch.tensor([True, t != 1, True])  # row 1 stops after step 1
    for name in ("k", "v", "valid", "seen"):
        assert torch.equal(getattr(caches[0], name), getattr(caches[1], name)), name
    assert caches[0].length == caches[1].length == 11


@pytest.mark.parametrize("rows", [32, 7, 1])
def test_blocked_vocabulary_head_is_bit_identical(tmp_path, rows):
    """`head_logits` (the sampler's lm_head, a block of vocabulary rows at a time on CPU once V > 2 blocks)
    gives exactly lm_head's logits, ragged last block included, and `step` still equals forward."""
    from minigrpo.qwen import VOCAB_BLOCK
    V = 2 * VOCAB_BLOCK + 907  # three blocks, the last one short
    path, _ = tiny_qwen_dir(tmp_path / "m", vocab_size=V, tie=True)
    model, _ = load_policy(path)
    h = torch.randn(rows, model.config.hidden_size)
    with torch.no_grad():
        assert torch.equal(model.head_logits(h), model.lm_head(h))
        ids = torch.randint(3, V, (rows, 5))
        caches = [model.new_cache(rows, 8), model.new_cache(rows, 8)]
        for cache in caches:
            model(ids, cache=cache)
        tok, live = torch.randint(3, V, (rows,)), torch.ones(rows, dtype=torch.bool)
        a = model(tok[:, None], attention_mask=live[:, None].long(), cache=caches[0])[:, -1]
        assert torch.equal(a, model.step(tok, live, caches[1]))


def test_full_cache_is_refused(tmp_path):
    """A token past the cache's allocation is an error naming the sizes, from forward and from step."""
    path, _ = tiny_qwen_dir(tmp_path / "m")
    model, _ = load_policy(path)
    cache = model.new_cache(1, 4)
    with torch.no_grad():
        model(torch.randint(3, VOCAB, (1, 4)), cache=cache)
        with pytest.raises(ValueError, match="5 positions needed, cache was allocated for 4"):
            model.step(torch.tensor([5]), torch.tensor([True]), cache)
        with pytest.raises(ValueError, match="5 positions needed, cache was allocated for 4"):
            model(torch.tensor([[5]]), cache=cache)


def test_logits_to_keep(tmp_path):
    """logits_to_keep=n returns exactly the last n positions of the full logits."""
    path, _ = tiny_qwen_dir(tmp_path / "m")
    model, _ = load_policy(path)
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        assert torch.allclose(model(ids, logits_to_keep=3), model(ids)[:, -3:], atol=1e-6)


def test_parameters_frozen_after_load(tmp_path):
    """load_policy returns a frozen model in eval mode (LoRA adds the trainable parameters)."""
    path, _ = tiny_qwen_dir(tmp_path / "m", tie=True)
    model, _ = load_policy(path)
    assert not any(p.requires_grad for p in model.parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not model.training


def test_hidden_states_match_transformers(tmp_path):
    """Qwen.hidden returns transformers' last hidden state (after the final norm), whose lm_head is the logits."""
    path, hf = tiny_qwen_dir(tmp_path / "m")
    model, _ = load_policy(path)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        h = model.hidden(ids, mask)
        ref = hf(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        assert h.shape == (2, 9, 64)
        assert (h[0] - ref[0]).abs().max().item() <= 1e-4 and (h[1, 3:] - ref[1, 3:]).abs().max().item() <= 1e-4
        assert torch.allclose(model.lm_head(h).float(), model(ids, mask), atol=1e-5)
