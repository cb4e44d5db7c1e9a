"""Chapter 13's figure: the DPO loss and its gradient weight against the log-ratio margin, for several β.

Δ = (log π(y_w) − log π(y_l)) − (log π_ref(y_w) − log π_ref(y_l)) is how much more the policy prefers the
chosen answer than the reference does. The loss of one pair is −log σ(β·Δ) (Rafailov et al. 2023, eq. 7,
computed by `minigrpo.dpo_loss`); the size of its gradient with respect to log π(y_w) is β·σ(−β·Δ) (§4),
read here off autograd. Left: the loss. Right: the gradient weight: pairs the policy already ranks
right (Δ > 0) count less and less; pairs it ranks wrong count up to β.

    python walkthrough/make_figures.py --only ch13
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minigrpo import dpo_loss  # noqa: E402


def make(out_dir, toy=False):
    margins = torch.linspace(-40, 40, 41 if toy else 401, dtype=torch.float64)  # (N,) Δ
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for beta in (0.05, 0.1, 0.5, 1.0):
        loss, weight = [], []
        for d in margins:  # one pair at a time, so the mean over pairs is that pair's loss
            pc = d.clone().view(1).requires_grad_(True)  # log π(y_w) = Δ; the other three log-probs 0
            zero = torch.zeros(1, dtype=torch.float64)
            lo, _ = dpo_loss(pc, zero, zero, zero, beta=beta)
            lo.backward()
            loss.append(lo.item())
            weight.append(-pc.grad.item())  # β·σ(−β·Δ)
        ax1.plot(margins, loss, label=f"β = {beta}")
        ax2.plot(margins, weight, label=f"β = {beta}")
    ax1.axhline(0.6931, color="grey", lw=0.8, ls=":")
    ax1.set(xlabel="Δ: policy log-ratio margin over the reference's (nats)", ylabel="−log σ(βΔ)",
            title="DPO loss (log 2 at Δ = 0)", ylim=(0, 6))
    ax2.set(xlabel="Δ (nats)", ylabel="β·σ(−βΔ)", title="gradient weight on ∇log π(y_w) − ∇log π(y_l)",
            yscale="log", ylim=(1e-4, 1.2))
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "ch13_dpo_loss.png", dpi=90)
    plt.close(fig)
