"""Chapter 9's figure: time per generated token against context length, with and without the KV cache.

    ch09_kv_cache.png

Greedy decoding of C tokens after a random prompt of T tokens on a small random Qwen (H = 64,
2 layers), one thread, best of 5 runs. Absolute times depend on the machine (and its load); the shape does not:
without the cache every step reprocesses the whole sequence, with it one position.
"""
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minigrpo.qwen import Qwen, QwenConfig  # noqa: E402


def make_model():
    cfg = QwenConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0)
    torch.manual_seed(0)
    return Qwen(cfg).eval()


@torch.inference_mode()
def greedy_uncached(lm, prompt, C):
    ids = prompt  # (1, T)
    for _ in range(C):
        ids = torch.cat([ids, lm(ids)[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[:, prompt.shape[1]:]


@torch.inference_mode()
def greedy_cached(lm, prompt, C):
    cache = lm.new_cache(1, prompt.shape[1] + C)
    logits = lm(prompt, cache=cache, logits_to_keep=1)[:, -1]  # (1, V)
    live = torch.ones(1, dtype=torch.bool)
    out = []
    for t in range(C):
        tok = logits.argmax(-1)  # (1,)
        out.append(tok)
        if t < C - 1:
            logits = lm.step(tok, live, cache)  # (1, V)
    return torch.stack(out, 1)


def ms_per_token(fn, lm, prompt, C, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(lm, prompt, C)
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / C


def measure(toy):
    """[(ms/token uncached, ms/token cached)] for each prompt length, the lengths, C."""
    lm = make_model()
    Ts = [8, 32] if toy else [8, 16, 32, 64, 128, 256, 512]
    C = 4 if toy else 16
    rows = []
    for T in Ts:
        prompt = torch.randint(0, 128, (1, T), generator=torch.Generator().manual_seed(T))
        assert torch.equal(greedy_uncached(lm, prompt, C), greedy_cached(lm, prompt, C))
        rows.append((ms_per_token(greedy_uncached, lm, prompt, C, 5), ms_per_token(greedy_cached, lm, prompt, C, 5)))
    return rows, Ts, C


def make(out_dir, toy=False):
    from pathlib import Path
    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: steadier timings on a shared machine (restored below)
    try:
        rows, Ts, C = measure(toy)
    finally:
        torch.set_num_threads(threads)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(Ts, [r[0] for r in rows], "o-", ms=4, label="without cache (whole sequence each step)")
    ax.plot(Ts, [r[1] for r in rows], "s-", ms=4, label="with KV cache (one position each step)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompt length T (tokens)")
    ax.set_ylabel("ms per generated token")
    ax.set_title(f"greedy decoding of {C} tokens, H = 64, 2 layers, CPU, 1 thread", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "ch09_kv_cache.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    import sys
    make(sys.argv[1] if len(sys.argv) > 1 else ".", toy="--toy" in sys.argv)
