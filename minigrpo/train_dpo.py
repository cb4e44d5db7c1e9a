"""`minigrpo dpo`: Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) with LoRA on the
same decoder, sampler and reward model as `minigrpo train`, the preference labels coming from that reward model.

Two phases. (1) Pairs: for each training prompt, G samples from the base policy (LoRA off), scored by
the reward model; chosen = highest weighted reward, rejected = lowest, prompts whose G rewards all tie
are dropped (`dpo.preference_pairs`); the reference's summed log-probs of both completions are computed
once (TRL's `precompute_ref_log_probs`). That sampling is DPO's share of the sampling budget and its cost
is counted. (2) `epochs` passes over the pairs in batches: chosen and rejected through the policy in one
forward (TRL's `concatenated_forward`), the sigmoid DPO loss (eq. 7), one AdamW step each.
Where we depart from the paper / TRL:
  1. The pairs are on-policy for the base only (sampled once, as the paper's offline setting): no
     resampling from the trained policy (that would be online / iterative DPO).
  2. Pairs and reference log-probs are saved in out/pairs.pt, so `--resume` never resamples.
"""
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from minigrpo.cost import Cost
from minigrpo.dpo import dpo_loss, preference_pairs
from minigrpo.errors import InputError
from minigrpo.files import atomic_dir, atomic_file, write_json
from minigrpo.flags import check_flags
from minigrpo.loader import load_policy
from minigrpo.lora import add_lora, load_adapter, lora_disabled, save_adapter
from minigrpo.prompts import encode_prompts, load_prompts
from minigrpo.reward_model import load_reward_model
from minigrpo.runs import check_run_dir, metrics_until, prepare_out, run_config
from minigrpo.sampler import generate, left_pad, sequence_logprobs
from minigrpo.train import check_finite, parse_weights, prompt_batch


OUTPUTS = ("metrics.jsonl", "train_config.json", "cost.json", "pairs.pt", "adapter", "checkpoint")  # what dpo writes


@dataclass
class DPOConfig:
    """Train LoRA adapters on a frozen Qwen policy with DPO on pairs the reward model labels."""
    policy: str = field(metadata={"help": "policy checkpoint directory (Hugging Face layout); also the reference"})
    reward_model: str = field(metadata={"help": "reward model directory (labels the pairs)"})
    prompts: str = field(metadata={"help": "prompt file: .jsonl ({'prompt'} or {'messages'}) or .csv"})
    out: str = field(metadata={"help": "output directory: adapter, pairs.pt, metrics.jsonl, cost.json, checkpoint/"})
    prompt_column: Optional[str] = field(default=None, metadata={"help": "CSV column holding the prompt"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: Optional[str] = field(default=None, metadata={"help": "float32 / bfloat16 (default: the checkpoint's)"})
    max_prompts: int = field(default=0, metadata={"help": "use the first N prompts only (0: all): sets the sampling budget N·G"})
    group_size: int = field(default=8, metadata={"help": "samples per prompt G from which a pair is picked"})
    sample_batch: int = field(default=8, metadata={"help": "prompts per sampling call"})
    epochs: int = field(default=1, metadata={"help": "passes over the pairs"})
    batch_size: int = field(default=16, metadata={"help": "pairs per optimizer step"})
    lr: float = field(default=3e-4, metadata={"help": "AdamW learning rate"})
    beta: float = field(default=0.1, metadata={"help": "DPO β: strength of the implicit KL to the reference (paper: 0.1)"})
    weights: str = field(default="", metadata={"help": "aspect weights, '1,1,1,1' or 'safety=1' (default: the reward model's)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA α (scaling α/r)"})
    lora_targets: str = field(default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", metadata={"help": "modules to adapt"})
    max_prompt_len: int = field(default=256, metadata={"help": "longest prompt in tokens (longer is an error, never cut)"})
    max_new_tokens: int = field(default=128, metadata={"help": "completion length limit C"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the pairs"})
    save_every: int = field(default=50, metadata={"help": "save adapter + resumable checkpoint every N steps"})
    resume: bool = field(default=False, metadata={"help": "continue from out/checkpoint (pairs from out/pairs.pt)"})
    overwrite: bool = field(default=False, metadata={"help": "replace the run already in --out (deletes only what dpo wrote)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})


def make_pairs(cfg, model, tokenizer, rm, weights, prompts, prompt_ids, cost):
    """Phase 1: G base samples per prompt → (prompt, chosen, rejected) token lists and reference log-probs."""
    G, pairs = cfg.group_size, []
    with lora_disabled(model):
        for s in range(0, len(prompts), cfg.sample_batch):
            t0 = time.time()
            idx = list(range(s, min(s + cfg.sample_batch, len(prompts))))
            ro = generate(model, tokenizer, [prompt_ids[i] for i in idx], num_samples=G, max_new_tokens=cfg.max_new_tokens,
                          temperature=cfg.temperature, seed=cfg.seed * 1_000_003 + s)
            cost.sampled(ro)
            t1 = time.time()
            with torch.no_grad():
                scores = rm.score([prompts[i]["text"] for i in idx for _ in range(G)], ro.texts).float().cpu()  # (n·G, K)
            cost.scored += len(ro.texts)
            reward = (scores @ weights).view(len(idx), G)  # (n, G)
            check_finite(0, rewards=reward)
            chosen, rejected, keep = preference_pairs(reward)  # (n,) each
            for j, i in enumerate(idx):
                if keep[j]:
                    c, r = j * G + chosen[j].item(), j * G + rejected[j].item()
                    pairs.append({"prompt": prompt_ids[i], "reward_margin": (reward[j].max() - reward[j].min()).item(),
                                  **{k: ro.completion_ids[n][ro.completion_mask[n].bool()].tolist()
                                     for k, n in (("chosen", c), ("rejected", r))}})
            cost.time["sample"] += t1 - t0
            cost.time["score"] += time.time() - t1
        t0 = time.time()
        for s in range(0, len(pairs), cfg.batch_size):  # the reference's log-probs, once (TRL precompute_ref_log_probs)
            batch = pairs[s:s + cfg.batch_size]
            pm, cm, pi, ci = pair_tensors(batch, tokenizer.pad_token_id, cfg.device)
            with torch.no_grad():
                ref = sequence_logprobs(model, pi, pm, ci, cm).sum(1)  # (2n,)
            cost.passes(pm, cm, forward=1)
            for k, p in enumerate(batch):
                p["ref_chosen"], p["ref_rejected"] = ref[k].item(), ref[len(batch) + k].item()
        cost.time["update"] += time.time() - t0
    return pairs


def pair_tensors(batch, pad, device):
    """Chosen then rejected of n pairs as 2n rows: prompt mask, completion mask, prompt ids, completion ids."""
    prompts = [p["prompt"] for p in batch] * 2
    comps = [p["chosen"] for p in batch] + [p["rejected"] for p in batch]
    pi, pm = left_pad(prompts, pad, device)  # (2n, P) each
    C = max(len(c) for c in comps)
    ci = torch.full((len(comps), C), pad, dtype=torch.long)  # (2n, C) right-padded
    cm = torch.zeros(len(comps), C, dtype=torch.long)  # (2n, C)
    for n, c in enumerate(comps):
        ci[n, :len(c)] = torch.tensor(c, dtype=torch.long)
        cm[n, :len(c)] = 1
    return pm, cm.to(device), pi, ci.to(device)


def dpo(cfg):
    """Run DPO; returns the list of per-step metrics (also written to out/metrics.jsonl)."""
    check_flags(cfg)
    # ---------------------------------------------------------------- config → init
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    state = check_run_dir(cfg, OUTPUTS, "dpo")  # before anything is read or written (minigrpo/runs.py)
    if cfg.resume and not (Path(cfg.out) / "pairs.pt").is_file():
        raise InputError(f"{Path(cfg.out) / 'pairs.pt'}: not found; --resume needs the pairs the run sampled")
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.policy, dtype=cfg.dtype, device=cfg.device)
    info = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha,
                    targets=tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip()))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError(f"--lora-targets {cfg.lora_targets!r} matched no linear layer: no trainable parameters")
    rm = load_reward_model(cfg.reward_model).to(cfg.device)
    weights = parse_weights(cfg.weights, rm.aspects, rm.weights)
    prompts = load_prompts(cfg.prompts, cfg.prompt_column)
    prompts = prompts[:cfg.max_prompts or len(prompts)]
    prompt_ids = encode_prompts(prompts, tokenizer, cfg.max_prompt_len, cfg.prompts)
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    cost, start, metrics = Cost(), 0, []
    prepare_out(cfg, OUTPUTS)  # only now, with every input loaded: --overwrite deletes the previous run here
    if cfg.resume:
        start, metrics = resume(cfg, model, opt, cost, state)
        pairs = torch.load(out / "pairs.pt", weights_only=True)["pairs"]
    else:
        # ------------------------------------------------------------ rollouts + score: the preference pairs
        model.eval()
        pairs = make_pairs(cfg, model, tokenizer, rm, weights, prompts, prompt_ids, cost)
        with atomic_file(out / "pairs.pt", "wb") as f:
            torch.save({"pairs": pairs}, f)
    if len(pairs) < cfg.batch_size:
        raise InputError(f"{cfg.prompts}: {len(pairs)} preference pairs (prompts whose {cfg.group_size} samples "
                         f"all tied are dropped), fewer than --batch-size {cfg.batch_size}")
    steps = cfg.epochs * (len(pairs) // cfg.batch_size)
    print(f"dpo: {len(prompts)} prompts × G={cfg.group_size} → {len(pairs)} pairs, {steps} steps of "
          f"{cfg.batch_size}, LoRA {info['trainable']:,} trainable parameters")

    t_start = time.time()
    for step in range(start, steps):
        # ------------------------------------------------------------ update
        t0 = time.time()
        model.train()
        batch = [pairs[i] for i in prompt_batch(len(pairs), cfg.batch_size, step, cfg.seed)]
        n = len(batch)
        pm, cm, pi, ci = pair_tensors(batch, tokenizer.pad_token_id, cfg.device)
        logp = sequence_logprobs(model, pi, pm, ci, cm).sum(1)  # (2n,) summed over each completion
        ref_c = torch.tensor([p["ref_chosen"] for p in batch], device=logp.device)  # (n,)
        ref_r = torch.tensor([p["ref_rejected"] for p in batch], device=logp.device)  # (n,)
        loss, stats = dpo_loss(logp[:n], logp[n:], ref_c, ref_r, beta=cfg.beta)
        check_finite(step + 1, loss=loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        check_finite(step + 1, grad_norm=grad_norm)
        opt.step()
        cost.passes(pm, cm, forward=1, backward=1)
        cost.time["update"] += time.time() - t0
        # ------------------------------------------------------------ log
        row = {"step": step + 1, "loss": loss.item(), "grad_norm": grad_norm.item(), **stats,
               "logps/chosen": logp[:n].mean().item(), "logps/rejected": logp[n:].mean().item(),
               "time_update": time.time() - t0}
        metrics.append(row)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        rate = (step + 1 - start) / (time.time() - t_start)
        print(f"step {step + 1}/{steps} | loss {row['loss']:.4f} | acc {stats['rewards/accuracies']:.2f} "
              f"| margin {stats['rewards/margins']:.3f} | {rate:.2f} steps/s ETA {(steps - step - 1) / rate:.0f}s", flush=True)
        if (step + 1) % cfg.save_every == 0 or step + 1 == steps:
            save_checkpoint(cfg, model, opt, cost, step + 1)
    save_adapter(model, out / "adapter")
    write_json(out / "cost.json", {"method": "dpo", "pairs": len(pairs), "steps": steps,
                                   **cost.summary(info["trainable"], ["policy (+ reference: LoRA off)", "reward model"])})
    write_json(out / "train_config.json", {**asdict(cfg), "lora": info})
    return metrics


def save_checkpoint(cfg, model, opt, cost, step):
    """Adapter, optimizer and cost counters: all `--resume` needs beside pairs.pt, written atomically."""
    out = Path(cfg.out)
    with atomic_dir(out / "checkpoint") as tmp:
        save_adapter(model, tmp / "adapter")
        torch.save({"step": step, "optimizer": opt.state_dict(), "cost": cost.state_dict()}, tmp / "trainer_state.pt")
        write_json(tmp / "train_config.json", run_config(cfg))  # what --resume compares its flags with
    save_adapter(model, out / f"adapter-step{step}")


def resume(cfg, model, opt, cost, state):
    """Restore adapter, optimizer and counters from out/checkpoint (`state`: its trainer_state.pt)."""
    ckpt = Path(cfg.out) / "checkpoint"
    load_adapter(model, ckpt / "adapter")
    try:
        opt.load_state_dict(state["optimizer"])
        cost.load_state_dict(state["cost"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise InputError(f"{ckpt / 'trainer_state.pt'}: does not match this run ({e})") from None
    print(f"resumed from {ckpt} at step {state['step']}")
    return state["step"], metrics_until(Path(cfg.out) / "metrics.jsonl", state["step"])
