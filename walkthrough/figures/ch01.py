"""Chapter 1's figure: the style table — mean rubric scores of each response style on each kind of prompt.

    python walkthrough/make_figures.py --only ch01
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minigrpo.reward_model import ASPECTS  # noqa: E402
from minigrpo.world.generator import style_table  # noqa: E402
from minigrpo.world.lexicon import KINDS, STYLES  # noqa: E402


def make(out_dir, toy=False):
    """Write ch01_style_table.png: left, the four-aspect sum per style and kind; right, the aspects on harmful prompts."""
    table = style_table(seed=0, per_topic=3 if toy else 40)
    sums = np.array([[table[k][s]["sum"] for k in KINDS] for s in STYLES])  # (styles, kinds)

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.1, 1.4]})
    im = ax.imshow(sums, cmap="viridis", vmin=1.0, vmax=4.0, aspect="auto")
    ax.set_xticks(range(len(KINDS)), KINDS, rotation=20)
    ax.set_yticks(range(len(STYLES)), STYLES)
    for i in range(len(STYLES)):
        for j in range(len(KINDS)):
            best = sums[i, j] == sums[:, j].max()
            ax.text(j, i, f"{sums[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="black" if sums[i, j] > 2.8 else "white", fontweight="bold" if best else "normal")
    ax.set_title("sum of the 4 rubric aspects (bold: best per kind)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)

    bottom = np.zeros(len(STYLES))
    for a, color in zip(ASPECTS, ("#4c72b0", "#55a868", "#c44e52", "#8172b2")):
        v = np.array([table["harmful"][s][a] for s in STYLES])
        bx.bar(range(len(STYLES)), v, bottom=bottom, color=color, label=a)
        bottom += v
    bx.set_xticks(range(len(STYLES)), STYLES, rotation=30, ha="right")
    bx.set_ylabel("mean rubric score (stacked)")
    bx.set_title("harmful prompts: what each aspect contributes", fontsize=10)
    bx.legend(fontsize=8, loc="upper right", ncol=2)
    bx.set_ylim(0, 4.6)
    fig.tight_layout()
    fig.savefig(f"{out_dir}/ch01_style_table.png", dpi=90)
    plt.close(fig)
