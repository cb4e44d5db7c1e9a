"""One GRPO step, minigrpo vs TRL's GRPOTrainer, on the same policy, prompts, reward and settings.

Both sample G completions for B prompts, score them with the same minigrpo reward model (wrapped
as a TRL reward function), compute group advantages and take one LoRA update; the seconds per
step are the median over `--steps` steps after one warm-up step, pooled over `--rounds` rounds
that alternate the two libraries (minigrpo, TRL, minigrpo, TRL, …) so that load from other
processes on a shared machine falls on both alike. Needs `pip install trl` (`make setup` does not
install it) and a trained embedded world (`make train-small`). Equal settings: fp32 and no gradient
checkpointing for both (TRL's GRPOConfig defaults to bf16=True and gradient_checkpointing=True;
`--trl-defaults` keeps them, as runs before this flag did); beta 0 for TRL (no reference forward) and
minigrpo's KL monitoring only on its first, untimed step (`--log-kl-every` 10). `--sample-merged`
adds minigrpo sampling from merged LoRA weights (`minigrpo train --sample-merged`) to each round.

    .venv/bin/python bench/bench_step.py --run runs/full [--steps 6] [--rounds 3]
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def ours(run, steps, B, G, C, lr, sample_merged=False):
    from minigrpo.train import TrainConfig, train
    with tempfile.TemporaryDirectory() as out:
        rows = train(TrainConfig(policy=f"{run}/base", reward_model=f"{run}/rm", prompts=f"{run}/world/prompts_train.jsonl",
                                 out=out, steps=steps + 1, batch_size=B * G, group_size=G, max_new_tokens=C,
                                 max_prompt_len=64, lr=lr, save_every=10_000, sample_merged=sample_merged))
    return [r["time_sample"] + r["time_score"] + r["time_update"] for r in rows[1:]], \
        statistics.mean(r["completion_len"] for r in rows[1:])


def trl_step(run, steps, B, G, C, lr, trl_defaults=False):
    import datasets
    import transformers
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from minigrpo.prompts import load_prompts
    from minigrpo.reward_model import load_reward_model
    rm = load_reward_model(f"{run}/rm")
    prompts = load_prompts(f"{run}/world/prompts_train.jsonl")
    ds = datasets.Dataset.from_list([{"prompt": p["messages"], "text": p["text"]} for p in prompts])

    def reward(prompts, completions, text, **kw):  # the same learned reward, equal weights
        responses = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        with torch.no_grad():
            return rm.reward(text, responses).tolist()

    times = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    lens = []

    class Lens(transformers.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lens.append(logs["completions/mean_length"])

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, per_device_train_batch_size=B * G, num_generations=G, max_completion_length=C,
                          learning_rate=lr, max_steps=steps + 1, logging_steps=1, report_to=[], use_cpu=True, beta=0.0,
                          save_strategy="no", temperature=1.0, gradient_accumulation_steps=1, seed=0,
                          **({} if trl_defaults else {"bf16": False, "gradient_checkpointing": False}))
        tok = transformers.AutoTokenizer.from_pretrained(f"{run}/base")
        trainer = GRPOTrainer(model=f"{run}/base", reward_funcs=reward, args=args, train_dataset=ds,
                              processing_class=tok, callbacks=[Timer(), Lens()],
                              peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                                         "gate_proj", "up_proj", "down_proj"]))
        trainer.train()
    return times[1:], statistics.mean(lens[1:]) if lens else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/full")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of both libraries")
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--trl-defaults", action="store_true", help="TRL at its GRPOConfig defaults (bf16, gradient checkpointing)")
    ap.add_argument("--sample-merged", action="store_true",
                    help="also time minigrpo with --sample-merged (merged weights while sampling), in the same rounds")
    args = ap.parse_args()
    if not Path(args.run, "rm", "config.json").is_file():
        raise SystemExit(f"{args.run}: no trained world here; run `make train-small` first")
    torch.set_num_threads(2)
    kw = dict(steps=args.steps, B=args.prompts_per_step, G=args.group_size, C=args.max_new_tokens, lr=3e-4)
    t_ours, t_merged, t_trl = [], [], []
    for r in range(args.rounds):
        t, len_ours = ours(args.run, **kw)
        t_ours += t
        if args.sample_merged:
            t, len_merged = ours(args.run, **kw, sample_merged=True)
            t_merged += t
        t, len_trl = trl_step(args.run, **kw, trl_defaults=args.trl_defaults)
        t_trl += t
        merged = f", minigrpo --sample-merged {statistics.median(t_merged[-len(t):]):.3f}" if args.sample_merged else ""
        print(f"round {r + 1}: median s/step minigrpo {statistics.median(t_ours[-len(t):]):.3f}{merged}, "
              f"TRL {statistics.median(t):.3f}")
    m_ours, m_trl = statistics.median(t_ours), statistics.median(t_trl)
    print(f"B={kw['B']} prompts × G={kw['G']}, ≤{kw['C']} new tokens, LoRA r=16 on all linear layers, "
          f"{args.rounds} rounds × {args.steps} timed steps each")
    print(f"{'':<24}{'s/step (median)':>16}{'mean completion len':>22}")
    print(f"{'minigrpo':<24}{m_ours:>16.3f}{len_ours:>22.1f}")
    if args.sample_merged:
        print(f"{'minigrpo --sample-merged':<24}{statistics.median(t_merged):>16.3f}{len_merged:>22.1f}")
    print(f"{'TRL':<24}{m_trl:>16.3f}{len_trl:>22.1f}")
    print(f"ratio TRL/minigrpo: {m_trl / m_ours:.2f}x (above 1 = minigrpo faster)")
    if args.sample_merged:
        print(f"ratio TRL/minigrpo --sample-merged: {m_trl / statistics.median(t_merged):.2f}x")


if __name__ == "__main__":
    main()
