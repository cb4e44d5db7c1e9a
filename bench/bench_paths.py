"""Two ways of computing the same thing, timed side by side: the measurements behind issue #13's choices.

    .venv/bin/python bench/bench_paths.py [--only head|merged|orientation|bandwidth] [--repeats 5]

  head         log-probs of 520 tokens through the 0.5B shape's head (896 × 151,936, fp32, frozen),
               forward + backward: `VocabBlockedLogprobs` (what sequence_logprobs uses for a frozen
               head) against 128 MiB token chunks, each checkpointed (its path for a trainable head).
  merged       a tiny-model rollout (8 prompts × 4 samples × 48 tokens, EOS off, LoRA r 16 on every
               linear layer, B random): sampling with the adapter branch against `lora_merged`
               (`minigrpo train --sample-merged`).
  orientation  24 distinct cold (4,864 × 896) weights times 32 rows: x·Wᵀ (F.linear, what the model
               runs) against W·xᵀ, and on how many of 210 small shapes the two differ in any bit.
  bandwidth    the machine's read bandwidth: the sum of a 1 GiB fp32 tensor.
The pairs alternate (A B A B …) after a warm-up, so load from other processes falls on both alike;
the median and the best of each are printed. Random weights, built here; nothing is downloaded.
"""
import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sampler import timed  # noqa: E402  (alternating calls after a warm-up each)
from minigrpo.sampler import LOGITS_BYTES, VocabBlockedLogprobs, token_logprobs  # noqa: E402


def alternate(fns, repeats):
    """{name: [seconds]}: bench_sampler's `timed` on the CPU."""
    return timed(fns, "cpu", repeats)


def report(times, unit="s"):
    for name, ts in times.items():
        print(f"    {name:<34} median {statistics.median(ts):8.3f} {unit}   best {min(ts):8.3f} {unit}")


def head(repeats):
    from torch.utils.checkpoint import checkpoint
    V, H, M = 151_936, 896, 520
    torch.manual_seed(0)
    weight = torch.randn(V, H) * 0.02  # frozen
    h0, ids, g = torch.randn(M, H), torch.randint(0, V, (M,)), torch.randn(M)
    chunk = LOGITS_BYTES // (4 * V)
    head_layer = torch.nn.Linear(H, V, bias=False)
    head_layer.weight = torch.nn.Parameter(weight, requires_grad=False)

    def blocks():
        h = h0.clone().requires_grad_()
        lp = VocabBlockedLogprobs.apply(h, weight, ids, 1.0, 2048)
        (lp * g).sum().backward()
        return lp.detach(), h.grad

    def chunks():
        h = h0.clone().requires_grad_()
        lp = torch.cat([checkpoint(token_logprobs, head_layer, h[s:s + chunk], ids[s:s + chunk], 1.0, use_reentrant=False)
                        for s in range(0, M, chunk)])
        (lp * g).sum().backward()
        return lp.detach(), h.grad

    (a, ga), (b, gb) = blocks(), chunks()
    print(f"head: {M} tokens × V = {V:,} (H = {H}), forward + backward; blocks of 2,048 rows vs chunks of {chunk} tokens")
    print(f"    max |Δ log-prob| {(a - b).abs().max():.1e}, max |Δ ∂h| / max |∂h| {((ga - gb).abs().max() / gb.abs().max()):.1e}")
    report(alternate({"vocabulary blocks": blocks, "checkpointed token chunks": chunks}, repeats))


def merged(repeats):
    from minigrpo import add_lora, generate
    from minigrpo.lora import lora_merged
    from minigrpo.qwen import Qwen, QwenConfig
    torch.manual_seed(0)
    model = Qwen(QwenConfig(vocab_size=1024, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=10000.0,
                            tie_word_embeddings=True)).eval()
    add_lora(model, r=16, alpha=32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)  # a trained adapter is not zero
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(10, 1024, (n,), generator=g).tolist() for n in torch.randint(24, 49, (8,), generator=g).tolist()]

    def run():
        generate(model, None, prompts, num_samples=4, max_new_tokens=48, seed=0, eos_token_ids=[], pad_token_id=0)

    def run_merged():
        with lora_merged(model):
            run()

    print("merged: tiny model (H 128, 4 layers, V 1,024), 8 prompts × 4 samples × 48 tokens, LoRA r 16 on 28 layers")
    report(alternate({"adapter branch (default)": run, "lora_merged (--sample-merged)": run_merged}, repeats))


def orientation(repeats):
    torch.manual_seed(0)
    weights = [torch.randn(4864, 896) * 0.02 for _ in range(24)]  # 17 MiB each: cold by the time each comes round
    x = torch.randn(32, 896)

    def x_wt():
        for w in weights:
            F.linear(x, w)

    def w_xt():
        for w in weights:
            torch.mm(w, x.t())

    flops = 2 * 32 * 896 * 4864 * len(weights)
    times = alternate({"x·Wᵀ (F.linear)": x_wt, "W·xᵀ": w_xt}, repeats)
    print("orientation: 32 rows × 24 cold (4,864 × 896) weights")
    for name, ts in times.items():
        print(f"    {name:<34} {flops / min(ts) / 1e9:7.1f} GFLOP/s (best)")
    differ = total = 0
    for M, K, N in itertools.product([1, 3, 8, 17, 24, 32], [16, 128, 384, 896, 4864], [16, 64, 128, 384, 896, 2048, 4864]):
        a, w = torch.randn(M, K), torch.randn(N, K)
        differ += not torch.equal(F.linear(a, w), torch.mm(w, a.t()).t())
        total += 1
    print(f"    results differ in some bit on {differ} of {total} shapes (M ≤ 32, K and N from 16 to 4,864)")


def bandwidth(repeats):
    x = torch.ones(256 << 20)  # 1 GiB fp32
    ts = alternate({"sum": lambda: x.sum()}, repeats)["sum"]
    print(f"bandwidth: read {x.numel() * 4 / min(ts) / 1e9:.1f} GB/s (sum of 1 GiB fp32, best of {repeats})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["head", "merged", "orientation", "bandwidth"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, fn in (("head", head), ("merged", merged), ("orientation", orientation), ("bandwidth", bandwidth)):
        if args.only in (None, name):
            fn(args.repeats)


if __name__ == "__main__":
    main()
