"""The GPU check: Qwen2.5-0.5B's shape, bf16, on CUDA, in under 5 minutes. Three parts:

  1. parity: logits of our Qwen and transformers' Qwen2ForCausalLM, same random weights, bf16,
     on a left-padded batch; prints the largest |Δlogit| (and fp32's, for scale);
  2. the sampler benchmark (b) of bench/bench_sampler.py (8 prompts × 4 samples × 64 tokens);
  3. three GRPO steps at the real vocabulary (151,936): bf16 base, fp32 LoRA r 16 on every linear
     layer and fp32 AdamW, the update under autocast (`minigrpo.train.mixed_precision`), B·G = 32,
     64 new tokens; a stand-in reward (the share of distinct tokens in a completion) since the
     point is speed and memory. Prints sampling tokens/s, seconds per step, peak GPU memory and
     MFU: the FLOPs the step needs (rollout as bench_sampler counts them; update 4·params per
     token, forward plus the input gradient a frozen base needs, + lm_head once more for the
     checkpointed log-prob chunks) over the measured bf16 matmul peak (8192², on this GPU).

Shape: from ../shared/assets/qwen2.5-0.5b-instruct/config.json when present, else QWEN_05B below
(copied from that file). `--smoke` runs all three at toy size on any device (a CPU check of the
script itself; its figures mean nothing).

    python bench/gpu_check.py                       # on a CUDA machine
    python bench/gpu_check.py --smoke --device cpu  # the script's own check, seconds
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_sampler import DEFAULT_CONFIG, TINY, bench, build, matmul_peak, rollout_flops, sync  # noqa: E402

QWEN_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                rms_norm_eps=1e-6)


def parity(hf_kwargs, device):
    """Max |Δlogit| between transformers and minigrpo on a left-padded batch, in bf16 and in fp32."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, hf_kwargs["vocab_size"], (4, 24), generator=g)  # (B, T)
    mask = torch.ones_like(ids)  # (B, T)
    mask[1, :5] = mask[3, :11] = 0  # left padding
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        hf, ours = build(hf_kwargs, device, dtype)
        with torch.no_grad():
            pos = (mask.cumsum(1) - 1).clamp(min=0).to(device)  # (B, T): transformers takes explicit positions
            theirs = hf(ids.to(device), attention_mask=mask.to(device), position_ids=pos).logits.float()  # (B, T, V)
            mine = ours(ids.to(device), mask.to(device))  # (B, T, V)
        real = mask.bool().to(device)  # (B, T): compare real positions only
        out[str(dtype).removeprefix("torch.")] = ((mine - theirs).abs()[real].max().item(), theirs[real].abs().max().item())
        del hf, ours
    for dtype, (d, scale) in out.items():
        print(f"    parity {dtype}: max |Δlogit| {d:.3g} (logits up to {scale:.3g})")
    return out


def grpo_steps(hf_kwargs, args):
    """`args.steps` GRPO steps as minigrpo.train takes them (bf16 base, fp32 LoRA and AdamW, autocast)."""
    from minigrpo import generate
    from minigrpo.advantages import group_advantages
    from minigrpo.lora import add_lora
    from minigrpo.loss import grpo_loss
    from minigrpo.sampler import sequence_logprobs
    from minigrpo.train import TrainConfig, mixed_precision
    dtype = getattr(torch, args.dtype)
    _, model = build(hf_kwargs, args.device, dtype)
    add_lora(model, r=16, alpha=32)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    cfg = TrainConfig(policy="", reward_model="", prompts="", out="")
    B, G, C = args.prompts, args.samples, args.new_tokens
    g = torch.Generator().manual_seed(2)
    V = model.config.vocab_size
    lens = torch.randint(args.prompt_len // 2, args.prompt_len + 1, (B,), generator=g).tolist()
    prompts = [torch.randint(10, V, (n,), generator=g).tolist() for n in lens]
    n_params = sum(p.numel() for p in model.parameters())
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rows = []
    for step in range(args.steps + 1):  # step 0 warms up
        sync(args.device)
        t0 = time.perf_counter()
        model.eval()
        ro = generate(model, None, prompts, num_samples=G, max_new_tokens=C, seed=step, eos_token_ids=[], pad_token_id=0)
        sync(args.device)
        t1 = time.perf_counter()
        distinct = torch.tensor([len(set(r)) / len(r) for r in ro.completion_ids.tolist()])  # (N,)
        adv, _ = group_advantages(distinct.view(B, G, 1), weights=torch.ones(1))  # (B, G)
        model.train()
        opt.zero_grad(set_to_none=True)
        with mixed_precision(model, cfg):
            logp = sequence_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)  # (N, C)
        loss, _ = grpo_loss(logp, logp.detach(), adv.reshape(-1).to(logp.device), ro.completion_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sync(args.device)
        t2 = time.perf_counter()
        N, T = ro.prompt_ids.shape[0], ro.prompt_ids.shape[1] + ro.completion_ids.shape[1]
        H = model.config.hidden_size
        flops = rollout_flops(model.config, lens, G, C) + 4 * n_params * N * T + 2 * H * V * N * C
        rows.append({"sample_s": t1 - t0, "update_s": t2 - t1, "step_s": t2 - t0, "tokens_per_s": N * C / (t1 - t0),
                     "flops": flops})
        print(f"    step {step}{' (warm-up)' if step == 0 else ''}: sample {t1 - t0:.2f} s ({N * C / (t1 - t0):.0f} tokens/s), "
              f"update {t2 - t1:.2f} s, loss {loss.item():.4f}")
    timed = rows[1:]
    step_s = statistics.median(r["step_s"] for r in timed)
    peak = matmul_peak(args.device, dtype, n=args.peak_n)
    mfu = statistics.median(r["flops"] / r["step_s"] for r in timed) / 1e9 / peak
    mem = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
    print(f"    {args.steps} GRPO steps, {B}×{G} sequences, {C} new tokens, vocab {V}: "
          f"{step_s:.2f} s/step (median), sampling {statistics.median(r['tokens_per_s'] for r in timed):.0f} tokens/s, "
          f"update {statistics.median(r['update_s'] for r in timed):.2f} s, peak GPU memory {mem:.2f} GiB, "
          f"MFU {100 * mfu:.1f}% of the measured {args.dtype} matmul peak ({peak:.0f} GFLOP/s)")
    return {"step_s": step_s, "mfu": mfu, "peak_gib": mem}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="config.json with Qwen2.5-0.5B's shape")
    ap.add_argument("--smoke", action="store_true", help="toy sizes: check the script itself on any device")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here (pass --smoke --device cpu to check the script itself)")
    shape = dict(TINY, vocab_size=4096) if args.smoke else (
        json.loads(Path(args.config).read_text()) if Path(args.config).is_file() else QWEN_05B)
    print(f"shape: {'toy (--smoke)' if args.smoke else args.config if Path(args.config).is_file() else 'QWEN_05B (in this script)'}")
    args.threads, args.repeats = torch.get_num_threads(), 1 if args.smoke else 3
    args.prompts, args.samples, args.new_tokens, args.prompt_len = 8, 4, 8 if args.smoke else 64, 48
    args.peak_n = 512 if args.smoke else 8192
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {dev}, {args.dtype}")
    print("1. parity with transformers")
    parity(shape, args.device)
    print("2. sampler benchmark (b)")
    bench("b: random weights, Qwen2.5-0.5B's shape" if not args.smoke else "toy", shape, args)
    print("3. GRPO steps")
    grpo_steps(shape, args)
    print(f"gpu_check: done in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
