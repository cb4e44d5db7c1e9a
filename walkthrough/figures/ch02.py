"""Chapter 2's figure: a tiny Qwen trained on a counting language, as a policy at three temperatures.

Left: the next-token distribution π(a | s) after the prompt 5 6 7 at T = 0.5, 1, 2. Right: the
sequence log-probabilities log π(y | x) (at T = 1) of 8-token completions sampled at each T.

    python walkthrough/make_figures.py --only ch02
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import minigrpo  # noqa: E402
from minigrpo.qwen import Qwen, QwenConfig  # noqa: E402

V = 32  # tokens 0 (pad) and 1 (unused) plus the counting alphabet 2..31
TEMPERATURES = (0.5, 1.0, 2.0)


def counting_batch(n, T, g):
    """(n, T) sequences of 2..31: each token is the previous + 1 (prob 0.75) or + 2 (prob 0.25), wrapping."""
    x = torch.empty(n, T, dtype=torch.long)
    x[:, 0] = torch.randint(2, V, (n,), generator=g)
    for t in range(1, T):
        jump = 1 + (torch.rand(n, generator=g) < 0.25).long()  # (n,)
        x[:, t] = (x[:, t - 1] - 2 + jump) % (V - 2) + 2
    return x


def trained_policy(steps):
    """The chapter's tiny Qwen, trained by next-token cross-entropy on the counting language."""
    torch.manual_seed(0)
    cfg = QwenConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=10000.0)
    model = Qwen(cfg)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        x = counting_batch(64, 12, g)  # (n, T)
        logits = model(x[:, :-1])  # (n, T-1, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def make(out_dir, toy=False):
    """Write ch02_temperature.png."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model runs faster on one thread
    try:
        model = trained_policy(steps=10 if toy else 40)
        prompt = [5, 6, 7]
        G = 8 if toy else 400
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
        with torch.no_grad():
            z = model(torch.tensor([prompt]))[0, -1]  # (V,)
            width = 0.8 / len(TEMPERATURES)
            for i, T in enumerate(TEMPERATURES):
                p = (z / T).softmax(-1)[2:16].numpy()
                ax.bar(torch.arange(2, 16).numpy() + (i - 1) * width, p, width=width, label=f"T = {T}")
                ro = minigrpo.generate(model, None, [prompt], num_samples=G, max_new_tokens=8, temperature=T,
                                       seed=1, eos_token_ids=[], pad_token_id=0)
                lp = minigrpo.sequence_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids,
                                                ro.completion_mask).sum(1)  # (G,) at T = 1
                bx.hist(lp.numpy(), bins=30, range=(-40, 0), alpha=0.55, label=f"sampled at T = {T}")
        ax.set_xticks(range(2, 16))
        ax.set_xlabel("next token a")
        ax.set_ylabel("π(a | 5 6 7)")
        ax.set_title("the policy at one state: 8 is +1, 9 is +2", fontsize=10)
        ax.legend(fontsize=8)
        bx.set_xlabel("log π(y | x) of the 8-token completion, at T = 1")
        bx.set_ylabel("samples")
        bx.set_title(f"{G} completions of 5 6 7 per temperature", fontsize=10)
        bx.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        fig.savefig(f"{out_dir}/ch02_temperature.png", dpi=90)
        plt.close(fig)
    finally:
        torch.set_num_threads(threads)
