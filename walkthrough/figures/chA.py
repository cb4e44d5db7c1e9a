"""Appendix A's figure: RoPE's rotation per coordinate pair over positions, and q·k against distance."""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from minigrpo.qwen import Rotary, rope  # noqa: E402


def make(out_dir, toy=False):
    D, base = 64, 10000.0
    T = 64 if toy else 512
    pairs = 32 if toy else 2000  # random (q, k) pairs averaged per distance
    rot = Rotary(D, base)
    cos, sin = rot(torch.arange(T)[None], torch.float32)  # (1, 1, T, D)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    shown = min(T, 128)
    for i in (0, 4, 12, 24, 31):
        a.plot(range(shown), cos[0, 0, :shown, i].numpy(), label=f"pair {i}: θ = {base ** (-2 * i / D):.2g}")
    a.set(title="cos(m·θ_i) of coordinate pair i over position m", xlabel="position m")
    a.legend(fontsize=7)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(pairs, 1, 1, D, generator=g)  # (pairs, heads, T=1, D)
    k = q + 0.5 * torch.randn(pairs, 1, 1, D, generator=g)  # keys that match their queries
    q0 = rope(q, cos[..., :1, :], sin[..., :1, :])  # the query at position 0
    dists = list(range(0, T, max(1, T // 128)))
    means = [(q0 * rope(k, cos[..., d:d + 1, :], sin[..., d:d + 1, :])).sum(-1).mean().item() / D for d in dists]
    b.plot(dists, means)
    b.set(title="mean q·k / D of matched pairs against distance", xlabel="distance n − m")
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "chA_rope.png", dpi=90)
    plt.close(fig)
