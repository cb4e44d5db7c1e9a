"""The multi-aspect reward model of arXiv 2503.21819: an encoder, RoBERTa's head, K sigmoid scores.

The paper fine-tunes RoBERTa-base with one output per aspect (politeness, meaningfulness,
actionability, safety), each a score in [0, 1] trained by MSE; the policy's reward is
R = Σ_k w_k r_k. Here:

    logits = out_proj(tanh(dense(h_first)))   # transformers' RobertaClassificationHead, K outputs
    scores = sigmoid(logits)                   # (N, K) in [0, 1]
    reward = scores @ w                        # (N,)  R = Σ_k w_k r_k, paper §3

where h_first is the encoder's last hidden state of the first token (`<s>` or `[CLS]`).

Input. A (prompt, response) pair is encoded with the tokenizer's own pair template
(`tokenizers.Tokenizer.post_process`): RoBERTa gives `<s> prompt </s></s> response </s>`, BERT
`[CLS] prompt [SEP] response [SEP]` with token types 0 / 1. Pairs are scored in batches sorted
by length, so little compute goes to padding.

Truncation (our choice; the paper does not say). A pair longer than `max_length` tokens keeps the
response, which is what is being scored: the prompt is cut from the left (its end, nearest the
response, stays) but keeps at least min(its length, budget // 4) tokens; only if the response
alone is still too long is it cut from the right. Every truncation is counted in
`rm.last_truncated` (the last `score` call) and `rm.total_truncated`, and the first one warns.

On disk: the Hugging Face `RobertaForSequenceClassification` layout, so `transformers` loads a
minigrpo reward model and `sigmoid(model(**tokenizer(prompts, responses, padding=True)).logits)`
equals `rm.score(prompts, responses)` (tests/test_reward_model.py checks it):

    config.json             RobertaConfig with num_labels = K, problem_type "regression",
                            id2label = the aspects, plus a "minigrpo" block that transformers
                            ignores: {"aspects", "weights" (default w), "max_length", "truncation"}
    model.safetensors       roberta.embeddings.*, roberta.encoder.layer.{i}.*, classifier.{dense,out_proj}.*
    tokenizer.json          the tokenizer with its pair post-processor (truncation and padding off)
    tokenizer_config.json   extra file, for transformers' AutoTokenizer only (pad token, input names)

Departures: (1) a BERT encoder (e.g. all-MiniLM-L6-v2) is stored in the RoBERTa layout by shifting
its position table (Encoder.to_roberta_positions), with type_vocab_size 2 kept; (2) transformers'
`problem_type: "regression"` loss is MSE on the raw logits, ours is MSE on sigmoid(logits)
(minigrpo/train_rm.py); the saved weights are the same either way; (3) transformers' own
tokenizer truncation differs from ours: truncate as above before handing long pairs to it.
"""
import json
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from minigrpo.encoder import Encoder, hf_name, init_weights_, read_checkpoint, read_encoder_config
from minigrpo.errors import InputError
from minigrpo.files import atomic_dir, read_json

# The paper's four aspects, in its order: the one list every stage derives its names from
# (train-rm's default --aspects, the world's rubric and data, the reports).
ASPECTS = ("politeness", "meaningfulness", "actionability", "safety")

TRUNCATION = "prompt from the left (keeps >= budget // 4 of it), then response from the right"


class ClassificationHead(nn.Module):
    """transformers' RobertaClassificationHead: first token → dropout → dense → tanh → dropout → out_proj."""

    def __init__(self, H, K, dropout=0.1):
        super().__init__()
        self.dense = nn.Linear(H, H)
        self.out_proj = nn.Linear(H, K)
        self.p = dropout

    def forward(self, h):
        h = F.dropout(h, self.p, self.training)  # (N, H)
        h = torch.tanh(self.dense(h))  # (N, H)
        return self.out_proj(F.dropout(h, self.p, self.training))  # (N, K)


class RewardModel(nn.Module):
    """Encoder + head: `score(prompts, responses)` → (N, K) in [0, 1]; `reward` → (N,) weighted sum."""

    def __init__(self, encoder, tokenizer, aspects, weights=None, max_length=None):
        super().__init__()
        K = len(aspects)
        self.encoder = encoder.to_roberta_positions()  # every saved reward model is RoBERTa-shaped
        self.classifier = ClassificationHead(encoder.config.hidden_size, K, encoder.config.hidden_dropout)
        init_weights_(self.classifier)
        tokenizer.no_truncation()  # truncation is ours (see `encode`); padding is ours (`collate`)
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.aspects = list(aspects)
        self.weights = [1.0] * K if weights is None else [float(w) for w in weights]
        if len(self.weights) != K:
            raise InputError(f"{len(self.weights)} weights for {K} aspects {self.aspects}")
        self.max_length = min(max_length or encoder.config.max_length, encoder.config.max_length)
        self.n_special = tokenizer.num_special_tokens_to_add(is_pair=True)
        if self.max_length <= self.n_special + 1:
            raise InputError(f"max_length {self.max_length} leaves no room for text after {self.n_special} special tokens")
        self.last_truncated = 0
        self.total_truncated = 0

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        """Logits (N, K) of token ids (N, T); `sigmoid` of them are the scores."""
        h = self.encoder(input_ids, attention_mask, token_type_ids, first_only=True)  # (N, 1, H)
        return self.classifier(h[:, 0])  # (N, K) first token: <s> / [CLS]

    # ---------------------------------------------------------------- text → tensors
    def encode(self, prompts, responses):
        """(ids, type_ids) lists for each pair, with the pair template and our truncation rule."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        prompts_enc = self.tokenizer.encode_batch(list(prompts), add_special_tokens=False)
        responses_enc = self.tokenizer.encode_batch(list(responses), add_special_tokens=False)
        budget = self.max_length - self.n_special
        pairs, truncated = [], 0
        for p, r in zip(prompts_enc, responses_enc):
            lp, lr = len(p.ids), len(r.ids)
            if lp + lr > budget:  # see the module docstring: keep the response, cut the prompt's start
                truncated += 1
                keep_p = max(min(lp, budget // 4), budget - lr)
                p.truncate(keep_p, direction="left")
                r.truncate(budget - keep_p, direction="right")
            e = self.tokenizer.post_process(p, r, add_special_tokens=True)
            pairs.append((e.ids, e.type_ids))
        self.last_truncated = truncated
        self.total_truncated += truncated
        if truncated:
            warnings.warn(f"reward model: pairs longer than max_length={self.max_length} tokens were truncated "
                          f"({TRUNCATION}); counts in rm.last_truncated / rm.total_truncated", stacklevel=3)
        return pairs

    def collate(self, pairs):
        """Right-padded ids (N, T), attention mask (N, T), token types (N, T) on the model's device."""
        T = max(len(ids) for ids, _ in pairs)
        ids = torch.full((len(pairs), T), self.encoder.config.pad_token_id, dtype=torch.long)  # (N, T)
        mask = torch.zeros(len(pairs), T, dtype=torch.long)  # (N, T)
        types = torch.zeros(len(pairs), T, dtype=torch.long)  # (N, T)
        for i, (a, t) in enumerate(pairs):
            ids[i, :len(a)] = torch.tensor(a)
            mask[i, :len(a)] = 1
            types[i, :len(t)] = torch.tensor(t)
        device = self.classifier.dense.weight.device
        return ids.to(device), mask.to(device), types.to(device)

    # ---------------------------------------------------------------- scores and rewards
    def score(self, prompts, responses, batch_size=64):
        """Aspect scores (N, K) in [0, 1], float32 on the CPU, in the order of the inputs.

        Runs without gradients, in eval mode (dropout off), on batches of similar length.
        """
        return self.score_pairs(self.encode(prompts, responses), batch_size)

    def score_pairs(self, pairs, batch_size=64):
        """`score` of pairs already encoded by `encode`."""
        out = torch.empty(len(pairs), len(self.aspects))  # (N, K)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))  # length buckets cut padding
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for s in range(0, len(order), batch_size):
                    idx = order[s:s + batch_size]
                    logits = self(*self.collate([pairs[i] for i in idx]))  # (b, K)
                    out[idx] = torch.sigmoid(logits.float()).cpu()  # (b, K)
        finally:
            self.train(was_training)
        return out

    def reward(self, prompts, responses, weights=None, batch_size=64):
        """R = Σ_k w_k r_k (paper §3), shape (N,); `weights` default to the model's own (`rm.weights`)."""
        w = torch.tensor(self.weights if weights is None else [float(x) for x in weights])  # (K,)
        if w.shape != (len(self.aspects),):
            raise ValueError(f"{w.numel()} weights for {len(self.aspects)} aspects {self.aspects}")
        return self.score(prompts, responses, batch_size) @ w  # (N,)


# ---------------------------------------------------------------- files
def hf_state_names(rm):
    """Our parameter name → its name in a RobertaForSequenceClassification file."""
    return {n: ("roberta." + hf_name(n.removeprefix("encoder.")) if n.startswith("encoder.") else n)
            for n, _ in rm.named_parameters()}


def hf_config(rm):
    """config.json of a reward model: transformers' RobertaConfig fields + our "minigrpo" block."""
    c = rm.encoder.config
    return {
        "architectures": ["RobertaForSequenceClassification"], "model_type": "roberta",
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
        "hidden_act": "gelu", "hidden_dropout_prob": c.hidden_dropout, "attention_probs_dropout_prob": c.attention_dropout,
        "max_position_embeddings": c.max_position_embeddings, "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.layer_norm_eps, "pad_token_id": c.pad_token_id, "position_embedding_type": "absolute",
        "classifier_dropout": None, "problem_type": "regression",
        "id2label": {str(k): a for k, a in enumerate(rm.aspects)}, "label2id": {a: k for k, a in enumerate(rm.aspects)},
        "torch_dtype": str(rm.classifier.dense.weight.dtype).removeprefix("torch."),
        "minigrpo": {"aspects": rm.aspects, "weights": rm.weights, "max_length": rm.max_length,
                     "truncation": TRUNCATION, "scores": "sigmoid(logits)"},
    }


def save_reward_model(rm, path, extra_files=None):
    """Write `rm` in the RobertaForSequenceClassification layout (see the module docstring), atomically.

    `extra_files` maps file name → text (train_rm adds its metrics and config).
    """
    from safetensors.torch import save
    names = hf_state_names(rm)
    state = {names[n]: p.detach().contiguous().cpu() for n, p in rm.named_parameters()}
    pad = rm.tokenizer.id_to_token(rm.encoder.config.pad_token_id)
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if rm.encoder.config.type_vocab_size > 1 else [])
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad, "model_max_length": rm.max_length,
                  "model_input_names": inputs}
    with atomic_dir(path) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config(rm), indent=2) + "\n")
        (tmp / "model.safetensors").write_bytes(save(state, metadata={"format": "pt"}))  # usual file permissions
        rm.tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)


def load_tokenizer_file(path):
    """The `tokenizers.Tokenizer` of a checkpoint directory's tokenizer.json, or a InputError."""
    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise InputError(f"{path}: no tokenizer.json (the reward model needs the encoder's tokenizer)")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises its own exception type
        raise InputError(f"{file}: not a readable tokenizer.json ({e})") from None
    if tok.num_special_tokens_to_add(is_pair=True) == 0:
        raise InputError(f"{file}: no pair post-processor (expected RoBERTa's <s> a </s></s> b </s> or BERT's template)")
    return tok


def load_reward_model(path, dtype=torch.float32):
    """Load a reward model saved by `save_reward_model` (or any RobertaForSequenceClassification regressor).

    Aspects come from the "minigrpo" block of config.json (else from id2label), default weights
    from the same block (else equal). Loading is strict: see minigrpo/files.py's `read_tensors`.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: reward model directory not found")
    cfg_path = path / "config.json"
    enc_cfg, arch = read_encoder_config(path)
    if arch != "RobertaForSequenceClassification":
        raise InputError(f"{cfg_path}: architectures is {arch}, expected RobertaForSequenceClassification "
                          "(a reward model; to train one on this encoder use `minigrpo train-rm --encoder`)")
    raw = read_json(cfg_path)
    extra = raw.get("minigrpo") or {}
    id2label = raw.get("id2label") or {}
    for name, value in (("minigrpo", extra), ("id2label", id2label)):
        if not isinstance(value, dict):
            raise InputError(f"{cfg_path}: field '{name}' is a {type(value).__name__}, expected an object")
    bad = [k for k in id2label if not k.lstrip("-").isdigit()]
    if bad:
        raise InputError(f"{cfg_path}: id2label key {bad[0]!r} is not an integer; expected keys '0' .. '{len(id2label) - 1}'")
    aspects = extra.get("aspects") or [id2label[k] for k in sorted(id2label, key=int)]
    if not isinstance(aspects, list):
        raise InputError(f"{cfg_path}: minigrpo.aspects is {aspects!r}, expected a list of names")
    if not aspects or not all(isinstance(a, str) for a in aspects):
        raise InputError(f"{cfg_path}: no aspect names (expected minigrpo.aspects or id2label)")
    weights = extra.get("weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(aspects) or
                                not all(isinstance(w, (int, float)) and math.isfinite(w) for w in weights)):
        raise InputError(f"{cfg_path}: minigrpo.weights is {weights!r}, expected {len(aspects)} finite numbers")
    max_length = extra.get("max_length")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise InputError(f"{cfg_path}: minigrpo.max_length is {max_length!r}, expected a positive integer")
    rm = RewardModel(Encoder(enc_cfg), load_tokenizer_file(path), aspects, weights, max_length)
    names = hf_state_names(rm)
    tensors = read_checkpoint(path, {hf: rm.get_parameter(n).shape for n, hf in names.items()}, "",
                           ignore=("roberta.pooler.", "roberta.embeddings.position_ids", "roberta.embeddings.token_type_ids"))
    with torch.no_grad():
        for n, hf in names.items():
            rm.get_parameter(n).copy_(tensors[hf])
    return rm.to(dtype).eval()
