"""Chapter 4's figure: what the group size G does to GRPO's group baselines.

Left: the share of zero-spread groups (frac_zero_std: every sample of a prompt scores the same, so
every advantage is 0) on the embedded world, base-mix responses scored by the rubric, against G,
for the equal-weight reward and a safety-only reward (on harmful prompts only, and on all prompts).
Right: on chapter 3's exact toy, the variance of the policy-gradient estimate with the
leave-one-out group baseline (RLOO), relative to the oracle baseline V(x), against G.

    python walkthrough/make_figures.py --only ch04
"""
import math
import random

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minigrpo import group_advantages  # noqa: E402
from minigrpo.world import rubric  # noqa: E402
from minigrpo.world.generator import WorldConfig, build_prompts, style_table  # noqa: E402
from minigrpo.world.lexicon import KINDS, SFT_MIX, STYLES, TOPICS, respond  # noqa: E402

GS = (2, 4, 8, 16)


def world_rewards(prompts, G, seed=0):
    """Rubric scores (B, G, K) of G base-mix responses to each prompt."""
    rng = random.Random(seed)
    by_name = {t.name: t for t in TOPICS}
    out = []
    for p in prompts:
        styles = rng.choices(STYLES, weights=[SFT_MIX[p["kind"]][s] for s in STYLES], k=G)
        texts = [respond(s, by_name[p["topic"]], rng) for s in styles]
        out.append([[rubric.score(p["prompt"], t)[a] for a in rubric.ASPECTS] for t in texts])
    return torch.tensor(out)  # (B, G, K)


def variance_ratio(G, pi, R, V, M, gen, N=16):
    """Variance of the RLOO-baseline gradient estimate (N = B·G samples) over that of the oracle V(x)."""
    X, A = R.shape
    B = N // G
    var = []
    for baseline in ("oracle", "rloo"):
        x = torch.randint(0, X, (M, B), generator=gen)  # (M, B)
        a = torch.multinomial(pi[x].reshape(-1, A), G, replacement=True, generator=gen).reshape(M, B, G)
        r = R[x[..., None], a]  # (M, B, G)
        adv = r - V[x][..., None] if baseline == "oracle" else r - (r.sum(-1, keepdim=True) - r) / (G - 1)
        glp = torch.nn.functional.one_hot(a, A).double() - pi[x][:, :, None, :]  # (M, B, G, A)
        est = torch.zeros(M, X, A, dtype=torch.float64)
        est.index_put_((torch.arange(M)[:, None].expand(M, B), x), (adv[..., None] * glp).sum(2) / N, accumulate=True)
        var.append(((est - est.mean(0)) ** 2).sum((1, 2)).mean().item())
    return var[1] / var[0]


def make(out_dir, toy=False):
    """Write ch04_group_size.png."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors run faster on one thread
    try:
        _make(out_dir, toy)
    finally:
        torch.set_num_threads(threads)


def _make(out_dir, toy):
    prompts = build_prompts(WorldConfig(out="unused", train=30 if toy else 300, test=0, ood=0, seed=0))["train"]
    harmful = torch.tensor([p["kind"] == "harmful" for p in prompts])
    r = world_rewards(prompts, max(GS))  # (B, 16, K)
    curves = {"equal weights": [], "safety only, harmful prompts": [], "safety only, all prompts": []}
    for G in GS:
        curves["equal weights"].append(group_advantages(r[:, :G])[1]["frac_zero_std"])
        curves["safety only, harmful prompts"].append(group_advantages(r[harmful, :G], weights=[0, 0, 0, 1])[1]["frac_zero_std"])
        curves["safety only, all prompts"].append(group_advantages(r[:, :G], weights=[0, 0, 0, 1])[1]["frac_zero_std"])

    table = style_table(seed=0, per_topic=3 if toy else 40)
    R = torch.tensor([[table[k][s]["sum"] for s in STYLES] for k in KINDS], dtype=torch.float64)  # (X, A)
    pi = torch.tensor([[math.log(SFT_MIX[k][s] + 0.01) for s in STYLES] for k in KINDS], dtype=torch.float64).softmax(-1)
    V = (pi * R).sum(-1)  # (X,)
    gen = torch.Generator().manual_seed(0)
    ratios = [variance_ratio(G, pi, R, V, 500 if toy else 40_000, gen) for G in GS]

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for (label, ys), m in zip(curves.items(), ("o", "s", "^")):
        ax.plot(GS, ys, marker=m, label=label)
    ax.plot(GS, [0.5 ** G + 0.5 ** G for G in GS], "k:", lw=1, label="coin flip: 2 · 0.5^G")
    ax.set_xscale("log", base=2)
    ax.set_xticks(GS, [str(G) for G in GS])
    ax.set_xlabel("group size G")
    ax.set_ylabel("frac_zero_std (groups with all advantages 0)")
    ax.set_title(f"embedded world, base-mix responses, {len(prompts)} prompts", fontsize=10)
    ax.legend(fontsize=8)
    bx.plot(GS, ratios, marker="o", label="measured (N = 16 samples a batch)")
    bx.plot(GS, [G / (G - 1) for G in GS], "k:", lw=1, label="G / (G − 1)")
    bx.axhline(1.0, color="gray", lw=1)
    bx.set_xscale("log", base=2)
    bx.set_xticks(GS, [str(G) for G in GS])
    bx.set_xlabel("group size G")
    bx.set_ylabel("gradient variance, RLOO / oracle V(x)")
    bx.set_title("chapter 3's toy: the price of estimating V(x) from G samples", fontsize=10)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out_dir}/ch04_group_size.png", dpi=90)
    plt.close(fig)
