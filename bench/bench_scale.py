"""One GRPO step at Qwen2.5-0.5B's shape with the real 151,936-token vocabulary, fp32 on CPU:
minigrpo's `train` vs TRL's `GRPOTrainer`, seconds per step and peak RSS, each in a fresh process.

The policy is random (494 M parameters; shape from ../shared/assets/qwen2.5-0.5b-instruct/config.json
when present, else QWEN_05B in bench/gpu_check.py), saved once in fp32 under bench/out/ with a
word-level tokenizer of 151,936 entries ("w3" … plus the ChatML specials), so that sampled ids decode
and both libraries read the same prompts: 64 random 24-word user turns in the ChatML template.
The reward is the same learned reward model for both (`--rm`, any `minigrpo train-rm` output; the
tiny one of `make train-small SMALL=ci` will do), B·G = 2 × 4 = 8, exactly 64 new tokens (the random
policy never says EOS), LoRA r 16 on every linear layer, beta 0 (no reference forward; minigrpo's
KL monitoring off), fp32 (TRL: bf16=False), 2 threads. TRL's GRPOConfig turns gradient checkpointing
on by default; minigrpo runs with `--checkpoint-layers` too, and once without, to show the price.
`minigrpo-release` adds `--release-memory` (minigrpo/malloc.py: glibc returns freed blocks of 64 KiB
and more at once); `trl-release` gives TRL's process the same setting from outside
(MALLOC_MMAP_THRESHOLD_=65536), so that the two libraries also meet on equal allocator terms.
Peak RSS is the process's VmHWM at exit (weights are memory-mapped by both and count once touched).
Rounds alternate the libraries so that load from other processes falls on both alike.

    .venv/bin/python bench/bench_scale.py --rm runs/ci/rm [--steps 2] [--rounds 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "out" / "qwen2.5-0.5b-v151936-fp32"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build(config):
    """Save the random fp32 policy, its word-level tokenizer and the prompts (once)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from minigrpo.loader import save_policy
    from minigrpo.qwen import Qwen, QwenConfig
    if (OUT / "prompts.jsonl").is_file():
        return
    c = json.loads(Path(config).read_text()) if Path(config).is_file() else __import__("gpu_check").QWEN_05B
    V = c["vocab_size"]
    vocab = {t: i for i, t in enumerate(SPECIALS)} | {f"w{i}": i for i in range(len(SPECIALS), V)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.add_special_tokens(SPECIALS)
    cfg = QwenConfig(vocab_size=V, hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                     num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
                     num_key_value_heads=c["num_key_value_heads"], head_dim=c["hidden_size"] // c["num_attention_heads"],
                     rms_norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"], tie_word_embeddings=c["tie_word_embeddings"])
    torch.manual_seed(0)
    model = Qwen(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn_like(p) * 0.02)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(str(Path(tmp) / "tokenizer.json"))
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({
            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": CHATML}))
        (Path(tmp) / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "pad_token_id": 0}))
        save_policy(model, tmp, OUT)
    g = torch.Generator().manual_seed(1)
    with open(OUT / "prompts.jsonl", "w") as f:
        for _ in range(64):
            f.write(json.dumps({"prompt": " ".join(f"w{i}" for i in torch.randint(3, V, (24,), generator=g).tolist())}) + "\n")


def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MiB
    raise RuntimeError(field)


def child_minigrpo(rm, steps, checkpoint_layers, release_memory=False):
    import torch
    torch.set_num_threads(2)
    from minigrpo.train import TrainConfig, train
    with tempfile.TemporaryDirectory() as out:
        rows = train(TrainConfig(policy=str(OUT), reward_model=rm, prompts=str(OUT / "prompts.jsonl"), out=out,
                                 steps=steps + 1, batch_size=8, group_size=4, max_new_tokens=64, max_prompt_len=64,
                                 lr=1e-4, save_every=10_000, log_kl_every=0, checkpoint_layers=checkpoint_layers,
                                 release_memory=release_memory, threads=2))
    return {"step_s": [r["time_sample"] + r["time_score"] + r["time_update"] for r in rows[1:]],
            "sample_s": [r["time_sample"] for r in rows[1:]], "update_s": [r["time_update"] for r in rows[1:]],
            "completion_len": statistics.mean(r["completion_len"] for r in rows[1:])}


def child_trl(rm_path, steps):
    import datasets
    import torch
    import transformers
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer
    torch.set_num_threads(2)
    from minigrpo.prompts import load_prompts
    from minigrpo.reward_model import load_reward_model
    rm = load_reward_model(rm_path)
    ds = datasets.Dataset.from_list([{"prompt": p["messages"], "text": p["text"]} for p in load_prompts(OUT / "prompts.jsonl")])

    def reward(prompts, completions, text, **kw):  # the same chat prompts as minigrpo's, the same reward
        with torch.no_grad():
            return rm.reward(text, [c[-1]["content"] if isinstance(c, list) else c for c in completions]).tolist()

    times = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, per_device_train_batch_size=8, num_generations=4, max_completion_length=64,
                          learning_rate=1e-4, max_steps=steps + 1, logging_steps=1, report_to=[], use_cpu=True, beta=0.0,
                          bf16=False, save_strategy="no", temperature=1.0, gradient_accumulation_steps=1, seed=0,
                          model_init_kwargs={"dtype": torch.float32})
        tok = transformers.AutoTokenizer.from_pretrained(str(OUT))
        trainer = GRPOTrainer(model=str(OUT), reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                              callbacks=[Timer()],
                              peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                                         "gate_proj", "up_proj", "down_proj"]))
        trainer.train()
    return {"step_s": times[1:], "gradient_checkpointing": args.gradient_checkpointing}


def child(lib, rm, steps):
    base = vm("VmRSS")
    if lib.startswith("trl"):  # trl-release: the allocator setting came in the environment (run)
        out = child_trl(rm, steps)
    else:
        out = child_minigrpo(rm, steps, checkpoint_layers=lib != "minigrpo-no-ckpt", release_memory=lib == "minigrpo-release")
    print("RESULT " + json.dumps({**out, "peak_mib": vm("VmHWM"), "base_mib": base}))


def run(lib, rm, steps):
    cmd = [sys.executable, __file__, "--child", lib, "--rm", rm, "--steps", str(steps)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if lib == "trl-release":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # what minigrpo's --release-memory sets with mallopt
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not line:
        raise SystemExit(f"{lib} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(line[0][7:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rm", required=True, help="a reward model directory (minigrpo train-rm output)")
    ap.add_argument("--config", default=str(ROOT.parent / "shared" / "assets" / "qwen2.5-0.5b-instruct" / "config.json"))
    ap.add_argument("--steps", type=int, default=2, help="timed steps per process, after one warm-up step")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--libs", default="minigrpo,minigrpo-release,trl,trl-release,minigrpo-no-ckpt")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.rm, args.steps)
    print(f"shape: {args.config if Path(args.config).is_file() else 'QWEN_05B in bench/gpu_check.py'}")
    build(args.config)
    results = {lib: [] for lib in args.libs.split(",")}
    known = ("minigrpo", "minigrpo-release", "minigrpo-no-ckpt", "trl", "trl-release")
    if set(results) - set(known):
        raise SystemExit(f"--libs: {', '.join(sorted(set(results) - set(known)))} unknown; expected some of {', '.join(known)}")
    for r in range(args.rounds):
        for lib in results:
            t0 = time.perf_counter()
            res = run(lib, args.rm, args.steps)
            results[lib].append(res)
            print(f"round {r + 1} {lib:<17} s/step {' '.join(f'{t:.1f}' for t in res['step_s'])}  peak RSS {res['peak_mib']:.0f} MiB "
                  f"(after imports {res['base_mib']:.0f})  [{time.perf_counter() - t0:.0f} s wall]", flush=True)
    print(f"\n{'library':<18}{'s/step (median)':>16}{'peak RSS MiB (max)':>20}")
    for lib, rs in results.items():
        print(f"{lib:<18}{statistics.median(t for r in rs for t in r['step_s']):>16.1f}{max(r['peak_mib'] for r in rs):>20.0f}")


if __name__ == "__main__":
    main()
