"""Chapter 14's figure: the metrics of a short real `minigrpo train` run, read as chapter 14 reads them.

The run is the chapter's: a tiny generated world, a random tiny Qwen2 policy and a random (untrained)
reward model, B = 2 prompts × G = 4 samples, LoRA r 4, lr 1e-2. Four panels: the KL to the frozen
base (0 at step 1, then growing), adv_std against its formula √(B(1−f)(G−1)/(N−1)) (below it:
near-constant groups damped by eps), the judge's per-aspect reward_std, and completion_len /
frac_truncated.
"""
import json
import math
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import minigrpo  # noqa: E402
from minigrpo.world.base_policy import TokenizerConfig, train_tokenizer  # noqa: E402
from minigrpo.loader import save_policy  # noqa: E402
from minigrpo.qwen import Qwen, QwenConfig  # noqa: E402
from minigrpo.reward_model import RewardModel, save_reward_model  # noqa: E402
from minigrpo.train import TrainConfig, train  # noqa: E402
from minigrpo.train_rm import roberta_tokenizer, tiny_encoder  # noqa: E402
from minigrpo.world.generator import WorldConfig, make_world  # noqa: E402

ASPECTS = ["politeness", "meaningfulness", "actionability", "safety"]


def short_run(work, steps):
    """The chapter's setup and run, in directory `work`; returns the metrics rows."""
    make_world(WorldConfig(out=f"{work}/world", train=12, test=3, ood=3, sft_per_prompt=2, rm_per_prompt=2))
    train_tokenizer(TokenizerConfig(data=f"{work}/world/sft.jsonl", out=f"{work}/tok", vocab_size=300))
    tok = minigrpo.load_tokenizer(f"{work}/tok")
    torch.manual_seed(0)
    save_policy(Qwen(QwenConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=10000.0)),
                f"{work}/tok", f"{work}/policy")
    texts = [json.loads(line) for line in open(f"{work}/world/sft.jsonl")]
    rm_tok = roberta_tokenizer([r["prompt"] for r in texts] + [r["response"] for r in texts], 300)
    save_reward_model(RewardModel(tiny_encoder(rm_tok.get_vocab_size(), 128, seed=0), rm_tok, ASPECTS, max_length=128),
                      f"{work}/rm")
    return train(TrainConfig(policy=f"{work}/policy", reward_model=f"{work}/rm", prompts=f"{work}/world/prompts_train.jsonl",
                             out=f"{work}/run", steps=steps, batch_size=8, group_size=4, max_new_tokens=8,
                             max_prompt_len=64, lora_r=4, lr=1e-2, seed=0, threads=1, save_every=10_000, log_kl_every=1))


def make(out_dir, toy=False):
    steps = 3 if toy else 40
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as work, open(os.devnull, "w") as null:
        import contextlib
        with contextlib.redirect_stdout(null):
            rows = short_run(work, steps)
    torch.set_num_threads(threads)
    x = [r["step"] for r in rows]
    B, G = 2, 4
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.6))
    ax = axes[0, 0]
    ax.plot(x, [r["loss/kl"] for r in rows], color="tab:purple")
    ax.set_title("loss/kl: 0 at step 1 (LoRA B = 0), then growing", fontsize=9)
    ax = axes[0, 1]
    ax.plot(x, [r["adv_std"] for r in rows], label="adv_std")
    ax.plot(x, [math.sqrt(B * (1 - r["frac_zero_std"]) * (G - 1) / (B * G - 1)) for r in rows], ls="--",
            label="formula √(B(1−f)(G−1)/(N−1))")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=7)
    ax.set_title("adv_std below its formula: groups of near-ties, damped by eps", fontsize=9)
    ax = axes[1, 0]
    for a in ASPECTS:
        ax.plot(x, [r[f"reward_std/{a}"] for r in rows], label=a)
    ax.set_yscale("symlog", linthresh=1e-5)
    ax.legend(fontsize=7)
    ax.set_title("reward_std per aspect: a random judge barely separates answers", fontsize=9)
    ax = axes[1, 1]
    ax.plot(x, [r["completion_len"] for r in rows], label="completion_len (max 8)")
    ax2 = ax.twinx()
    ax2.plot(x, [r["frac_truncated"] for r in rows], color="tab:red", label="frac_truncated")
    ax2.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower left")
    ax2.legend(fontsize=7, loc="lower right")
    ax.set_title("a random policy rarely emits EOS: answers cut at the limit", fontsize=9)
    for a in axes.flat:
        a.set_xlabel("step", fontsize=8)
    fig.suptitle("A short real `minigrpo train` run (random policy, random judge), read metric by metric", fontsize=10)
    fig.tight_layout()
    fig.savefig(f"{out_dir}/ch14_short_run.png", dpi=90)
    plt.close(fig)
