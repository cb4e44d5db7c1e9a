"""The Qwen2 / Qwen2.5 / Qwen3 decoder, written out: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Matches `transformers`' `Qwen2ForCausalLM` and `Qwen3ForCausalLM` (module names, so checkpoints and
PEFT adapter keys load unchanged, and numerics: see tests/test_qwen.py, max |Δlogit| ≤ 1e-4 fp32).
Qwen2 has biases on q/k/v; Qwen3 has none but normalises each query and key head (`q_norm`,
`k_norm`) before RoPE. Both are one code path here, switched by the config.

Where we depart from transformers:
  1. With an `attention_mask` and no `position_ids`, positions count real tokens only
     (cumsum of the mask), so a left-padded row gives the same logits as the row alone.
     (transformers' plain forward uses 0..T-1 whatever the mask; its `generate` does as we do.)
  2. No sliding-window attention and no RoPE scaling (Qwen2.5 ships with both off); the loader
     refuses configs that turn them on rather than computing something else.
  3. The KV cache is one preallocated tensor per layer (`KVCache`), with per-row positions, so that
     the sampler can prefill a prompt once and share it among its G samples.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass
class QwenConfig:
    """Model sizes, read from the checkpoint's config.json by `minigrpo.loader.load_config`."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    tie_word_embeddings: bool = False
    attention_bias: bool = True  # Qwen2: biases on q/k/v; Qwen3: none
    qk_norm: bool = False  # Qwen3: RMSNorm on each query/key head
    max_position_embeddings: int = 32768


VOCAB_BLOCK = 2048  # Qwen.head_logits: vocabulary rows per matmul on CPU


def rms_norm(x, weight, eps):
    """x / sqrt(mean(x²) + eps) · w, computed in fp32, cast back before the weight (transformers' Qwen2RMSNorm)."""
    y = x.float()
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(x.dtype)


class RMSNorm(nn.Module):
    """`rms_norm` with its learned weight (H,)."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021, arXiv 2104.09864), half-split layout as in GPT-NeoX/Qwen.

    The frequencies are recomputed in fp32 at each call (D/2 numbers) rather than kept as a buffer,
    so `model.to(torch.bfloat16)` or building on the meta device can never round or lose them.
    """

    def __init__(self, head_dim, theta):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def forward(self, position_ids, dtype):
        # inv_freq_i = θ^(-2i/D), in fp32 exactly as transformers' default rope init
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=position_ids.device).float() / self.head_dim
        inv_freq = 1.0 / (self.theta ** exponent)  # (D/2,)
        freqs = position_ids[:, :, None].float() * inv_freq[None, None, :]  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]  # (B, 1, T, D) each


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x, cos, sin):
    """Rotate x (B, heads, T, D) by its positions' angles: transformers' apply_rotary_pos_emb."""
    return x * cos + rotate_half(x) * sin


def decode_attention(q, k, v, bias):
    """softmax(q kᵀ/√D + bias) v for one query per row, the query heads of a K/V head batched together.

    q (B, nh, 1, D); k, v (B, nkv, S, D); bias (B, 1, 1, S) additive (0 or -inf). Equals SDPA's result
    (to rounding) and is faster on CPU for this shape.
    """
    B, nh, _, D = q.shape
    nkv, S = k.shape[1], k.shape[2]
    g = nh // nkv  # query heads per K/V head
    bias = bias.expand(B, nkv, g, S).reshape(B * nkv, g, S)  # (B·nkv, g, S)
    scores = torch.baddbmm(bias, q.reshape(B * nkv, g, D), k.reshape(B * nkv, S, D).transpose(1, 2), alpha=D ** -0.5)  # (B·nkv, g, S)
    return torch.bmm(scores.softmax(-1), v.reshape(B * nkv, S, D)).view(B, nh, 1, D)  # (B, nh, 1, D)


def attend(q, k, v, mask):
    """softmax(q kᵀ/√D + mask) v: q (B, nh, T, D), k and v (B, nkv, S, D) → (B, nh, T, D).

    mask (B, 1, T, S): bool, or additive (0 / -inf), which it must be when T = 1 on CPU in fp32:
    there `decode_attention` (faster than SDPA for one query) does the work.
    """
    if q.shape[2] == 1 and q.device.type == "cpu" and q.dtype == torch.float32:
        return decode_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


class Attention(nn.Module):
    """Grouped-query attention: `num_key_value_heads` K/V heads shared by groups of query heads."""

    def __init__(self, cfg):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.nh * self.hd, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.nkv * self.hd, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.nkv * self.hd, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.nh * self.hd, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd)  # (B, T, nh, D)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd)  # (B, T, nkv, D)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)  # (B, nkv, T, D)
        if hasattr(self, "q_norm"):  # Qwen3: per-head RMSNorm before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        qk = rope(torch.cat([q, k], 2).transpose(1, 2), cos, sin)  # (B, nh + nkv, T, D): both rotated at once
        q, k = qk[:, :self.nh], qk[:, self.nh:]  # (B, nh, T, D), (B, nkv, T, D)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nkv, S, D): the cached keys plus these
        y = attend(q, k, v, mask)  # (B, nh, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.nh * self.hd))  # (B, T, H)


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020, arXiv 2002.05202): down(silu(gate(x)) · up(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    """Embeddings, the blocks and the final norm: `Qwen2Model` in transformers."""

    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = Rotary(cfg.head_dim, cfg.rope_theta)


class KVCache:
    """Preallocated keys and values for every layer, plus which slots hold real tokens.

    k, v: (L, B, nkv, S_max, D); `valid` (B, S_max) marks filled, non-padding slots; `seen` (B,)
    counts each row's real tokens, which is the position of its next token. `cos`, `sin` (S_max, D):
    the RoPE angles of every position the cache can hold, which `Qwen.step` looks up.
    """

    def __init__(self, cfg, batch_size, max_len, dtype, device="cpu"):
        cos, sin = Rotary(cfg.head_dim, cfg.rope_theta)(torch.arange(max_len, device=device)[None], dtype)
        self.cos, self.sin = cos[0, 0], sin[0, 0]  # (S_max, D) each
        shape = (cfg.num_hidden_layers, batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)  # (B, S_max)
        self.seen = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,)
        self.length = 0  # slots used so far (the same for every row)

    def room_for(self, T):
        """The slot count after appending T tokens; ValueError if the cache is too short for them."""
        end = self.length + T
        if end > self.k.shape[3]:
            raise ValueError(f"KVCache: {end} positions needed, cache was allocated for {self.k.shape[3]}")
        return end

    def update(self, layer, k, v):
        """Write this step's keys/values (B, nkv, T, D) after the cached ones; return all (B, nkv, S, D)."""
        end = self.room_for(k.shape[2])
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, mask):
        """Record a step of T tokens whose real/pad flags are `mask` (B, T)."""
        T = mask.shape[1]
        self.valid[:, self.length:self.length + T] = mask
        self.seen += mask.sum(1)
        self.length += T

    def index_rows(self, rows):
        """Keep (or repeat) the rows `rows` (a LongTensor): e.g. repeat_interleave a prompt's cache G times."""
        L, _, nkv, S, D = self.k.shape
        k = self.k.new_empty(L, len(rows), nkv, S, D)  # slots past `length` are written before they are read
        v = self.v.new_empty(L, len(rows), nkv, S, D)
        k[:, :, :, :self.length] = self.k[:, rows, :, :self.length]  # copy the filled slots only
        v[:, :, :, :self.length] = self.v[:, rows, :, :self.length]
        self.k, self.v = k, v
        self.valid, self.seen = self.valid[rows], self.seen[rows]
        return self


def attention_mask_4d(key_valid, q_len):
    """Boolean mask (B, 1, T, S): query i (the last T of S slots) sees valid keys at or before it.

    A query may always see itself, so a padding query never has an all-masked row (which would
    make SDPA return NaN); its output is garbage but nothing real ever attends to it.
    """
    B, S = key_valid.shape
    q_pos = torch.arange(S - q_len, S, device=key_valid.device)  # (T,)
    k_pos = torch.arange(S, device=key_valid.device)  # (S,)
    causal = k_pos[None, :] <= q_pos[:, None]  # (T, S)
    diag = k_pos[None, :] == q_pos[:, None]  # (T, S)
    return ((causal[None] & key_valid[:, None, :]) | diag[None])[:, None]  # (B, 1, T, S)


class Qwen(nn.Module):
    """Causal language model: `logits = model(input_ids, attention_mask)` → (B, T, V) float32."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.model = Body(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.checkpoint_layers = False  # activation checkpointing of each block in training (see `hidden`)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep=0):
        """Logits for `input_ids` (B, T); `attention_mask` (B, T) is 1 for real tokens, 0 for padding.

        With a `cache`, the tokens are appended after the cached ones and attend to them.
        `logits_to_keep=n` computes logits for the last n positions only (0: all).
        """
        x = self.hidden(input_ids, attention_mask, position_ids, cache, logits_to_keep)  # (B, T, H)
        return self.lm_head(x).float()  # (B, T, V)

    def hidden(self, input_ids, attention_mask=None, position_ids=None, cache=None, keep=0):
        """The final-normed hidden states (B, T, H) that `lm_head` turns into logits; `keep=n`: last n only.

        `forward` is `lm_head(hidden(...)).float()`; `sequence_logprobs` calls this instead so that it
        can apply `lm_head` a chunk of tokens at a time (with V = 151,936 the logits dwarf the rest).
        With `checkpoint_layers` set, in training mode with gradients on, each block keeps only its input
        and recomputes the rest in the backward (transformers' gradient checkpointing, same numbers).
        """
        B, T = input_ids.shape
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()  # (B, T)
        offset = cache.seen[:, None] if cache is not None else 0  # (B, 1): tokens already cached
        if position_ids is None:  # count real tokens only, so left padding does not shift positions
            position_ids = (offset + mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
        key_valid = mask if cache is None else torch.cat([cache.valid[:, :cache.length], mask], 1)  # (B, S)
        attn = attention_mask_4d(key_valid, T)  # (B, 1, T, S) bool
        x = self.model.embed_tokens(input_ids)  # (B, T, H)
        if T == 1:  # decoding: one additive mask for every layer, as `attend` wants it
            attn = torch.zeros(attn.shape, dtype=x.dtype, device=x.device).masked_fill_(~attn, float("-inf"))
        cos, sin = self.model.rotary_emb(position_ids, x.dtype)
        recompute = self.checkpoint_layers and self.training and torch.is_grad_enabled() and cache is None
        for i, block in enumerate(self.model.layers):
            if recompute:
                x = checkpoint(block, x, cos, sin, attn, use_reentrant=False)  # (B, T, H)
            else:
                x = block(x, cos, sin, attn, cache, i)  # (B, T, H)
        if cache is not None:
            cache.advance(mask)
        if keep:
            x = x[:, -keep:]  # (B, keep, H)
        return self.model.norm(x)  # (B, T, H)

    def step(self, tokens, live, cache):
        """Logits (n, V) for one new token per row, appended to `cache`: the sampler's inner loop.

        tokens (n,); live (n,) bool, False for rows that have stopped (their token is padding, which
        no later token attends to). Computes `forward(tokens[:, None], live[:, None], cache=cache)[:, -1]`
        bit for bit (tests/test_qwen.py), written flat for one position: no (B, T) masks to build, no
        Block/Attention/MLP/RMSNorm module calls, RoPE angles looked up in the cache's table. On the tiny
        CPU model, where every operation is too small to hide Python and dispatch overhead, that is
        ~11% less time per token than forward (1.62 vs 1.82 ms, 32 rows, 2 threads).
        """
        cfg = self.config
        n, nh, nkv, D, eps = tokens.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps
        cache.room_for(1)  # before the RoPE lookup below could index past the table
        position = (cache.seen + live.long() - 1).clamp(min=0)  # (n,): forward's positions for T = 1
        x = self.model.embed_tokens(tokens)  # (n, H)
        cos, sin = cache.cos[position][:, None, None], cache.sin[position][:, None, None]  # (n, 1, 1, D) each
        key_valid = torch.cat([cache.valid[:, :cache.length], torch.ones_like(live)[:, None]], 1)  # (n, S): a token sees itself
        bias = torch.zeros(n, 1, 1, key_valid.shape[1], dtype=x.dtype, device=x.device)
        bias.masked_fill_(~key_valid[:, None, None], float("-inf"))  # (n, 1, 1, S)
        for i, block in enumerate(self.model.layers):  # Block.forward and Attention.forward with T = 1
            a = block.self_attn
            h = rms_norm(x, block.input_layernorm.weight, eps)  # (n, H)
            q = a.q_proj(h).view(n, nh, 1, D)
            k = a.k_proj(h).view(n, nkv, 1, D)
            v = a.v_proj(h).view(n, nkv, 1, D)
            if hasattr(a, "q_norm"):
                q, k = a.q_norm(q), a.k_norm(k)
            qk = rope(torch.cat([q, k], 1), cos, sin)  # (n, nh + nkv, 1, D)
            k, v = cache.update(i, qk[:, nh:], v)  # (n, nkv, S, D)
            x = x + a.o_proj(attend(qk[:, :nh], k, v, bias).view(n, nh * D))
            m, h = block.mlp, rms_norm(x, block.post_attention_layernorm.weight, eps)  # MLP.forward, inline
            x = x + m.down_proj(F.silu(m.gate_proj(h)) * m.up_proj(h))
        cache.advance(live[:, None])
        return self.head_logits(rms_norm(x, self.model.norm.weight, eps)).float()  # (n, V)

    def head_logits(self, h):
        """`lm_head(h)` (n, V) for the sampler's n rows; on CPU in fp32 a block of vocabulary rows at a time.

        With Qwen's 151,936-token vocabulary the head's weight is 519 MiB in fp32, a quarter of the
        0.5B model, and one (32 × 896) · (896 × 151,936) matmul streams it at ~71 GFLOP/s on the
        2-core machine; `VOCAB_BLOCK` rows at a time (7 MiB of weight each) run at ~100 (timed alone;
        in the sampler: README, "At the real vocabulary"). Each logit is the same dot product either
        way: the results are bit-identical (tests/test_qwen.py). A vocabulary of at most two blocks
        (the tiny world's 1,024), an adapted (LoRA) head, and other devices and dtypes take the plain call.
        """
        head = self.lm_head
        V = head.weight.shape[0]
        if h.device.type != "cpu" or h.dtype != torch.float32 or type(head) is not nn.Linear or V <= 2 * VOCAB_BLOCK:
            return head(h)
        out = h.new_empty(h.shape[0], V)  # (n, V)
        for s in range(0, V, VOCAB_BLOCK):
            out[:, s:s + VOCAB_BLOCK] = F.linear(h, head.weight[s:s + VOCAB_BLOCK],
                                                 None if head.bias is None else head.bias[s:s + VOCAB_BLOCK])
        return out

    def new_cache(self, batch_size, max_len):
        """An empty KV cache for `batch_size` rows and up to `max_len` tokens, on this model's device/dtype."""
        p = self.model.embed_tokens.weight
        return KVCache(self.config, batch_size, max_len, p.dtype, p.device)
