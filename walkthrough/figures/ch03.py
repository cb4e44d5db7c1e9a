"""Chapter 3's figure: a baseline leaves the policy gradient unbiased and cuts its variance.

The toy of the chapter: 3 prompt kinds (states), 8 response styles (actions), a softmax policy
θ (3, 8) started at the world's base mix, rewards = the style table's equal-weight sums (fixed).
Left: the variance of a one-sample REINFORCE gradient estimate for several baselines, computed
exactly from the policy, with and without a prompt-dependent shift of the rewards. Right: expected
reward J(θ) during REINFORCE training, without a baseline and with the per-prompt value V(x).

    python walkthrough/make_figures.py --only ch03
"""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from minigrpo.world.generator import style_table  # noqa: E402
from minigrpo.world.lexicon import KINDS, SFT_MIX, STYLES  # noqa: E402


def exact_variance(pi, R, b):
    """Variance (trace of the covariance) of the one-sample estimate (R − b)·∇log π; pi, R (K, A), b (K,)."""
    K = pi.shape[0]
    sq = 1 - 2 * pi + (pi ** 2).sum(-1, keepdim=True)  # (K, A): ‖e_a − π(·|x)‖²
    V = (pi * R).sum(-1, keepdim=True)  # (K, 1)
    g = pi * (R - V) / K  # (K, A): the exact gradient of J
    return ((pi * (R - b[:, None]) ** 2 * sq).sum(-1).mean() - (g ** 2).sum()).item()


def train(R, theta0, use_baseline, steps, N=16, lr=0.5, seed=0):
    """REINFORCE on the toy; returns J(θ) before each step and at the end."""
    gen = torch.Generator().manual_seed(seed)
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=lr)
    K = R.shape[0]
    J = []
    for _ in range(steps):
        with torch.no_grad():
            pi = theta.softmax(-1)  # (K, A)
            J.append((pi * R).sum(-1).mean().item())
            x = torch.randint(0, K, (N,), generator=gen)  # (N,) prompts
            a = torch.multinomial(pi[x], 1, generator=gen).squeeze(1)  # (N,) responses
            b = (pi * R).sum(-1)[x] if use_baseline else torch.zeros(N, dtype=R.dtype)  # (N,)
        loss = -((R[x, a] - b) * theta.log_softmax(-1)[x, a]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    J.append(((theta.detach().softmax(-1)) * R).sum(-1).mean().item())
    return J


def make(out_dir, toy=False):
    """Write ch03_baseline_variance.png."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors run faster on one thread
    try:
        _make(out_dir, toy)
    finally:
        torch.set_num_threads(threads)


def _make(out_dir, toy):
    table = style_table(seed=0, per_topic=3 if toy else 40)
    R = torch.tensor([[table[k][s]["sum"] for s in STYLES] for k in KINDS], dtype=torch.float64)  # (K, A)
    theta0 = torch.tensor([[math.log(SFT_MIX[k][s] + 0.01) for s in STYLES] for k in KINDS], dtype=torch.float64)
    pi = theta0.softmax(-1)
    shift = torch.tensor([0.0, 1.5, 3.0], dtype=torch.float64)  # (K,) prompt-dependent offsets

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["none", "constant\nJ(θ)", "per-prompt\nV(x)"]
    for j, (label, Rx) in enumerate((("style-table rewards", R), ("+ prompt shifts 0, 1.5, 3", R + shift[:, None]))):
        V = (pi * Rx).sum(-1)  # (K,)
        J = V.mean()
        bs = [torch.zeros(3, dtype=R.dtype), J.repeat(3), V]
        var = [exact_variance(pi, Rx, b) for b in bs]
        ax.bar(np.arange(3) + (j - 0.5) * 0.38, var, width=0.38, label=label)
        for i, v in enumerate(var):
            ax.text(i + (j - 0.5) * 0.38, v * 1.1, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(range(3), names)
    ax.set_ylabel("variance of one-sample gradient estimate")
    ax.set_title("baselines: same mean gradient, different noise", fontsize=10)
    ax.legend(fontsize=8)

    steps, seeds = (20, 2) if toy else (150, 8)
    for use, color, label in ((False, "#c44e52", "no baseline"), (True, "#4c72b0", "baseline V(x)")):
        runs = np.array([train(R, theta0, use, steps, seed=s) for s in range(seeds)])  # (seeds, steps + 1)
        for r in runs:
            bx.plot(r, color=color, alpha=0.25, lw=0.8)
        bx.plot(runs.mean(0), color=color, lw=2, label=f"{label} (mean of {seeds} seeds)")
    bx.axhline(R.max(-1).values.mean().item(), color="gray", ls="--", lw=1, label="best possible J")
    bx.set_xlabel("REINFORCE step (16 samples each, SGD lr 0.5)")
    bx.set_ylabel("expected reward J(θ)")
    bx.set_title("training the toy policy", fontsize=10)
    bx.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(f"{out_dir}/ch03_baseline_variance.png", dpi=90)
    plt.close(fig)
