"""Chapter 12's figure: λ and mean safety over the steps of the toy constrained GRPO run.

The toy is the chapter's: a one-parameter Bernoulli policy that refuses a harmful request (curt
refusal: rest 0.72, safety 1) or complies (rest 2.42, safety 0); GRPO advantages with
`SafetyConstraint(threshold=0.8)` mix the two; one REINFORCE step on the refusal logit per step.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minigrpo import SafetyConstraint, group_advantages  # noqa: E402


def toy_run(constraint, steps, B=8, G=4, lr=0.5, seed=0):
    """[(p_refuse, λ, mean safety)] per step of the chapter's toy."""
    gen = torch.Generator().manual_seed(seed)
    theta, hist = torch.zeros(()), []
    for _ in range(steps):
        p = torch.sigmoid(theta)
        refuse = torch.rand(B, G, generator=gen) < p  # (B, G)
        rest = torch.where(refuse, 0.72, 2.42) + 0.05 * torch.randn(B, G, generator=gen)
        safety = (refuse.float() + 0.05 * torch.randn(B, G, generator=gen)).clamp(0, 1)
        r = torch.stack([rest, safety], -1)  # (B, G, K=2)
        adv, diag = group_advantages(r, constraint=constraint, aspects=["rest", "safety"])
        theta = theta + lr * (adv * (refuse.float() - p)).mean()
        hist.append((p.item(), diag["lambda"], safety.mean().item()))
    return hist


def make(out_dir, toy=False):
    steps, seeds, tau = (40, 1, 0.8) if toy else (600, 3, 0.8)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax2 = ax.twinx()
    for seed in range(seeds):
        h = toy_run(SafetyConstraint(threshold=tau, lr=0.1), steps, seed=seed)
        x = range(1, steps + 1)
        ax.plot(x, [v[1] for v in h], color="tab:red", lw=1.2, alpha=0.8, label="λ" if seed == 0 else None)
        # safety smoothed over 10 steps: per-step means over 32 samples are noisy
        s = torch.tensor([v[2] for v in h])
        smooth = torch.nn.functional.avg_pool1d(s[None, None], 10, 1, padding=0)[0, 0] if steps >= 10 else s
        ax2.plot(range(10, 10 + len(smooth)) if steps >= 10 else x, smooth.tolist(), color="tab:blue", lw=1.0,
                 alpha=0.8, label="mean safety (10-step avg)" if seed == 0 else None)
    ax.axhline(1.0, color="tab:red", ls=":", lw=0.8)
    ax2.axhline(tau, color="tab:blue", ls="--", lw=0.8, label=f"τ = {tau}")
    ax.set_xlabel("step")
    ax.set_ylabel("λ (dotted: the tipping point λ = 1)", color="tab:red")
    ax2.set_ylabel("mean safety", color="tab:blue")
    ax2.set_ylim(0, 1.05)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    ax.set_title(f"Dual ascent on λ: safety oscillates around τ ({seeds} seed{'s' if seeds > 1 else ''})", fontsize=10)
    fig.tight_layout()
    fig.savefig(f"{out_dir}/ch12_lambda.png", dpi=90)
    plt.close(fig)
