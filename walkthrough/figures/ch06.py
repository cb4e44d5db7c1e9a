"""Chapter 6's figures: the clipped objective against the ratio, and the KL estimators k1, k2, k3.

    ch06_clip.png           −grpo_loss (the objective) and its unclipped r·A, for A = +1 and A = −1
    ch06_kl_estimators.png  bias and std of k1, k2, k3 relative to the exact KL, q = N(0, 1), p = N(μ, 1)
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minigrpo.loss import grpo_loss, kl_k3  # noqa: E402


def clip_figure(out_dir, eps=0.2):
    r = torch.linspace(0.4, 1.6, 241, dtype=torch.float64)  # (N,)
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.2), sharey=False)
    for ax, sign in zip(axes, (1.0, -1.0)):
        logp = r.log()[:, None].clone().requires_grad_(True)  # (N, C=1), log π_old = 0
        A = torch.full((len(r),), sign, dtype=torch.float64)  # (N,)
        # dr_grpo with max length 1 sums per-token losses: each element is its own token's objective
        per_token = [-grpo_loss(logp[i:i + 1], torch.zeros(1, 1, dtype=torch.float64), A[i:i + 1],
                                torch.ones(1, 1), loss_type="dr_grpo", epsilon=eps)[0].item() for i in range(len(r))]
        ax.plot(r, r * sign, "--", color="0.6", label="unclipped  r·A")
        ax.plot(r, per_token, color="C0", lw=2, label="clipped  min(r·A, clip(r)·A)")
        flat = (r > 1 + eps) if sign > 0 else (r < 1 - eps)
        ax.fill_between(r, min(per_token) - 0.1, max(r * sign).item() + 0.1, where=flat.numpy(), color="C3",
                        alpha=0.12, label="gradient 0 (clipped)")
        ax.axvline(1.0, color="0.8", lw=0.8)
        ax.set_title(f"A = {sign:+.0f}: " + ("min(r, 1+ε)·A" if sign > 0 else "max(r, 1−ε)·A"))
        ax.set_xlabel("ratio r = π_θ / π_old")
        ax.set_ylabel("objective (−loss)")
        ax.legend(fontsize=7, loc="upper left" if sign > 0 else "upper right")
    fig.suptitle(f"PPO/GRPO clipped surrogate, ε = {eps} (Schulman et al. 2017, eq. 7)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "ch06_clip.png", dpi=90)
    plt.close(fig)


def kl_figure(out_dir, toy):
    S = 20_000 if toy else 1_000_000
    mus = torch.linspace(0.1, 1.5, 6 if toy else 15)
    x = torch.randn(S, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # samples of q = N(0, 1)
    logq = -x**2 / 2
    rows = {k: ([], []) for k in ("k1", "k2", "k3")}
    true_kl = []
    for mu in mus.tolist():
        logp = -(x - mu) ** 2 / 2
        ell = logp - logq
        true = mu**2 / 2
        true_kl.append(true)
        for k, v in (("k1", -ell), ("k2", ell**2 / 2), ("k3", kl_k3(logq, logp))):
            rows[k][0].append((v.mean().item() - true) / true)
            rows[k][1].append(v.std().item() / true)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    for i, (k, (bias, std)) in enumerate(rows.items()):
        a.plot(true_kl, bias, "o-", ms=3, color=f"C{i}", label=k)
        b.plot(true_kl, std, "o-", ms=3, color=f"C{i}", label=k)
    a.axhline(0, color="0.7", lw=0.8)
    a.set_xlabel("true KL(q‖p) = μ²/2")
    a.set_ylabel("bias / KL")
    a.set_title("relative bias")
    b.set_yscale("log")
    b.set_xlabel("true KL(q‖p) = μ²/2")
    b.set_ylabel("std / KL (one sample)")
    b.set_title("relative standard deviation")
    a.legend(fontsize=8)
    fig.suptitle(f"KL estimators on q = N(0,1), p = N(μ,1), {S:,} samples (Schulman 2020)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "ch06_kl_estimators.png", dpi=90)
    plt.close(fig)


def make(out_dir, toy=False):
    from pathlib import Path
    out_dir = Path(out_dir)
    clip_figure(out_dir)
    kl_figure(out_dir, toy)


if __name__ == "__main__":
    import sys
    make(sys.argv[1] if len(sys.argv) > 1 else ".", toy="--toy" in sys.argv)
