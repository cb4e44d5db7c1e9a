"""A post-LayerNorm transformer encoder (BERT, RoBERTa) and its strict safetensors loader.

The reward model's body. One code path covers both families of Devlin et al. (2019) and
Liu et al. (2019); they differ only in where positions start and in token types:

    RoBERTa: positions count non-pad tokens from pad_token_id + 1 (fairseq's `make_positions`),
             one token type;
    BERT:    positions 0, 1, 2, ... whatever the padding, two token types (prompt 0, response 1).

Each block is x = LN(x + Attn(x)); x = LN(x + W2·GELU(W1·x)) (post-LN, as in both papers), with
exact (erf) GELU and learned absolute positions. Attention is `scaled_dot_product_attention` with a
key-padding mask. Dropout is the checkpoint's own, active only in training mode.

`load_encoder(path)` reads a Hugging Face `RobertaModel`, `RobertaForSequenceClassification` or
`BertModel` directory (config.json + model.safetensors). Strict: every tensor must be there with its
shape, and nothing else may be, except what an encoder never uses, which is skipped and named here:
the pooler (`pooler.dense.*`: the reward head pools the first token itself, as RoBERTa's
classification head does), the saved `embeddings.position_ids` / `token_type_ids` buffers of older
checkpoints, and a sequence-classification head (`classifier.*`, read by minigrpo/reward_model.py).

Where we depart from transformers: parameter names are short (`q`, `k`, `v`, `o`, `ln1`, `fc1`,
`fc2`, `ln2`); `HF_NAMES` maps them one to one onto transformers' names, which are the names in
every file we read or write. Sharded checkpoints and `pytorch_model.bin` are not read.
"""
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minigrpo.errors import InputError
from minigrpo.files import read_model_config, read_tensors, safetensors_names

# our name inside a block → transformers' name inside `encoder.layer.{i}.`
HF_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "o": "attention.output.dense", "ln1": "attention.output.LayerNorm",
    "fc1": "intermediate.dense", "fc2": "output.dense", "ln2": "output.LayerNorm",
}
# architectures → (family, tensor-name prefix in the file)
SUPPORTED = {
    "RobertaModel": ("roberta", ""), "RobertaForSequenceClassification": ("roberta", "roberta."),
    "BertModel": ("bert", ""),
}
IGNORED = ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids", "classifier.")


@dataclass
class EncoderConfig:
    """Sizes of an encoder; read from a checkpoint's config.json, never a second copy."""
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    roberta_positions: bool = True  # positions from pad_token_id + 1 (RoBERTa) or from 0 (BERT)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1

    @property
    def max_length(self):
        """Longest input in tokens that has a learned position."""
        return self.max_position_embeddings - (self.pad_token_id + 1 if self.roberta_positions else 0)


class Block(nn.Module):
    """One post-LN encoder block (BertLayer / RobertaLayer)."""

    def __init__(self, cfg):
        super().__init__()
        H, I = cfg.hidden_size, cfg.intermediate_size
        self.n_head = cfg.num_attention_heads
        self.q, self.k, self.v, self.o = (nn.Linear(H, H) for _ in range(4))
        self.ln1 = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.fc1, self.fc2 = nn.Linear(H, I), nn.Linear(I, H)
        self.ln2 = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.p_hidden, self.p_attn = cfg.hidden_dropout, cfg.attention_dropout

    def forward(self, x, mask, first_only=False):
        """(B, T, H) → (B, T, H); with `first_only`, only the first token's output (B, 1, H).

        Every token is still a key and a value; `first_only` skips the query, attention output and
        MLP of the others, which a head reading the first token never uses (the last block only).
        """
        B, T, H = x.shape
        D = H // self.n_head
        xq = x[:, :1] if first_only else x  # (B, Tq, H) the positions whose output is wanted
        Tq = xq.shape[1]
        q = self.q(xq).view(B, Tq, self.n_head, D).transpose(1, 2)  # (B, nh, Tq, D)
        k = self.k(x).view(B, T, self.n_head, D).transpose(1, 2)  # (B, nh, T, D)
        v = self.v(x).view(B, T, self.n_head, D).transpose(1, 2)  # (B, nh, T, D)
        # softmax(q·kᵀ/√D + mask)·v, Vaswani et al. (2017) eq. (1)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.p_attn if self.training else 0.0)  # (B, nh, Tq, D)
        a = a.transpose(1, 2).reshape(B, Tq, H)  # (B, Tq, H)
        x = self.ln1(xq + F.dropout(self.o(a), self.p_hidden, self.training))  # (B, Tq, H) post-LN
        h = F.gelu(self.fc1(x))  # (B, Tq, I) exact erf GELU (transformers' "gelu")
        return self.ln2(x + F.dropout(self.fc2(h), self.p_hidden, self.training))  # (B, Tq, H)


class Encoder(nn.Module):
    """Token ids → last hidden states, like transformers' RobertaModel / BertModel without pooler."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        H = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, H)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, H)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, H)
        self.ln_emb = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))

    def positions(self, input_ids):
        """Position ids (B, T): RoBERTa counts non-pad tokens from pad+1 (pads get pad); BERT 0..T-1."""
        B, T = input_ids.shape
        if not self.config.roberta_positions:
            return torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        pad = self.config.pad_token_id
        not_pad = input_ids.ne(pad).long()  # (B, T)
        return torch.cumsum(not_pad, dim=1) * not_pad + pad  # (B, T) transformers' create_position_ids_from_input_ids

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, first_only=False):
        """Last hidden states (B, T, H). attention_mask (B, T): 1 for real tokens, 0 for padding.

        `first_only`: return only the first token's last hidden state (B, 1, H), computing the last
        block for that position alone (the same numbers, less work; the reward head uses it).
        """
        B, T = input_ids.shape
        if T > self.config.max_length:
            raise ValueError(f"input of {T} tokens is longer than the encoder's {self.config.max_length} positions")
        if token_type_ids is None or self.config.type_vocab_size == 1:
            token_type_ids = torch.zeros_like(input_ids)  # (B, T)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, T, H)
        x = x + self.position_embeddings(self.positions(input_ids))  # (B, T, H) same sum order as transformers
        x = F.dropout(self.ln_emb(x), self.config.hidden_dropout, self.training)  # (B, T, H)
        mask = None  # no padding: the unmasked attention kernel is faster
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): every query sees the real keys
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, first_only and i == len(self.layers) - 1)  # (B, T, H), last maybe (B, 1, H)
        return x[:, :1] if first_only else x  # (B, 1, H) or (B, T, H)

    def to_roberta_positions(self):
        """Turn a BERT-position encoder into the same function with RoBERTa positions (in place).

        RoBERTa puts the i-th real token at row pad+1+i, BERT at row i; shifting the table down by
        pad+1 rows gives identical hidden states on every real token of right-padded input. Rows
        0..pad stay zero (pad tokens only). Used to save any reward model in the RoBERTa layout.
        """
        cfg = self.config
        if cfg.roberta_positions:
            return self
        shift = cfg.pad_token_id + 1
        old = self.position_embeddings.weight.data  # (P, H)
        new = torch.zeros(old.shape[0] + shift, old.shape[1], dtype=old.dtype, device=old.device)  # (P + pad + 1, H)
        new[shift:] = old
        self.position_embeddings = nn.Embedding.from_pretrained(new, freeze=False)
        cfg.max_position_embeddings += shift
        cfg.roberta_positions = True
        return self


def hf_name(name):
    """Our parameter name → transformers' (without the `roberta.`/`bert.` prefix)."""
    emb = {"word_embeddings": "embeddings.word_embeddings", "position_embeddings": "embeddings.position_embeddings",
           "token_type_embeddings": "embeddings.token_type_embeddings", "ln_emb": "embeddings.LayerNorm"}
    first, rest = name.split(".", 1)
    if first in emb:
        return f"{emb[first]}.{rest}"
    i, short, attr = rest.split(".")  # layers.{i}.{short}.{weight|bias}
    return f"encoder.layer.{i}.{HF_NAMES[short]}.{attr}"


def _num(raw, name, path, kind=int, default=None):
    value = raw.get(name, default)
    if value is None:
        raise InputError(f"{path}: missing field '{name}'")
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise InputError(f"{path}: field '{name}' is {value!r}, expected {kind.__name__}")
    if kind is int and value < (0 if name == "pad_token_id" else 1):  # sizes and counts
        raise InputError(f"{path}: field '{name}' is {value!r}, expected a positive integer")
    return kind(value)


def read_encoder_config(path):
    """(EncoderConfig, architecture) from a checkpoint directory's config.json."""
    raw, cfg_path, arch = read_model_config(path, SUPPORTED)
    if raw.get("hidden_act", "gelu") != "gelu":
        raise InputError(f"{cfg_path}: hidden_act '{raw['hidden_act']}' is not supported; expected 'gelu'")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise InputError(f"{cfg_path}: position_embedding_type '{raw['position_embedding_type']}' is not supported; "
                          "expected 'absolute'")
    family = SUPPORTED[arch][0]
    H, nh = _num(raw, "hidden_size", cfg_path), _num(raw, "num_attention_heads", cfg_path)
    if H % nh:
        raise InputError(f"{cfg_path}: hidden_size={H} is not a multiple of num_attention_heads={nh}")
    return EncoderConfig(
        vocab_size=_num(raw, "vocab_size", cfg_path), hidden_size=H,
        num_hidden_layers=_num(raw, "num_hidden_layers", cfg_path), num_attention_heads=nh,
        intermediate_size=_num(raw, "intermediate_size", cfg_path),
        max_position_embeddings=_num(raw, "max_position_embeddings", cfg_path),
        type_vocab_size=_num(raw, "type_vocab_size", cfg_path, default=2 if family == "bert" else 1),
        layer_norm_eps=_num(raw, "layer_norm_eps", cfg_path, float, 1e-12 if family == "bert" else 1e-5),
        pad_token_id=_num(raw, "pad_token_id", cfg_path, default=0 if family == "bert" else 1),
        roberta_positions=family == "roberta",
        hidden_dropout=_num(raw, "hidden_dropout_prob", cfg_path, float, 0.1),
        attention_dropout=_num(raw, "attention_probs_dropout_prob", cfg_path, float, 0.1),
    ), arch


def read_checkpoint(path, expected, prefix, ignore=IGNORED):
    """{name: tensor} for each name → shape in `expected`, read as `prefix + name` from path/model.safetensors.

    Strict (files.read_tensors): a missing, unexpected or wrongly shaped tensor is an InputError
    naming it; stored names starting with `ignore[i]`, after `prefix` is removed, are skipped.
    """
    file = path / "model.safetensors"
    if not file.is_file():
        hint = " (pytorch_model.bin is not read: convert it to safetensors)" if (path / "pytorch_model.bin").is_file() else ""
        raise InputError(f"{path}: no model.safetensors{hint}")
    stored = {n: file for n in safetensors_names(file)}
    wanted = {prefix + n: shape for n, shape in expected.items()}
    skip = [*ignore, *(prefix + i for i in ignore)]  # the classifier head has no prefix, the pooler has
    return {n.removeprefix(prefix): t for n, t in read_tensors(file, stored, wanted, skip)}


def load_encoder(path, dtype=torch.float32):
    """Load a Hugging Face RobertaModel / RobertaForSequenceClassification / BertModel directory.

    Returns an `Encoder` in eval mode; `encoder(input_ids, attention_mask)` → (B, T, H) last
    hidden states. The pooler and any classifier head in the file are skipped (see the module
    docstring); every other tensor must match the model exactly.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: checkpoint directory not found")
    cfg, arch = read_encoder_config(path)
    model = Encoder(cfg)
    ours = {hf_name(n): n for n, _ in model.named_parameters()}
    tensors = read_checkpoint(path, {hf: model.get_parameter(n).shape for hf, n in ours.items()}, SUPPORTED[arch][1])
    with torch.no_grad():
        for hf, n in ours.items():
            model.get_parameter(n).copy_(tensors[hf])
    return model.to(dtype).eval()


def init_weights_(module, std=0.02, seed=0):
    """transformers' BERT/RoBERTa init: Normal(0, std) matrices and embeddings, zero biases, unit LayerNorms."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".ln" in name or name.startswith("ln"):
                p.fill_(1.0) if name.endswith("weight") else p.zero_()
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def count_params(module):
    """Number of parameters, in millions (for log lines)."""
    return sum(p.numel() for p in module.parameters()) / 1e6

