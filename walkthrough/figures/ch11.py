"""Chapter 11's figure: mean reward per step of the hand-written GRPO loop, mean ± std over seeds.

The loop is the chapter's: a random tiny Qwen2 (16-token vocabulary) with LoRA r 4, a toy reward
of K = 2 aspects (share of low tokens, share of even tokens; maximum 2), B = 3 prompts × G = 4.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import minigrpo  # noqa: E402
from minigrpo.qwen import Qwen, QwenConfig  # noqa: E402

PROMPTS = [[3, 5, 7], [9, 11], [13, 6, 4, 2]]


def toy_rewards(completion_ids, mask):  # (N, C) → (N, K=2)
    n = mask.sum(1).clamp(min=1)
    low = ((completion_ids < 8) & mask.bool()).sum(1) / n
    even = ((completion_ids % 2 == 0) & mask.bool()).sum(1) / n
    return torch.stack([low, even], 1)


def hand_run(seed, steps, G=4, lr=1e-2):
    """Mean reward per step of the chapter's loop."""
    torch.manual_seed(seed)
    cfg = QwenConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=10000.0)
    policy = Qwen(cfg)
    for p in policy.parameters():
        p.requires_grad_(False)
    minigrpo.add_lora(policy, r=4, alpha=8)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    out = []
    for step in range(steps):
        policy.eval()
        with torch.no_grad():
            ro = minigrpo.generate(policy, None, PROMPTS, num_samples=G, max_new_tokens=6,
                                   seed=seed * 1000 + step, eos_token_ids=[], pad_token_id=0)
        rewards = toy_rewards(ro.completion_ids, ro.completion_mask)  # (N, K)
        adv, _ = minigrpo.group_advantages(rewards.view(len(PROMPTS), G, 2))  # (B, G)
        policy.train()
        logp = minigrpo.sequence_logprobs(policy, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
        loss, _ = minigrpo.grpo_loss(logp, logp.detach(), adv.reshape(-1), ro.completion_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(rewards.sum(1).mean().item())
    return out


def make(out_dir, toy=False):
    steps, seeds = (6, 2) if toy else (80, 8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    curves = torch.tensor([hand_run(s, steps) for s in range(seeds)])  # (seeds, steps)
    torch.set_num_threads(threads)
    mean, std = curves.mean(0), curves.std(0)
    x = range(1, steps + 1)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.plot(x, mean, color="tab:blue", label=f"mean over {seeds} seeds")
    ax.fill_between(x, mean - std, mean + std, color="tab:blue", alpha=0.2, label="± 1 std")
    ax.axhline(2.0, color="grey", ls=":", lw=0.8, label="maximum R = 2")
    ax.set_xlabel("step (B = 3 prompts × G = 4 samples)")
    ax.set_ylabel("mean reward R = low + even")
    ax.set_ylim(0.5, 2.1)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("GRPO by hand on a toy reward: a random tiny Qwen2 with LoRA learns", fontsize=10)
    fig.tight_layout()
    fig.savefig(f"{out_dir}/ch11_hand_loop.png", dpi=90)
    plt.close(fig)
