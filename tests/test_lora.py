"""LoRA against peft: adapters cross over both ways with equal logits; merge, disable, init, gradients, errors.

Tests marked `exercise` also grade walkthrough/exercises/lora.py (lora_forward, lora_merge) through
tests/adapters.py; the reference side runs the package's LoRALinear and merge_lora.
"""
import json
import math
import re

import pytest
import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import adapters
from checkpoints import tiny_qwen_dir
from minigrpo import (InputError, add_lora, load_adapter, load_policy, lora_disabled, merge_lora, save_adapter,
                      unmerge_lora)
from minigrpo.lora import LoRALinear, lora_layers, lora_merged

VOCAB = 300
IDS = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_qwen_dir(tmp_path_factory.mktemp("q2") / "m", arch="qwen2", seed=5)


def _randomise_lora(model, seed=0):
    """Give A and B random values: a fresh adapter (B = 0) would hide every bug in the LoRA branch."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_A.weight.copy_(torch.randn(m.lora_A.weight.shape, generator=g) * 0.3)
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * 0.3)


def _peft_model(hf, **kw):
    import copy

    import peft
    return peft.get_peft_model(copy.deepcopy(hf), peft.LoraConfig(task_type="CAUSAL_LM", **kw)).eval()


@pytest.mark.parametrize("rslora", [False, True])
def test_minigrpo_adapter_loads_in_peft(tmp_path, ckpt, rslora):
    """An adapter saved by minigrpo, loaded by peft on the transformers model, gives the same logits."""
    import peft
    path, hf = ckpt
    model, _ = load_policy(path)
    add_lora(model, r=4, alpha=12, targets=("q_proj", "v_proj", "down_proj"), rslora=rslora)
    _randomise_lora(model)
    save_adapter(model, tmp_path / "ad")
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and cfg["bias"] == "none"
    assert (cfg["r"], cfg["lora_alpha"], cfg["use_rslora"]) == (4, 12, rslora)
    assert sorted(cfg["target_modules"]) == ["down_proj", "q_proj", "v_proj"]
    keys = load_file(tmp_path / "ad" / "adapter_model.safetensors")
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys and len(keys) == 2 * 3 * 2
    pm = peft.PeftModel.from_pretrained(_copy(hf), tmp_path / "ad").eval()
    with torch.no_grad():
        theirs, ours = pm(IDS).logits, model(IDS)
        base = hf(IDS).logits
    assert (ours - base).abs().max() > 1e-2  # the adapter does change the outputs
    assert (ours - theirs).abs().max() <= 1e-4


def _copy(hf):
    import copy
    return copy.deepcopy(hf)


@pytest.mark.parametrize("arch,targets", [("qwen2", ["q_proj", "k_proj", "o_proj", "gate_proj", "up_proj"]),
                                          ("qwen3", r".*\.layers\.1\..*_proj")])
def test_peft_adapter_loads_in_minigrpo(tmp_path, arch, targets):
    """An adapter written by peft (list or regex target_modules) loads into minigrpo with the same logits."""
    path, hf = tiny_qwen_dir(tmp_path / "m", arch=arch, seed=9)
    pm = _peft_model(hf, r=3, lora_alpha=7, target_modules=targets, use_rslora=arch == "qwen3")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    pm.save_pretrained(tmp_path / "ad")
    model, _ = load_policy(path)
    load_adapter(model, tmp_path / "ad")
    n_peft = sum(1 for n, m in pm.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    assert len(lora_layers(model)) == n_peft > 0
    with torch.no_grad():
        assert (model(IDS) - pm(IDS).logits).abs().max() <= 1e-4


def test_init_and_counts_match_peft(ckpt):
    """With the same torch seed, A equals peft's A (kaiming-uniform, a=√5), B = 0; trainable counts agree."""
    path, hf = ckpt
    model, _ = load_policy(path)
    torch.manual_seed(42)
    info = add_lora(model, r=4, alpha=8)
    torch.manual_seed(42)
    pm = _peft_model(hf, r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"])
    theirs = {n.replace("base_model.model.", "").replace(".default", ""): p
              for n, p in pm.named_parameters() if "lora_" in n}
    ours = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert sorted(ours) == sorted(theirs) and len(ours) == 2 * 7 * 2
    for n, p in ours.items():
        assert torch.equal(p, theirs[n]), n
        if "lora_A" in n:  # kaiming_uniform(a=√5) is U(−1/√in, 1/√in)
            assert p.abs().max() <= 1 / math.sqrt(p.shape[1])
        else:
            assert not p.any()
    trainable, total = pm.get_nb_trainable_parameters()
    assert (info["trainable"], info["total"], info["modules"]) == (trainable, total, 14)


@pytest.mark.package_only
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 5), st.floats(0.5, 64), st.booleans(),
       st.lists(st.integers(1, 3), min_size=0, max_size=2), st.booleans())
def test_fresh_adapter_is_identity(n_in, n_out, r, alpha, rslora, lead, bias):
    """A fresh LoRALinear (B = 0) returns exactly the base layer's output, for any shapes."""
    base = nn.Linear(n_in, n_out, bias=bias)
    layer = LoRALinear(base, r, alpha, rslora=rslora)
    x = torch.randn(*lead, n_in)
    assert torch.equal(layer(x), base(x))


def lora_weights(seed, n_in, n_out, r, zero_B=False):
    """W (out, in), b (out,), A (r, in), B (out, r) in float64 from a seed (B = 0 with zero_B: a fresh adapter)."""
    g, f64 = torch.Generator().manual_seed(seed), torch.float64
    W, b = torch.randn(n_out, n_in, generator=g, dtype=f64), torch.randn(n_out, generator=g, dtype=f64)  # (out, in), (out,)
    A, B = torch.randn(r, n_in, generator=g, dtype=f64), torch.randn(n_out, r, generator=g, dtype=f64)  # (r, in), (out, r)
    return W, b, A, torch.zeros_like(B) if zero_B else B


@pytest.mark.exercise("lora_forward")
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.floats(0.5, 16), st.booleans(), st.integers(0, 99))
def test_lora_linear_matches_formula(n_in, n_out, r, alpha, rslora, seed):
    """LoRALinear(x) = W x + b + s·B(A x), s = α/r or α/√r, against a per-element loop."""
    W, b, A, B = lora_weights(seed, n_in, n_out, r)
    x = torch.randn(n_in, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)  # (in,)
    s = alpha / math.sqrt(r) if rslora else alpha / r
    ax = [sum(A[j, i] * x[i] for i in range(n_in)) for j in range(r)]
    want = torch.stack([b[o] + sum(W[o, i] * x[i] for i in range(n_in)) + s * sum(B[o, j] * ax[j] for j in range(r))
                        for o in range(n_out)])
    assert torch.allclose(adapters.lora_forward(x, W, b, A, B, alpha, rslora), want, atol=1e-9, rtol=1e-9)


@pytest.mark.exercise("lora_forward")
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 5), st.floats(0.5, 64), st.booleans(),
       st.lists(st.integers(1, 3), min_size=0, max_size=2), st.booleans())
def test_zero_B_is_exactly_the_base_layer(n_in, n_out, r, alpha, rslora, lead, bias):
    """With B = 0 (LoRA's initialisation) the output is exactly the base layer's, for any leading shape, bias or not."""
    W, b, A, B = lora_weights(n_in * 10 + n_out, n_in, n_out, r, zero_B=True)
    b = b if bias else None
    x = torch.randn(*lead, n_in, dtype=torch.float64)  # (..., in)
    assert torch.equal(adapters.lora_forward(x, W, b, A, B, alpha, rslora), nn.functional.linear(x, W, b))


@pytest.mark.exercise("lora_merge")
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.floats(0.5, 16), st.booleans(), st.integers(0, 99))
def test_merge_is_w_plus_scaled_ba(n_in, n_out, r, alpha, rslora, seed):
    """The merged weight is W + s·B A (s = α/r, or α/√r with rsLoRA), entry by entry; W is left untouched."""
    W, _, A, B = lora_weights(seed, n_in, n_out, r)
    W0 = W.clone()
    merged = adapters.lora_merge(W, A, B, alpha, rslora)
    s = alpha / math.sqrt(r) if rslora else alpha / r
    want = [[W[o, i].item() + s * sum(B[o, j].item() * A[j, i].item() for j in range(r)) for i in range(n_in)]
            for o in range(n_out)]
    torch.testing.assert_close(merged, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    assert torch.equal(W, W0)


@pytest.mark.exercise("lora_merge")
@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 4), st.floats(0.5, 16), st.booleans(), st.integers(0, 99),
       st.lists(st.integers(1, 3), min_size=0, max_size=2))
def test_merged_layer_computes_the_lora_layer(n_in, n_out, r, alpha, rslora, seed, lead):
    """One plain linear layer with the merged weight gives the LoRA layer's outputs (forward from the reference)."""
    W, b, A, B = lora_weights(seed, n_in, n_out, r)
    x = torch.randn(*lead, n_in, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)  # (..., in)
    lora = _reference_lora_forward(x, W, b, A, B, alpha, rslora)
    torch.testing.assert_close(nn.functional.linear(x, adapters.lora_merge(W, A, B, alpha, rslora), b), lora,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.exercise("lora_merge")
@given(st.integers(2, 8), st.integers(2, 8), st.integers(1, 3), st.integers(0, 99))
def test_merge_changes_w_by_rank_at_most_r(n_in, n_out, r, seed):
    """Merged − W has rank ≤ r: LoRA's update is low-rank."""
    W, _, A, B = lora_weights(seed, n_in, n_out, r)
    delta = (adapters.lora_merge(W, A, B, 2.0 * r) - W).double()  # (out, in)
    assert torch.linalg.matrix_rank(delta, rtol=1e-5).item() <= r


def _reference_lora_forward(x, W, b, A, B, alpha, rslora):
    """The package's LoRALinear, whatever MINIGRPO_IMPL says: lora_merge is graded alone."""
    layer = LoRALinear(nn.Linear(W.shape[1], W.shape[0], dtype=W.dtype), A.shape[0], alpha, rslora=rslora)
    with torch.no_grad():
        for p, v in ((layer.base_layer.weight, W), (layer.base_layer.bias, b), (layer.lora_A.weight, A),
                     (layer.lora_B.weight, B)):
            p.copy_(v)
        return layer(x)


def test_merge_unmerge_and_disabled(ckpt):
    """Merged equals unmerged; unmerge restores the base; lora_disabled gives the base, merged or not."""
    path, _ = ckpt
    model, _ = load_policy(path)
    with torch.no_grad():
        base = model(IDS)
        w0 = model.model.layers[0].self_attn.q_proj.weight.clone()
    add_lora(model, r=4, alpha=8)
    _randomise_lora(model)
    with torch.no_grad():
        lora = model(IDS)
        with lora_disabled(model):
            off_fresh = model(IDS)  # never merged: the base weights are bit-for-bit the loaded ones
        merge_lora(model)
        merged = model(IDS)
        with pytest.raises(RuntimeError, match="already merged"):
            merge_lora(model)
        with lora_disabled(model):
            off_merged = model(IDS)
        assert all(m.merged for m in lora_layers(model).values())
        unmerge_lora(model)
        unmerged = model(IDS)
        with lora_disabled(model):
            off = model(IDS)
        after = model(IDS)
    assert (lora - base).abs().max() > 1e-2
    assert (merged - lora).abs().max() <= 1e-4 and (unmerged - lora).abs().max() <= 1e-4
    assert (model.model.layers[0].self_attn.q_proj.base_layer.weight - w0).abs().max() <= 1e-6
    assert torch.equal(off_fresh, base)
    assert (off - base).abs().max() <= 1e-4 and (off_merged - base).abs().max() <= 1e-4
    assert torch.equal(after, unmerged)  # the LoRA branch is back on after the block


def test_lora_merged_block_restores_the_exact_weights(ckpt):
    """Inside `lora_merged` the model computes the LoRA model with one matmul per layer (to rounding);
    after it every base weight is the very tensor it was, bit for bit, and the adapter trains as before."""
    path, _ = ckpt
    model, _ = load_policy(path)
    add_lora(model, r=4, alpha=8)
    _randomise_lora(model)
    layers = lora_layers(model)
    before = {n: (m.base_layer.weight, m.base_layer.weight.clone()) for n, m in layers.items()}
    with torch.no_grad():
        lora = model(IDS)
        with lora_merged(model):
            assert all(m.merged for m in layers.values())
            merged = model(IDS)
        after = model(IDS)
    assert 0 < (merged - lora).abs().max() <= 1e-4  # the merged weights round differently, a little
    assert torch.equal(after, lora)
    for n, m in layers.items():
        assert m.base_layer.weight is before[n][0] and torch.equal(m.base_layer.weight, before[n][1]), n
        assert not m.merged and not m.base_layer.weight.requires_grad
    model(IDS).sum().backward()
    assert all(m.lora_B.weight.grad is not None for m in layers.values())


def test_only_lora_parameters_get_gradients(ckpt):
    """After add_lora, a backward pass reaches A and B and nothing else."""
    path, _ = ckpt
    model, _ = load_policy(path)
    add_lora(model, r=2, alpha=4, dropout=0.1)
    model.train()
    model(IDS).logsumexp(-1).mean().backward()
    for n, p in model.named_parameters():
        if "lora_" in n:
            assert p.requires_grad and p.grad is not None, n
            if "lora_B" in n:  # B = 0 makes A's gradient zero at step 0, but B's is not
                assert p.grad.abs().sum() > 0, n
        else:
            assert not p.requires_grad and p.grad is None, n


def test_resume_copies_in_place(tmp_path, ckpt):
    """Loading into a model that has LoRA copies into the same Parameter objects (an optimizer keeps them)."""
    path, _ = ckpt
    a, _ = load_policy(path)
    add_lora(a, r=4, alpha=8)
    _randomise_lora(a, seed=7)
    save_adapter(a, tmp_path / "ad")
    b, _ = load_policy(path)
    add_lora(b, r=4, alpha=8)
    before = [id(p) for p in b.parameters()]
    load_adapter(b, tmp_path / "ad")
    assert [id(p) for p in b.parameters()] == before
    with torch.no_grad():
        assert torch.equal(a(IDS), b(IDS))


def test_errors_name_the_tensor_or_field(tmp_path, ckpt):
    """Rank, shape and target mismatches and bad config fields raise InputError naming the culprit."""
    path, _ = ckpt
    m, _ = load_policy(path)
    add_lora(m, r=4, alpha=8, targets=("q_proj", "v_proj"))
    save_adapter(m, tmp_path / "ad")
    other, _ = load_policy(path)
    add_lora(other, r=2, alpha=8, targets=("q_proj", "v_proj"))
    key = re.escape("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
    with pytest.raises(InputError, match=rf"tensor '{key}' has shape \(4, 64\), expected \(2, 64\)"):
        load_adapter(other, tmp_path / "ad")
    fewer, _ = load_policy(path)
    add_lora(fewer, r=4, alpha=8, targets=("q_proj",))
    with pytest.raises(InputError, match=r"unexpected tensors \[.*v_proj\.lora_A\.weight'.*target mismatch"):
        load_adapter(fewer, tmp_path / "ad")
    more, _ = load_policy(path)
    add_lora(more, r=4, alpha=8, targets=("q_proj", "v_proj", "o_proj"))
    with pytest.raises(InputError, match=r"missing tensors \[.*o_proj\.lora_A\.weight'"):
        load_adapter(more, tmp_path / "ad")
    # a wrongly shaped tensor in the file, into a model without LoRA (nothing may be changed)
    tensors = load_file(tmp_path / "ad" / "adapter_model.safetensors")
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    tensors[key] = torch.zeros(5, 4)
    save_file(tensors, tmp_path / "ad" / "adapter_model.safetensors")
    fresh, _ = load_policy(path)
    with pytest.raises(InputError, match=rf"'{key}' has shape \(5, 4\), expected \(32, 4\)"):
        load_adapter(fresh, tmp_path / "ad")
    assert not lora_layers(fresh)
    cfg_path = tmp_path / "ad" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    for field, value, pattern in [("peft_type", "IA3", "'peft_type' is 'IA3', expected 'LORA'"),
                                  ("r", 0, "'r' is 0, expected a positive integer"),
                                  ("use_dora", True, "'use_dora' is True"),
                                  ("target_modules", ["qkv"], "target 'qkv' matches no linear layer")]:
        cfg_path.write_text(json.dumps({**cfg, field: value}))
        with pytest.raises(InputError, match=pattern):
            load_adapter(fresh, tmp_path / "ad")
    with pytest.raises(InputError, match="adapter_config.json"):
        load_adapter(fresh, tmp_path / "nowhere")
