"""Chapter 8's figure: LoRA's trainable parameters against rank, and the size of the first Adam
update against rank with the scale α/r (LoRA) and α/√r (rsLoRA).

    ch08_lora.png

Parameter counts use the shapes written in the chapter (the embedded base policy's defaults and
Qwen2.5-0.5B-Instruct's config.json numbers); LoRA on q, k, v, o, gate, up, down of every block.
"""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from minigrpo.lora import LoRALinear  # noqa: E402

SHAPES = {  # V, H, I, layers, heads, kv_heads, head_dim
    "embedded base (0.92 M)": (1024, 128, 384, 4, 4, 2, 32),
    "Qwen2.5-0.5B (494 M)": (151_936, 896, 4864, 24, 14, 2, 64),
}


def counts(V, H, I, layers, heads, kv_heads, head_dim, r):
    """(LoRA trainable, base total) for a tied-embedding Qwen2 with LoRA of rank r on all 7 projections."""
    q, kv = heads * head_dim, kv_heads * head_dim
    shapes = [(H, q), (H, kv), (H, kv), (q, H), (H, I), (H, I), (I, H)]  # (in, out)
    lora = layers * sum(r * (i + o) for i, o in shapes)
    block = H * q + q + 2 * (H * kv + kv) + q * H + 3 * H * I + 2 * H
    return lora, V * H + layers * block + H


def first_step_update(r, rslora, alpha=16, d=256, lr=1e-3, seed=0):
    """‖ΔW‖_F after one Adam step on a fresh d × d LoRA layer."""
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(d, d, bias=False), r=r, alpha=alpha, rslora=rslora)
    gen = torch.Generator().manual_seed(123)
    x, target = torch.randn(64, d, generator=gen), torch.randn(64, d, generator=gen)  # (n, in), (n, out)
    opt = torch.optim.Adam([layer.lora_A.weight, layer.lora_B.weight], lr=lr)
    (layer(x) - target).pow(2).mean().backward()
    opt.step()
    with torch.no_grad():
        return layer.delta_weight().norm().item()


def make(out_dir, toy=False):
    from pathlib import Path
    out_dir = Path(out_dir)
    ranks = [1, 2, 4, 8, 16, 32, 64, 128]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, shape in SHAPES.items():
        pct = [100 * lora / base for lora, base in (counts(*shape, r) for r in ranks)]
        a.plot(ranks, pct, "o-", ms=4, label=name)
    a.axvline(16, color="0.7", lw=0.8)
    a.text(17, 0.3, "r = 16 (embedded run)", fontsize=7, color="0.4")
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("rank r")
    a.set_ylabel("trainable parameters (% of base)")
    a.set_title("LoRA on q, k, v, o, gate, up, down", fontsize=9)
    a.legend(fontsize=7)
    franks = [1, 4, 16, 64] if toy else [1, 2, 4, 8, 16, 32, 64, 128]
    d = 64 if toy else 256
    for rslora, label in ((False, "α/r (LoRA)"), (True, "α/√r (rsLoRA)")):
        b.plot(franks, [first_step_update(r, rslora, d=d) for r in franks], "o-", ms=4, label=label)
    b.plot(franks, [16 * 1e-3 * math.sqrt(d / 3) / math.sqrt(r) for r in franks], ":", color="0.5",
           label="s·η·√(out·r/3), s = α/r")
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("rank r")
    b.set_ylabel("‖ΔW‖ after one Adam step")
    b.set_title(f"first update, α = 16, {d}×{d} layer", fontsize=9)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "ch08_lora.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    import sys
    make(sys.argv[1] if len(sys.argv) > 1 else ".", toy="--toy" in sys.argv)
