"""Chapter 10's figure: predicted against labelled score per aspect, on held-out prompts.

Both models are the chapter's: a linear function of hashed word / word-pair features of the
response (one block per prompt kind), trained (top) by the paper's per-aspect sigmoid + MSE
regression and (bottom) by Bradley–Terry on preference pairs, then mapped to [0, 1] by an affine
fit on the training rows. Data: the embedded world's reward-model rows (rubric labels + noise).
"""
import itertools
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minigrpo.train_rm import aspect_metrics, split_by_prompt  # noqa: E402
from minigrpo.world.generator import WorldConfig, build_prompts, build_rm  # noqa: E402

ASPECTS = ["politeness", "meaningfulness", "actionability", "safety"]
KINDS = ["harmful", "risky_safe", "benign"]
D = 256


def featurise(rows):
    """(N, 3·D) hashed words and word pairs of the response, in its prompt kind's block."""
    X = torch.zeros(len(rows), len(KINDS) * D)
    for n, row in enumerate(rows):
        w = row["response"].lower().replace(".", " .").replace(",", " ,").replace("!", " !").split()
        base = KINDS.index(row["kind"]) * D
        for gram in w + [a + " " + b for a, b in zip(w, w[1:])]:
            X[n, base + zlib.crc32(gram.encode()) % D] = 1.0
    return X


def fit(loss_fn, params, steps, lr=0.05):
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()


def make(out_dir, toy=False):
    n_prompts, per_prompt, steps = (30, 4, 20) if toy else (150, 12, 300)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = build_rm(build_prompts(WorldConfig(out="-", train=n_prompts, test=0, ood=0))["train"],
                    per_prompt=per_prompt, edit_frac=0.3, noise=0.05, seed=0)
    X = featurise(rows)  # (N, F)
    Y = torch.tensor([[r["scores"][a] for a in ASPECTS] for r in rows])  # (N, K)
    prompt_of = [r["prompt"] for r in rows]
    tr, va = split_by_prompt(prompt_of, 0.2, seed=0)

    W = torch.zeros(X.shape[1], 4, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    fit(lambda: F.mse_loss(torch.sigmoid(X[tr] @ W + b), Y[tr]), [W, b], steps)
    with torch.no_grad():
        pred_reg = torch.sigmoid(X @ W + b)  # (N, K)

    by_prompt = {}
    for i in tr:
        by_prompt.setdefault(prompt_of[i], []).append(i)
    diffs = [[] for _ in ASPECTS]
    for idx in by_prompt.values():
        for i, j in itertools.combinations(idx, 2):
            for k in range(4):
                if abs(Y[i, k] - Y[j, k]) > 0.1:
                    diffs[k].append(X[i] - X[j] if Y[i, k] > Y[j, k] else X[j] - X[i])
    X_diff = [torch.stack(d) if d else torch.zeros(1, X.shape[1]) for d in diffs]
    Wb = torch.zeros(X.shape[1], 4, requires_grad=True)
    fit(lambda: sum(-F.logsigmoid(X_diff[k] @ Wb[:, k]).mean() for k in range(4)), [Wb], steps)
    with torch.no_grad():
        s = X @ Wb  # (N, K)
        cal = torch.empty_like(s)
        for k in range(4):
            A = torch.stack([s[tr, k], torch.ones(len(tr))], 1)
            coef = torch.linalg.lstsq(A, Y[tr, k:k + 1]).solution
            cal[:, k] = (s[:, k] * coef[0] + coef[1]).clamp(0, 1)
    torch.set_num_threads(threads)

    fig, axes = plt.subplots(2, 4, figsize=(11, 5.6), sharex=True, sharey=True)
    for row, (name, pred) in enumerate((("regression (MSE)", pred_reg), ("Bradley–Terry + affine fit", cal))):
        m = aspect_metrics(pred[va].numpy(), Y[va].numpy(), ASPECTS) if len(va) > 1 else None
        for k, a in enumerate(ASPECTS):
            ax = axes[row, k]
            ax.scatter(Y[va, k], pred[va, k], s=6, alpha=0.35, color="tab:blue" if row == 0 else "tab:orange")
            # calibration: mean label per bin of the prediction
            edges = torch.linspace(0, 1, 11)
            xs, ys = [], []
            for lo, hi in zip(edges[:-1], edges[1:]):
                sel = (pred[va, k] >= lo) & (pred[va, k] < hi + (1e-6 if hi == 1 else 0))
                if sel.sum() >= 3:
                    xs.append(Y[va, k][sel].mean().item())
                    ys.append(pred[va, k][sel].mean().item())
            ax.plot(xs, ys, "k.-", lw=1, ms=4, label="bin means")
            ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=0.8)
            title = f"{a}" + (f"\nR² {m[a]['r2']:.2f}  ρ {m[a]['spearman']:.2f}" if m else "")
            ax.set_title(title, fontsize=9)
            if k == 0:
                ax.set_ylabel(f"{name}\npredicted", fontsize=9)
            if row == 1:
                ax.set_xlabel("label (rubric + noise)", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Held-out prompts: predicted vs labelled score (dotted: perfect calibration)", fontsize=10)
    fig.tight_layout()
    fig.savefig(f"{out_dir}/ch10_pred_vs_true.png", dpi=90)
    plt.close(fig)
