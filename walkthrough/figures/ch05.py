"""Chapter 5's figure: GAE's λ trades the critic's bias against the returns' variance.

The toy chain of the chapter: L tokens, each 1 or 0 with probability ½ (a Bernoulli policy with one
shared logit), a reward only at the end, R = mean(tokens) + Normal(0, 0.1²) noise. The true value of
the state after t tokens with k ones is V*(t, k) = (k + (L − t)/2)/L. For four critics (V*, V* plus a
fixed error per state, a constant E[R], and zero — a fresh critic's head) and λ in [0, 1], the
policy-gradient estimate ĝ = Σ_t Â_t · (a_t − ½) (Â from `minigrpo.gae`, γ = 1) is drawn M times.
Left: E[ĝ] over the true gradient (1: unbiased). Right: Var(ĝ) (log scale).

    python walkthrough/make_figures.py --only ch05
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minigrpo import gae  # noqa: E402


def chain(L=16, M=20_000, sigma=0.1, seed=0):
    """Actions a (M, L), end-only rewards (M, L), and the four critics' values {name: (M, L)}."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 2, (M, L), generator=gen).double()  # (M, L)
    k = torch.cat([torch.zeros(M, 1, dtype=torch.float64), a.cumsum(1)[:, :-1]], 1)  # (M, L) ones before t
    t = torch.arange(L, dtype=torch.float64).expand(M, L)  # (M, L)
    rewards = torch.zeros(M, L, dtype=torch.float64)
    rewards[:, -1] = a.mean(1) + sigma * torch.randn(M, generator=gen, dtype=torch.float64)
    v_true = (k + 0.5 * (L - t)) / L  # (M, L)
    err = 0.1 * torch.randn(L, L + 1, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    critics = {"perfect V*": v_true, "V* + fixed error": v_true + err[t.long(), k.long()],
               "constant E[R]": torch.full_like(v_true, 0.5), "zero (fresh critic)": torch.zeros_like(v_true)}
    return a, rewards, critics


def make(out_dir, toy=False):
    lams = [0.0, 0.5, 0.9, 1.0] if toy else [0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0]
    a, rewards, critics = chain(M=500 if toy else 20_000)
    mask = torch.ones_like(a, dtype=torch.bool)
    g_true = 0.25  # Σ_t E[A*_t (a_t − ½)] = L · (1/(2L)) · ½
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, V in critics.items():
        bias, var = [], []
        for lam in lams:
            adv, _ = gae(rewards, V, mask, gamma=1.0, lam=lam)  # (M, L)
            g = (adv * (a - 0.5)).sum(1)  # (M,)
            bias.append(g.mean().item() / g_true)
            var.append(g.var().item())
        ax1.plot(lams, bias, "o-", ms=3, label=name)
        ax2.plot(lams, var, "o-", ms=3, label=name)
    ax1.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax1.set(xlabel="GAE λ", ylabel="E[ĝ] / true gradient", title="bias: 1 is unbiased")
    ax2.set(xlabel="GAE λ", ylabel="Var(ĝ)", yscale="log", title="variance")
    ax1.legend(fontsize=8)
    fig.suptitle(f"GAE on a {a.shape[1]}-token chain, reward at the end only", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "ch05_gae_lambda.png", dpi=90)
    plt.close(fig)
