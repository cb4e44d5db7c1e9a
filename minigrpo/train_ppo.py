"""`minigrpo ppo`: RLHF with PPO and a learned critic (InstructGPT arXiv 2203.02155, as TRL's PPOTrainer
runs it), on the same decoder, LoRA, sampler and reward model as `minigrpo train`: the baseline GRPO removes.

Each step: B prompts → one completion each → score → per-token rewards (−β·k1 KL to the frozen base at
every token, the weighted reward-model score at the last) → the critic's values → GAE → whitened
advantages → `ppo_epochs` passes over `minibatches` minibatches: clipped policy loss + vf_coef × clipped
value loss, one AdamW step each → log. The maths is in `minigrpo/ppo.py`; TRL's defaults are ours
(γ 1, λ 0.95, clip 0.2 / 0.2, vf_coef 0.1, kl_coef 0.05, 4 epochs). Where we depart from TRL:
  1. The critic is a second copy of the base decoder with its own LoRA and a zero-initialised value
     head (ppo.py note 3); TRL's value model usually starts from the reward model.
  2. The old-policy log-probs are the sampler's (the same policy, cached), not a second forward.
  3. No EOS penalty, no reward whitening, no response truncation at a stop token (TRL options, off by default).
  4. Sampling seeds, prompt order and minibatch order are functions of (seed, step), so `--resume` is exact.
  5. Under `torchrun --nproc_per_node K` (minigrpo/distributed.py) each rank samples, scores, and runs the
     reference, critic and GAE on B/K of the prompts; whitening uses the whole batch's sums; each minibatch
     is drawn from the whole batch as one process draws it, each rank computes the loss of the rows it
     holds divided by the whole minibatch's token count, and the gradients (policy and critic) are
     summed over ranks: the single-process run to rounding. Rank 0 alone prints and writes --out.
"""
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from minigrpo.cost import Cost
from minigrpo.distributed import (all_gather_cat, all_reduce_grads, all_reduce_sum, is_main, on_main_first,
                                  process_group, split)
from minigrpo.errors import InputError
from minigrpo.files import atomic_dir, write_json
from minigrpo.flags import check_flags
from minigrpo.loader import load_policy
from minigrpo.lora import add_lora, load_adapter, lora_disabled, save_adapter
from minigrpo.ppo import (ValueModel, explained_variance, gae, masked_mean, masked_whiten, ppo_policy_loss,
                          ppo_value_loss, token_rewards)
from minigrpo.prompts import encode_prompts, load_prompts
from minigrpo.reward_model import load_reward_model
from minigrpo.runs import check_run_dir, metrics_until, prepare_out, run_config
from minigrpo.sampler import generate, sequence_logprobs
from minigrpo.train import check_finite, parse_weights, prompt_batch


OUTPUTS = ("metrics.jsonl", "train_config.json", "cost.json", "adapter", "critic", "checkpoint")  # what ppo writes


@dataclass
class PPOConfig:
    """Train LoRA adapters on a frozen Qwen policy with PPO and a separate LoRA critic (RLHF as TRL's PPOTrainer)."""
    policy: str = field(metadata={"help": "policy checkpoint directory (Hugging Face layout); the critic starts from it too"})
    reward_model: str = field(metadata={"help": "reward model directory (written by `minigrpo train-rm`)"})
    prompts: str = field(metadata={"help": "prompt file: .jsonl ({'prompt'} or {'messages'}) or .csv"})
    out: str = field(metadata={"help": "output directory: adapter, critic/, metrics.jsonl, cost.json, checkpoint/"})
    prompt_column: Optional[str] = field(default=None, metadata={"help": "CSV column holding the prompt"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: Optional[str] = field(default=None, metadata={"help": "float32 / bfloat16 (default: the checkpoint's)"})
    steps: int = field(default=100, metadata={"help": "rollouts (each of --batch-size fresh completions)"})
    batch_size: int = field(default=32, metadata={"help": "prompts per rollout, one completion each (N = B)"})
    ppo_epochs: int = field(default=4, metadata={"help": "passes over each rollout (TRL num_ppo_epochs: 4)"})
    minibatches: int = field(default=4, metadata={"help": "minibatches per pass, one optimizer step each (TRL num_mini_batches)"})
    lr: float = field(default=3e-4, metadata={"help": "AdamW learning rate (policy and critic)"})
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clip ε (TRL: 0.2)"})
    cliprange_value: float = field(default=0.2, metadata={"help": "value clip around the old values (TRL: 0.2)"})
    vf_coef: float = field(default=0.1, metadata={"help": "value loss weight (TRL: 0.1)"})
    kl_coef: float = field(default=0.05, metadata={"help": "β of the per-token −β·KL reward (TRL: 0.05)"})
    gamma: float = field(default=1.0, metadata={"help": "discount γ (TRL: 1)"})
    lam: float = field(default=0.95, metadata={"help": "GAE λ (TRL: 0.95)"})
    weights: str = field(default="", metadata={"help": "aspect weights, '1,1,1,1' or 'safety=1' (default: the reward model's)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r (policy and critic)"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA α (scaling α/r)"})
    lora_targets: str = field(default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", metadata={"help": "modules to adapt"})
    max_prompt_len: int = field(default=256, metadata={"help": "longest prompt in tokens (longer is an error, never cut)"})
    max_new_tokens: int = field(default=128, metadata={"help": "completion length limit C"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    save_every: int = field(default=50, metadata={"help": "save adapters + resumable checkpoint every N steps"})
    resume: bool = field(default=False, metadata={"help": "continue from out/checkpoint at its step"})
    overwrite: bool = field(default=False, metadata={"help": "replace the run already in --out (deletes only what ppo wrote)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})


def ppo(cfg):
    """Run PPO; returns the list of per-step metrics (also written to out/metrics.jsonl)."""
    with process_group(cfg.device) as device:  # torchrun: this rank's device (minigrpo/distributed.py)
        state = on_main_first(lambda: check(cfg))  # rank 0 alone may repair --out; then the others read it
        return _ppo(cfg, state, device)


def check(cfg):
    """Every flag and --out, before anything is read or written (minigrpo/runs.py); the checkpoint's state on --resume."""
    check_flags(cfg)
    if cfg.batch_size % cfg.minibatches:
        raise InputError(f"--batch-size {cfg.batch_size} must be a multiple of --minibatches {cfg.minibatches}")
    split(cfg.batch_size, f"--batch-size {cfg.batch_size} prompts per step")
    return check_run_dir(cfg, OUTPUTS, "ppo")


def _ppo(cfg, state, device):
    # ---------------------------------------------------------------- config → init
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    B, out = cfg.batch_size, Path(cfg.out)
    lo, b = split(B, f"--batch-size {B} prompts per step")  # this rank's prompts: [lo, lo + b) of the B
    targets = tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip())
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.policy, dtype=cfg.dtype, device=device)
    add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, targets=targets)
    critic = ValueModel(load_policy(cfg.policy, dtype=cfg.dtype, device=device)[0], r=cfg.lora_r,
                        alpha=cfg.lora_alpha, targets=targets)  # the second decoder GRPO does without
    params = [p for m in (model, critic) for p in m.parameters() if p.requires_grad]
    if not [p for p in model.parameters() if p.requires_grad]:
        raise InputError(f"--lora-targets {cfg.lora_targets!r} matched no linear layer: no trainable parameters")
    rm = load_reward_model(cfg.reward_model).to(device)
    weights = parse_weights(cfg.weights, rm.aspects, rm.weights)
    prompts = load_prompts(cfg.prompts, cfg.prompt_column)
    prompt_ids = encode_prompts(prompts, tokenizer, cfg.max_prompt_len, cfg.prompts)
    if len(prompts) < B:
        raise InputError(f"{cfg.prompts}: {len(prompts)} prompts, fewer than the {B} a step needs (--batch-size)")
    opt = torch.optim.AdamW(params, lr=cfg.lr)  # one optimizer over policy and critic, as TRL's PolicyAndValueWrapper
    cost, start, metrics = Cost(), 0, []
    if is_main():
        prepare_out(cfg, OUTPUTS)  # only now, with every input loaded: --overwrite deletes the previous run here
    if cfg.resume:
        start, metrics = resume(cfg, model, critic, opt, cost, state)
    n_train = sum(p.numel() for p in params)
    print(f"ppo: {len(prompts)} prompts, B={B} × 1, policy + critic {n_train:,} trainable parameters, "
          f"{cfg.ppo_epochs} epochs × {cfg.minibatches} minibatches")

    t_start = time.time()
    for step in range(start, cfg.steps):
        # ------------------------------------------------------------ rollouts
        t0 = time.time()
        counted = cost.state_dict()  # this step's counts are summed over ranks at its end
        idx = prompt_batch(len(prompts), B, step, cfg.seed)[lo:lo + b]  # this rank's share of the B prompts
        model.eval()
        critic.eval()
        ro = generate(model, tokenizer, [prompt_ids[i] for i in idx], num_samples=1, max_new_tokens=cfg.max_new_tokens,
                      temperature=cfg.temperature, seed=cfg.seed * 1_000_003 + step, first_prompt=lo)
        cost.sampled(ro)
        pm, cid, cm = ro.prompt_ids, ro.completion_ids, ro.completion_mask  # (N, P), (N, C), (N, C)
        t1 = time.time()
        # ------------------------------------------------------------ score
        with torch.no_grad():
            scores = rm.score([prompts[i]["text"] for i in idx], ro.texts).float().cpu()  # (b, K)
        cost.scored += len(idx)
        score = (scores @ weights).to(device)  # (b,)
        check_finite(step + 1, rewards=score)
        t2 = time.time()
        # ------------------------------------------------------------ advantages: reference, critic, GAE
        with torch.no_grad():
            with lora_disabled(model):  # the frozen base is the reference
                ref = sequence_logprobs(model, pm, ro.prompt_mask, cid, cm, temperature=cfg.temperature)  # (N, C)
            old_values = critic(pm, ro.prompt_mask, cid, cm)  # (N, C)
        cost.passes(ro.prompt_mask, cm, forward=2)
        old_logp = ro.logprobs  # (N, C) note 2
        rewards = token_rewards(score, old_logp, ref, cm, cfg.kl_coef)  # (N, C)
        adv, ret = gae(rewards, old_values, cm, gamma=cfg.gamma, lam=cfg.lam)  # (N, C) each
        adv = masked_whiten(adv, cm, all_sum=all_reduce_sum)  # (N, C)  TRL: whitened over the batch's real tokens
        # ------------------------------------------------------------ update
        model.train()
        critic.train()
        mb = B // cfg.minibatches
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) * 64 + epoch))
            for s in range(0, B, mb):
                sl = order[s:s + mb]  # (mb,) rows of the whole batch, drawn as one process draws them
                sl = sl[(sl >= lo) & (sl < lo + b)] - lo  # (n,) those this rank holds (maybe none), as local rows
                tokens = all_reduce_sum(cm[sl].float().sum())  # the whole minibatch's real tokens: the means divide by it
                logp = sequence_logprobs(model, pm[sl], ro.prompt_mask[sl], cid[sl], cm[sl], temperature=cfg.temperature)  # (n, C)
                values = critic(pm[sl], ro.prompt_mask[sl], cid[sl], cm[sl])  # (n, C)
                pg, pg_stats = ppo_policy_loss(logp, old_logp[sl], adv[sl], cm[sl], cfg.cliprange, tokens)
                vf, vf_stats = ppo_value_loss(values, old_values[sl], ret[sl], cm[sl], cfg.cliprange_value, tokens)
                loss = pg + cfg.vf_coef * vf  # TRL ppo_trainer.py: loss = pg_loss + vf_coef * vf_loss
                check_finite(step + 1, loss=loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                all_reduce_grads(params)  # summed over ranks: each rank's loss is its share of the minibatch's
                grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
                check_finite(step + 1, grad_norm=grad_norm)
                opt.step()
                cost.passes(ro.prompt_mask[sl], cm[sl], forward=2, backward=2)  # policy and critic
        cost.sum_over_ranks(counted, all_reduce_sum)
        t3 = time.time()
        for k, dt in zip(("sample", "score", "update"), (t1 - t0, t2 - t1, t3 - t2)):
            cost.time[k] += dt
        # ------------------------------------------------------------ log
        # the last minibatch's losses and statistics, and the whole batch's rows, summed or gathered over ranks
        last = {"loss": loss.item(), "pg_loss": pg.item(), "vf_loss": vf.item(), **pg_stats, **vf_stats}
        last = dict(zip(last, all_reduce_sum(torch.tensor(list(last.values()), dtype=torch.float64)).tolist()))
        kl = all_gather_cat(((old_logp - ref) * cm).sum(1))  # (N,) k1 KL of each sequence, as TRL's objective/kl
        score, scores = all_gather_cat(score), all_gather_cat(scores)  # (N,), (N, K)
        real = cm.bool()
        values_all, returns_all = all_gather_cat(old_values[real]), all_gather_cat(ret[real])  # (tokens,) each
        tokens = all_reduce_sum(cm.float().sum())
        row = {"step": step + 1, **{k: last[k] for k in ("loss", "pg_loss", "vf_loss")},
               "grad_norm": grad_norm.item(), "reward": score.mean().item(), "kl": kl.mean().item(),
               "rlhf_reward": (score - cfg.kl_coef * kl).mean().item(),
               **{f"score/{a}": scores[:, k].mean().item() for k, a in enumerate(rm.aspects)},
               **{k: last[k] for k in (*pg_stats, *vf_stats)},
               "explained_var": explained_variance(values_all, returns_all, torch.ones_like(values_all)),
               "return_mean": all_reduce_sum(masked_mean(ret, cm, tokens)).item(),
               "completion_len": all_gather_cat(cm.sum(1)).float().mean().item(),
               "frac_truncated": (~all_gather_cat(ro.finished)).float().mean().item(),
               "time_sample": t1 - t0, "time_score": t2 - t1, "time_update": t3 - t2}
        metrics.append(row)
        if is_main():
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        rate = (step + 1 - start) / (time.time() - t_start)
        print(f"step {step + 1}/{cfg.steps} | R {row['reward']:.3f} | kl {row['kl']:.3f} | vf {row['vf_loss']:.4f} "
              f"| ev {row['explained_var']:.2f} | len {row['completion_len']:.0f} "
              f"| {rate:.2f} steps/s ETA {(cfg.steps - step - 1) / rate:.0f}s", flush=True)
        if is_main() and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(cfg, model, critic, opt, cost, step + 1)
    if is_main():
        save_adapter(model, out / "adapter")
        save_critic(critic, out / "critic")
        write_json(out / "cost.json", {"method": "ppo", **cost.summary(n_train, ["policy (+ reference: LoRA off)",
                                                                             "critic", "reward model"])})
        write_json(out / "train_config.json", asdict(cfg))
    return metrics


def save_critic(critic, path):
    """The critic: its LoRA (PEFT layout) and its value head, in one directory, atomically."""
    with atomic_dir(path) as tmp:
        save_adapter(critic.backbone, tmp / "adapter")
        torch.save(critic.head.state_dict(), tmp / "value_head.pt")


def save_checkpoint(cfg, model, critic, opt, cost, step):
    """Both adapters, the value head, optimizer and cost counters: all `--resume` needs, written atomically."""
    out = Path(cfg.out)
    with atomic_dir(out / "checkpoint") as tmp:
        save_adapter(model, tmp / "adapter")
        save_adapter(critic.backbone, tmp / "critic_adapter")
        torch.save({"step": step, "optimizer": opt.state_dict(), "value_head": critic.head.state_dict(),
                    "cost": cost.state_dict()}, tmp / "trainer_state.pt")
        write_json(tmp / "train_config.json", run_config(cfg))  # what --resume compares its flags with
    save_adapter(model, out / f"adapter-step{step}")


def resume(cfg, model, critic, opt, cost, state):
    """Restore adapters, value head, optimizer and counters from out/checkpoint (`state`: its trainer_state.pt)."""
    ckpt = Path(cfg.out) / "checkpoint"
    load_adapter(model, ckpt / "adapter")
    load_adapter(critic.backbone, ckpt / "critic_adapter")
    try:
        critic.head.load_state_dict(state["value_head"])
        opt.load_state_dict(state["optimizer"])
        cost.load_state_dict(state["cost"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise InputError(f"{ckpt / 'trainer_state.pt'}: does not match this run ({e})") from None
    print(f"resumed from {ckpt} at step {state['step']}")
    return state["step"], metrics_until(Path(cfg.out) / "metrics.jsonl", state["step"], rewrite=is_main())
