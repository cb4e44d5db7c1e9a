"""Chapter 7's figure: the per-token gradient weight of each loss type against completion length,
and how the mean completion length drifts when a toy policy is trained under each.

    ch07_length_bias.png

The toy (the same as the chapter's): each completion is right or wrong with probability ½ (not
trained), then stops after each token with probability σ(η_wrong) or σ(η_right); the reward is 1
for right answers whatever their length. Only the two stopping logits η train.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minigrpo import group_advantages  # noqa: E402
from minigrpo.loss import LOSS_TYPES, grpo_loss  # noqa: E402


def token_weights(lengths):
    """{loss_type: (N,) weight of one token of each completion} at ratio 1, advantage 1."""
    N, C = len(lengths), int(lengths.max())
    mask = torch.arange(C)[None] < lengths[:, None]  # (N, C)
    out = {}
    for loss_type in LOSS_TYPES:
        logp = torch.zeros(N, C, requires_grad=True)  # (N, C)
        grpo_loss(logp, logp.detach(), torch.ones(N), mask, loss_type=loss_type)[0].backward()
        out[loss_type] = -logp.grad[:, 0]
    return out


def rollout(eta, B, G, C, gen):
    """N = B·G toy completions: logp (N, C) differentiable in eta (2,) = EOS logits (wrong, right); mask; right."""
    N = B * G
    phi = torch.tensor(0.0)
    with torch.no_grad():
        right = torch.rand(N, generator=gen) < torch.sigmoid(phi)  # (N,)
        p_eos = torch.sigmoid(eta)[right.long()]  # (N,)
        u = torch.rand(N, generator=gen)
        length = ((torch.log1p(-u) / torch.log1p(-p_eos)).floor().long() + 1).clamp(max=C)  # (N,)
    t = torch.arange(C)[None]  # (1, C)
    mask = t < length[:, None]  # (N, C)
    e = eta[right.long()][:, None]  # (N, 1)
    stop = (t == length[:, None] - 1) & (length[:, None] < C)  # (N, C)
    logp = torch.where(stop, F.logsigmoid(e), F.logsigmoid(-e))  # (N, C)
    logp = logp + (t == 0) * torch.where(right, F.logsigmoid(phi), F.logsigmoid(-phi))[:, None]
    return logp * mask, mask, right


def train(loss_type, steps, B=16, G=4, C=32, lr=2.0, seed=0):
    """Mean untruncated lengths 1/σ(η) of (wrong, right) answers after each SGD step: (steps, 2)."""
    gen = torch.Generator().manual_seed(seed)
    eta = torch.full((2,), -torch.log(torch.tensor(7.0)).item(), requires_grad=True)  # mean length 8
    opt = torch.optim.SGD([eta], lr=lr)
    history = []
    for _ in range(steps):
        logp, mask, right = rollout(eta, B, G, C, gen)
        adv, _ = group_advantages(right.float().view(B, G, 1))
        loss, _ = grpo_loss(logp, logp.detach(), adv.view(-1), mask, loss_type=loss_type)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((1 / torch.sigmoid(eta.detach())).tolist())
    return torch.tensor(history)


def make(out_dir, toy=False):
    from pathlib import Path
    out_dir = Path(out_dir)
    lengths = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128])
    w = token_weights(lengths)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    styles = {"grpo": ("C0", "o-"), "bnpo": ("C1", "s-"), "dr_grpo": ("C2", "^-"), "dapo": ("C3", "x--")}
    for lt, wt in w.items():
        color, style = styles[lt]
        a.plot(lengths, wt, style, color=color, ms=4, label=lt)
    a.set_xscale("log", base=2)
    a.set_yscale("log", base=2)
    a.set_xlabel("completion length |o| (tokens)")
    a.set_ylabel("gradient weight of one token")
    a.set_title("per-token weight (8 completions, C = 128)", fontsize=9)
    a.legend(fontsize=7)
    steps = 10 if toy else 80
    for lt in ("grpo", "bnpo", "dr_grpo"):
        h = train(lt, steps)
        color = styles[lt][0]
        x = range(1, steps + 1)
        b.plot(x, h[:, 0], "-", color=color, label=f"{lt}: wrong answers")
        b.plot(x, h[:, 1], ":", color=color, lw=2, label=f"{lt}: right answers")
    b.axhline(32, color="0.6", lw=0.8)
    b.text(0.7 * steps, 36, "cap C = 32", fontsize=7, color="0.4")
    b.set_yscale("log")
    b.set_xlabel("SGD step")
    b.set_ylabel("mean length 1/σ(η) (uncut)")
    b.set_title("toy: reward ignores length (dapo = bnpo here)", fontsize=9)
    b.legend(fontsize=6, ncol=1, loc="center right")
    fig.tight_layout()
    fig.savefig(out_dir / "ch07_length_bias.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    import sys
    make(sys.argv[1] if len(sys.argv) > 1 else ".", toy="--toy" in sys.argv)
