"""The sampler: G completions for each of B prompts with a preallocated KV cache, plus their log-probs.

    rollout = generate(model, tokenizer, prompts, num_samples=G, max_new_tokens=C, temperature=1.0)

1. The B prompts are left-padded to P tokens and prefilled once; each prompt's cache is then
   repeated for its G samples (`KVCache.index_rows`), so N = B·G rows decode together, the G
   samples of a prompt adjacent. Positions count real tokens, so left padding changes nothing.
2. Each step turns the last logits into a token: temperature, then top-k, then top-p, the order of
   transformers' logits warpers; temperature 0 is greedy (argmax, first index on ties).
3. Non-finite logits (NaN weights, a float16 overflow) stop generation with a FloatingPointError
   naming the token position, rather than sampling from a NaN distribution.
4. A row stops after it emits an EOS id (kept in the completion, masked after). When at least a
   quarter of the rows still in the batch have stopped, they are dropped from it (the cache rows
   too), so finished rows stop costing compute; until then they ride along, masked.

Log-probs: `logprobs[i, t]` is log softmax(logits / T) of the sampled token — the temperature-
scaled but NOT top-k/top-p-truncated distribution, which is what `sequence_logprobs` recomputes and
what TRL's GRPO trainer uses for the old policy. Greedy (T = 0) reports log-probs at T = 1.

Randomness, and what is guaranteed: a token is drawn by inverse CDF — the first token whose
cumulative probability exceeds u — with one uniform u per step. The uniforms of row (b, g) come
from numpy's `default_rng([seed, first_prompt + b, g])`: they depend only on the seed, the prompt's
index b in this call (offset by `first_prompt`, 0 by default) and the sample index g. Hence
  * same seed, same prompts, same model and machine → identical rollouts;
  * prompt b's samples do not depend on the other prompts of the call (how many follow it, their
    lengths and hence the padding, when they finish) whenever its logits come out bit-identical.
    Padding and batch shape change float rounding, so in fp32/bf16 a draw landing within rounding
    of a CDF boundary can flip (rare); tests/test_sampler.py checks the claim exactly in fp64;
  * a call on prompts b0 … b1 − 1 of a batch with `first_prompt=b0` draws their rows of the
    whole batch's call: data-parallel ranks each sample a slice of the batch (minigrpo/distributed.py).
seed=None draws the seed from torch's global generator (so `torch.manual_seed` fixes it).
"""
import math
from dataclasses import dataclass, fields, replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from minigrpo.qwen import VOCAB_BLOCK


COMPACT_FRACTION = 0.25  # drop stopped rows from the batch once they are this share of it
LOGITS_BYTES = 2**27  # sequence_logprobs: fp32 logits computed at once, 128 MiB (220 tokens at V = 151,936)


@dataclass
class Rollout:
    """N = B·G sampled sequences, the G samples of each prompt adjacent."""
    prompt_ids: torch.Tensor  # (N, P) left-padded with the pad id
    prompt_mask: torch.Tensor  # (N, P) 1 for real tokens, 0 for padding
    completion_ids: torch.Tensor  # (N, C) the pad id after EOS
    completion_mask: torch.Tensor  # (N, C) 1 up to and including EOS, 0 after
    logprobs: torch.Tensor  # (N, C) log-prob of each sampled token at the sampling temperature, 0 where masked
    finished: torch.Tensor  # (N,) True if the row emitted EOS, False if cut at max_new_tokens
    texts: Optional[list]  # N decoded completions (EOS left out); None when no tokenizer was given
    num_samples: int  # G


def prompt_token_lists(prompts, tokenizer, chat, vocab_size):
    """Token-id lists of the prompts: strings are encoded (as a user chat turn with `chat`), lists kept."""
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if tokenizer is None:
                raise ValueError(f"prompt {i}: a string needs a tokenizer; pass token-id lists or a tokenizer")
            p = tokenizer.encode_chat([{"role": "user", "content": p}]) if chat else tokenizer.encode(p)
        elif isinstance(p, torch.Tensor):
            p = p.tolist()
        p = list(p)
        if not p:
            raise ValueError(f"prompt {i}: empty; the model needs at least one token to condition on")
        if not all(isinstance(t, int) and 0 <= t < vocab_size for t in p):
            bad = next(t for t in p if not (isinstance(t, int) and 0 <= t < vocab_size))
            raise ValueError(f"prompt {i}: token {bad!r} is not an id in [0, {vocab_size})")
        out.append(p)
    return out


def left_pad(rows, pad_id, device):
    """Left-padded ids (B, P) and mask (B, P) from lists of token ids."""
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad_id, dtype=torch.long)  # (B, P)
    mask = torch.zeros(len(rows), P, dtype=torch.long)  # (B, P)
    for b, r in enumerate(rows):
        ids[b, P - len(r):] = torch.tensor(r)
        mask[b, P - len(r):] = 1
    return ids.to(device), mask.to(device)


def filter_logits(logits, top_k=0, top_p=1.0):
    """Set to -inf the tokens top-k, then top-p, rule out; (n, V) → (n, V).

    top-k keeps tokens whose logit is ≥ the k-th largest (ties kept), as transformers' TopKLogitsWarper;
    top-p keeps a token while the mass of the tokens ranked above it is < top_p (the smallest set
    reaching top_p, at least one token), as transformers' TopPLogitsWarper.
    """
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (n, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ranked, order = logits.sort(-1, descending=True)  # (n, V) each
        probs = ranked.softmax(-1)  # (n, V)
        above = probs.cumsum(-1) - probs  # (n, V): mass of the tokens ranked higher
        drop = (above >= top_p).scatter(-1, order, above >= top_p)  # (n, V), back in vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(logits, u, out=None):
    """Inverse-CDF sampling: for each row, the first token whose cumulative probability exceeds u (n,).

    `out`: an (n, V) fp64 buffer for the CDF, reused by the sampler from one token to the next (at
    V = 151,936 a fresh 37 MiB tensor each token costs as much in page faults as the cumsum itself).
    """
    cdf = torch.cumsum(logits.softmax(-1), -1, dtype=torch.float64, out=out)  # (n, V), fp64 so the last entries are not rounded away
    total = cdf[:, -1:].contiguous()  # (n, 1), 1 up to rounding
    tok = torch.searchsorted(cdf, u[:, None] * total, right=True)  # (n, 1)
    last = torch.searchsorted(cdf, total, right=False)  # (n, 1): the last token of non-zero probability
    return torch.minimum(tok, last).squeeze(1)  # (n,): guards u·total rounding up to total


def sample_tokens(logits, u, temperature=1.0, top_k=0, top_p=1.0, cdf_out=None):
    """Tokens (n,) from last logits (n, V) and uniforms u (n,), with their log-probs (n,) under softmax(logits/T)."""
    if temperature == 0:
        scaled = logits  # greedy; log-probs at T = 1
        tok = logits.argmax(-1)  # (n,)
    else:
        scaled = logits if temperature == 1 else logits / temperature  # (n, V)
        tok = draw(filter_logits(scaled, top_k, top_p), u, cdf_out)  # (n,)
    logp = scaled.log_softmax(-1).gather(-1, tok[:, None]).squeeze(1)  # (n,)
    return tok, logp


def row_uniforms(seed, B, G, C, first_prompt=0):
    """(B·G, C) uniforms in [0, 1) in fp64; row b·G + g from numpy's default_rng([seed, first_prompt + b, g])."""
    u = np.stack([np.random.default_rng([seed, first_prompt + b, g]).random(C) for b in range(B) for g in range(G)])
    return torch.from_numpy(u)  # (N, C)


def generate(model, tokenizer, prompts, num_samples=1, max_new_tokens=64, temperature=1.0, top_p=1.0, top_k=0,
             seed=None, chat=False, eos_token_ids=None, pad_token_id=None, compact=True, first_prompt=0):
    """Sample `num_samples` completions of each prompt; returns a `Rollout` (see the module docstring).

    prompts: strings (encoded as they are, or as one user chat turn with `chat=True`) or token-id
    lists. eos_token_ids / pad_token_id default to the tokenizer's; `eos_token_ids=[]` never stops
    early. `tokenizer` may be None when prompts are ids and both ids are given. `compact=False`
    keeps stopped rows in the batch (same tokens; for tests and benchmarks). `first_prompt` is the
    index of prompts[0] in a larger batch whose other prompts another process samples: prompt b
    draws the uniforms of prompt first_prompt + b (module docstring). The model runs in
    whatever mode it is in: call `model.eval()` first unless LoRA dropout while sampling is wanted.
    """
    with torch.inference_mode():  # no autograd bookkeeping at all: ~10% faster than no_grad on CPU
        ro = _generate(model, tokenizer, prompts, num_samples, max_new_tokens, temperature, top_p, top_k,
                       seed, chat, eos_token_ids, pad_token_id, compact, first_prompt)
    # inference tensors may not enter autograd (sequence_logprobs with gradients): return plain copies
    return replace(ro, **{f.name: getattr(ro, f.name).clone() for f in fields(ro)
                          if isinstance(getattr(ro, f.name), torch.Tensor)})


def _generate(model, tokenizer, prompts, num_samples, max_new_tokens, temperature, top_p, top_k,
              seed, chat, eos_token_ids, pad_token_id, compact, first_prompt):
    p = model.model.embed_tokens.weight
    device, V = p.device, model.config.vocab_size
    for name, value, ok in [("num_samples", num_samples, isinstance(num_samples, int) and num_samples >= 1),
                            ("max_new_tokens", max_new_tokens, isinstance(max_new_tokens, int) and max_new_tokens >= 1),
                            ("temperature", temperature, temperature >= 0), ("top_p", top_p, 0 < top_p <= 1),
                            ("top_k", top_k, isinstance(top_k, int) and top_k >= 0),
                            ("seed", seed, seed is None or (isinstance(seed, int) and seed >= 0)),
                            ("first_prompt", first_prompt, isinstance(first_prompt, int) and first_prompt >= 0)]:
        if not ok:
            raise ValueError(f"generate: {name} = {value!r} is out of range")
    eos = list(tokenizer.eos_token_ids if eos_token_ids is None else eos_token_ids)
    pad = pad_token_id if pad_token_id is not None else (tokenizer.pad_token_id if tokenizer is not None else 0)
    rows = prompt_token_lists(prompts, tokenizer, chat, V)
    if not rows:
        raise ValueError("generate: no prompts")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    B, G, C = len(rows), num_samples, max_new_tokens
    N = B * G
    prompt_ids, prompt_mask = left_pad(rows, pad, device)  # (B, P) each

    # ---------------------------------------------------------------- prefill once, share among G
    cache = model.new_cache(B, prompt_ids.shape[1] + C)
    logits = model(prompt_ids, prompt_mask, cache=cache, logits_to_keep=1)[:, -1]  # (B, V)
    expand = torch.arange(B, device=device).repeat_interleave(G)  # (N,)
    cache.index_rows(expand)
    logits = logits[expand]  # (N, V)

    # ---------------------------------------------------------------- decode
    u = row_uniforms(seed, B, G, C, first_prompt).to(device)  # (N, C)
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)  # (E,)
    out_ids = torch.full((N, C), pad, dtype=torch.long, device=device)  # (N, C)
    out_lp = torch.zeros(N, C, device=device)  # (N, C)
    out_mask = torch.zeros(N, C, dtype=torch.long, device=device)  # (N, C)
    active = torch.arange(N, device=device)  # (n,): the output row of each row in the batch
    stopped = torch.zeros(N, dtype=torch.bool, device=device)  # (n,): rows of the batch that emitted EOS
    cdf = torch.empty(N, V, dtype=torch.float64, device=device)  # (N, V): draw's buffer, its first n rows in use
    for t in range(C):
        # else the sampler indexes past the vocabulary. A row's sum is finite only if each of its logits
        # is (NaN and ±inf propagate), so the elementwise check, 40-50× slower at V = 151,936, runs only
        # when some row's sum is not (a stopped row's, or an fp32 overflow of huge finite logits)
        if not bool(torch.isfinite(logits.sum(-1)).all()) and not bool(torch.isfinite(logits[~stopped]).all()):
            raise FloatingPointError(f"the policy's logits are not finite at new token {t + 1} (NaN or inf weights, "
                                     "or a float16 overflow: try --dtype bfloat16 or float32)")
        tok, lp = sample_tokens(logits, u[active, t], temperature, top_k, top_p, cdf[:len(active)])  # (n,), (n,)
        out_ids[active, t] = tok.masked_fill(stopped, pad)
        out_lp[active, t] = lp.masked_fill(stopped, 0.0)
        out_mask[active, t] = (~stopped).long()
        stopped = stopped | torch.isin(tok, eos_t)  # (n,)
        n_stopped = int(stopped.sum())
        if n_stopped == len(active) or t == C - 1:
            break
        if compact and n_stopped >= COMPACT_FRACTION * len(active):  # drop stopped rows, their cache rows too
            keep = (~stopped).nonzero().squeeze(1)  # (n',)
            cache.index_rows(keep)
            active, tok, stopped = active[keep], tok[keep], stopped[keep]
        logits = model.step(tok, ~stopped, cache)  # (n, V); stopped rows masked

    C = t + 1  # all rows may have stopped before max_new_tokens
    completion_ids, completion_mask, logprobs = out_ids[:, :C], out_mask[:, :C], out_lp[:, :C]  # (N, C) each
    length = completion_mask.sum(1)  # (N,), at least 1
    finished = torch.isin(completion_ids.gather(1, (length - 1)[:, None]).squeeze(1), eos_t)  # (N,): ends on EOS
    texts = None
    if tokenizer is not None:
        keep = (length - finished.long()).tolist()  # leave the EOS out of the text
        texts = [tokenizer.decode(r[:n]) for r, n in zip(completion_ids.tolist(), keep)]
    return Rollout(prompt_ids=prompt_ids[expand], prompt_mask=prompt_mask[expand], completion_ids=completion_ids,
                   completion_mask=completion_mask, logprobs=logprobs, finished=finished, texts=texts,
                   num_samples=G)


def at_least_fp32(logits):
    """bf16 / fp16 logits in fp32 (as Qwen.forward returns them); fp32 and fp64 unchanged."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def token_logprobs(lm_head, h, ids, temperature):
    """log softmax(lm_head(h) / T)[ids]: h (..., H), ids (...) → (...), via fp32 logits (..., V)."""
    logits = at_least_fp32(lm_head(h))  # (..., V)
    if temperature > 0 and temperature != 1:  # x / 1 is x: skip the copy
        logits = logits / temperature
    return logits.gather(-1, ids[..., None]).squeeze(-1) - logits.logsumexp(-1)  # (...)  log p = z_t − logsumexp(z)


def _block_logits(h, weight, temperature):
    """z = h Wᵀ / T for one block of vocabulary rows: (M, H), (b, H) → (M, b)."""
    z = F.linear(h, weight)  # (M, b)
    return z / temperature if temperature > 0 and temperature != 1 else z


def _rows_in(ids, start, stop):
    """Indices of the rows whose token id lies in the vocabulary block [start, stop)."""
    return ((ids >= start) & (ids < stop)).nonzero().squeeze(1)


class VocabBlockedLogprobs(torch.autograd.Function):
    """log softmax(h Wᵀ / T)[ids] for a frozen head W, one block of vocabulary rows at a time.

    h (M, H), W (V, H), ids (M,) → (M,). Forward: the logsumexp over V is accumulated block by block
    with a running maximum (the online softmax of Milakov & Gimelshein 2018, arXiv 1805.02867), and
    each token's own logit is picked from the block that holds it. Backward: ∂(z_t − lse)/∂z_j =
    1[j = t] − softmax(z)_j, so each block's logits are recomputed, turned into g·(1[j = t] − p_j)/T
    and multiplied into ∂h (Cut Cross-Entropy, Wijmans et al. 2024, arXiv 2411.09009, does the same
    fused on GPU). Nothing (M, V) ever exists: the largest temporary is (M, block), and W is read
    twice per forward + backward, whatever M, where token chunks read it three times per chunk.
    """

    @staticmethod
    def forward(ctx, h, weight, ids, temperature, block):
        M = h.shape[0]
        run_max = torch.full((M,), -math.inf, device=h.device)  # (M,) running max of the logits
        run_sum = torch.zeros(M, device=h.device)  # (M,) Σ exp(z − run_max) so far
        picked = torch.zeros(M, device=h.device)  # (M,) z_t, the sampled token's logit
        for s in range(0, weight.shape[0], block):
            z = _block_logits(h, weight[s:s + block], temperature)  # (M, b)
            new_max = torch.maximum(run_max, z.amax(-1))  # (M,)
            run_sum = run_sum * (run_max - new_max).exp() + (z - new_max[:, None]).exp().sum(-1)
            run_max = new_max
            rows = _rows_in(ids, s, s + z.shape[1])
            picked[rows] = z[rows, ids[rows] - s]
        lse = run_max + run_sum.log()  # (M,) logsumexp over the whole vocabulary
        ctx.save_for_backward(h, weight, ids, lse)
        ctx.temperature, ctx.block = temperature, block
        return picked - lse  # (M,)

    @staticmethod
    def backward(ctx, g):  # g (M,): ∂loss/∂logp
        h, weight, ids, lse = ctx.saved_tensors
        T, block = ctx.temperature, ctx.block
        grad = torch.zeros_like(h)  # (M, H)
        for s in range(0, weight.shape[0], block):
            w = weight[s:s + block]  # (b, H)
            dz = (_block_logits(h, w, T) - lse[:, None]).exp_().mul_(-g[:, None])  # (M, b): −g·p_j
            rows = _rows_in(ids, s, s + w.shape[0])
            dz[rows, ids[rows] - s] += g[rows]  # + g at j = t
            if T > 0 and T != 1:
                dz /= T  # z = h Wᵀ / T
            grad.addmm_(dz, w)  # ∂h += dz W
        return grad, None, None, None, None


def sequence_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0,
                      max_logits_bytes=LOGITS_BYTES):
    """Log-probs (N, C) of the completion tokens under `model` at `temperature`, 0 where masked.

    One forward of prompt + completion (N, T) to the final hidden states of the last C + 1
    positions. When the batch's fp32 logits fit in `max_logits_bytes` (the tiny world, always) they
    are computed as a plain forward would. Otherwise (N = 32, C = 128, V = 151,936 would be 2.5 GB)
    the fp32 logits (N, C, V) never exist at once:
      * a frozen fp32 `lm_head` without bias, outside autocast (every CPU run, an fp32 GPU run):
        `VocabBlockedLogprobs` over blocks of `VOCAB_BLOCK` vocabulary rows (fewer if N·C·block·4
        bytes would pass `max_logits_bytes`), all N·C tokens at once; the largest temporary is
        (N·C, block), and the log-probs match the plain computation to fp32 rounding (~2e-6);
      * otherwise (a trainable or adapted head, bf16 under autocast) `lm_head`, the log-softmax and
        the gather run on `max_logits_bytes // (4·V)` tokens at a time, each chunk checkpointed so
        the backward recomputes its logits: peak extra memory about 5 × max_logits_bytes (logits,
        their exp, their gradient), gradients exact, one more `lm_head` forward per chunk.
    Differentiable: the GRPO loss calls it with gradients on. T = 0 is read as T = 1 (as `generate`).
    """
    N, C = completion_ids.shape
    V = model.config.vocab_size
    ids = torch.cat([prompt_ids, completion_ids], 1)  # (N, T)
    mask = torch.cat([prompt_mask, completion_mask], 1)  # (N, T)
    h = model.hidden(ids, mask, keep=C + 1)  # (N, C + 1, H): position P-1+j predicts token j
    chunk = max(1, max_logits_bytes // (4 * V))  # tokens per chunk
    if N * (C + 1) <= chunk:  # one chunk: a plain forward (the last position's logits are dropped)
        logits = at_least_fp32(model.lm_head(h))[:, :-1]  # (N, C, V)
        if temperature > 0 and temperature != 1:
            logits = logits / temperature
        logp = logits.gather(-1, completion_ids[..., None]).squeeze(-1) - logits.logsumexp(-1)  # (N, C)
        return logp * completion_mask
    h = h[:, :-1].reshape(N * C, -1)  # (N·C, H)
    flat = completion_ids.reshape(N * C)  # (N·C,)
    head = model.lm_head
    if (type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad
            and h.dtype == head.weight.dtype == torch.float32 and not torch.is_autocast_enabled(h.device.type)):
        block = max(1, min(VOCAB_BLOCK, max_logits_bytes // (4 * N * C)))  # vocabulary rows per block
        return VocabBlockedLogprobs.apply(h, head.weight, flat, temperature, block).view(N, C) * completion_mask
    grad = torch.is_grad_enabled() and (h.requires_grad or any(p.requires_grad for p in model.lm_head.parameters()))
    parts = []
    for s in range(0, N * C, chunk):
        if grad:  # keep only h's chunk; the backward recomputes the chunk's logits
            parts.append(checkpoint(token_logprobs, model.lm_head, h[s:s + chunk], flat[s:s + chunk], temperature,
                                    use_reentrant=False))  # (chunk,)
        else:
            parts.append(token_logprobs(model.lm_head, h[s:s + chunk], flat[s:s + chunk], temperature))  # (chunk,)
    return torch.cat(parts).view(N, C) * completion_mask  # (N, C)
