"""`minigrpo train`: multi-objective GRPO with LoRA on a frozen Qwen policy (arXiv 2503.21819).

Each step reads top to bottom: prompts → sample G completions each → score K aspects with the
reward model → group advantages → clipped policy-gradient loss → LoRA update → log.

The paper's settings are the defaults: G = 4, lr 1e-4, no KL (beta 0), equal aspect weights,
R = Σ_k w_k r_k, A = (R − mean_group) / std_group. Where we depart from it, or choose where it is
silent:
  1. The optimiser is torch's AdamW with its defaults (betas 0.9 / 0.999, eps 1e-8, weight decay
     0.01) at a constant learning rate, gradients clipped at norm 1. The paper names no optimiser.
     TRL's GRPOTrainer inherits transformers' TrainingArguments instead: weight decay 0.0 and a
     linearly decaying lr. We keep the lr constant so that steps of a run, and runs of different
     lengths, are comparable, and a resumed or extended run needs no schedule state; the 0.01
     decay is torch's default, kept rather than chosen (on LoRA weights it is a mild pull to 0).
  2. `inner_iters` > 1 reuses a batch of samples for several updates (GRPO's μ). The old-policy
     log-probs are those of the training forward itself, detached, in the first inner iteration
     (before any update), kept for the later ones; so the first ratio is exactly 1 in every dtype.
     TRL recomputes them with an extra no-grad forward when it reuses samples; the first
     iteration's own forward is that same computation, so we save the forward. The sampler's log-probs
     are not used: in bf16 its one-token path rounds differently from the training forward.
     With `inner_iters` = 1 this is TRL's `logp.detach()`. The frozen base's log-probs (KL) are
     likewise computed once per batch.
  3. Gradient accumulation over micro-batches weights each micro-batch by its share of the N
     sequences, as TRL does; `dapo` instead divides by the token count of the whole batch. Under
     torchrun a micro-batch may straddle two ranks; each weighs its part so the parts add up to
     the micro-batch's loss (`weight`): by rows for grpo / dr_grpo, by tokens for bnpo's token mean.
  4. Mixed precision, with a bf16 policy (`--dtype bfloat16`): the frozen base is bf16, the LoRA
     weights and AdamW's state fp32 (lora.py), and the update's forwards run under
     `torch.autocast(bfloat16)` (`--autocast`), as a transformers/TRL user with `bf16=True` has it.
     The reward model runs in `--rm-dtype` (default bf16 on CUDA, fp32 on CPU). fp16 gets no
     autocast (it would need loss scaling) and fp32 runs are unchanged.
  5. Sampling seeds and prompt order are functions of (seed, step), so `--resume` continues with
     exactly the samples an uninterrupted run would have drawn.
  6. `--probe FILES --probe-every K` watches for reward hacking while it happens: before the first
     step and every K steps, one completion of each probe prompt (the same uniforms each time, so
     the curve moves only with the policy), scored by the reward model, goes to probes.jsonl. A
     judge the run does not train on (the world's rubric: `minigrpo experiments`) reads the same
     rows; where the two curves part, the policy is learning the reward model's mistakes. It
     draws no random numbers of the run's own, so a run with probes trains exactly as one without.
     Under torchrun rank 0 alone probes.
  7. Under `torchrun --nproc_per_node K` the step is data-parallel (minigrpo/distributed.py): each
     rank samples and scores B/K prompts, advantages and metrics are computed on the gathered
     batch, each rank's micro-batches are the single process's cut at the rank boundary, and the
     LoRA gradients are summed over ranks before the step: the same run as one process, to
     rounding. Rank 0 alone prints and writes --out. LoRA dropout masks are drawn per rank.
"""
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from minigrpo.advantages import SafetyConstraint, group_advantages
from minigrpo.distributed import (all_gather_cat, all_reduce_grads, all_reduce_sum, is_main, on_main_first,
                                  process_group, rank, split, world)
from minigrpo.errors import InputError, Interrupted
from minigrpo.files import disk_full, write_json
from minigrpo.lora import add_lora, lora_disabled, lora_merged, save_adapter
from minigrpo.loader import load_policy
from minigrpo.loss import grpo_loss
from minigrpo.malloc import release_freed_memory
from minigrpo.prompts import encode_prompts, load_prompts
from minigrpo.reward_model import load_reward_model
from minigrpo.runs import at_step, interrupted, prepare_out, resume, save_checkpoint, validate, warn_no_spread
from minigrpo.sampler import generate, sequence_logprobs


@dataclass
class TrainConfig:
    """Train LoRA adapters on a frozen Qwen policy with multi-objective GRPO."""
    policy: str = field(metadata={"help": "policy checkpoint directory (Hugging Face layout)"})
    reward_model: str = field(metadata={"help": "reward model directory (written by `minigrpo train-rm`)"})
    prompts: str = field(metadata={"help": "prompt file: .jsonl ({'prompt'} or {'messages'}) or .csv"})
    out: str = field(metadata={"help": "output directory: adapters, metrics.jsonl, checkpoint/"})
    prompt_column: Optional[str] = field(default=None, metadata={"help": "CSV column holding the prompt (AdvBench: goal, XSTest: prompt)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: Optional[str] = field(default=None, metadata={"help": "float32 / bfloat16 (default: the checkpoint's)"})
    steps: int = field(default=100, metadata={"help": "optimizer steps (each on a fresh batch of samples)"})
    batch_size: int = field(default=16, metadata={"help": "sequences per step, N = B·G (must be a multiple of G)"})
    group_size: int = field(default=4, metadata={"help": "samples per prompt, G (paper: 4)"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate (paper: 1e-4)"})
    loss_type: str = field(default="grpo", metadata={"help": "grpo | bnpo | dr_grpo | dapo (TRL's names)"})
    epsilon: float = field(default=0.2, metadata={"help": "PPO clip range ε"})
    epsilon_high: Optional[float] = field(default=None, metadata={"help": "upper clip ε_high (DAPO clip-higher; default ε)"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient to the frozen base (paper: 0)"})
    log_kl_every: int = field(default=10, metadata={"help": "with beta = 0, measure KL to the frozen base on step 1 and every K steps (one no-grad forward; 0: never)"})
    aggregation: str = field(default="sum_then_normalize", metadata={"help": "sum_then_normalize (paper) | normalize_then_sum (GDPO)"})
    scale: str = field(default="group", metadata={"help": "advantage std: group | batch | none (Dr. GRPO)"})
    weights: str = field(default="", metadata={"help": "aspect weights, '1,1,1,1' or 'safety=1' (default: the reward model's)"})
    safety_threshold: Optional[float] = field(default=None, metadata={"help": "constrain mean safety ≥ this (Lagrangian); off if unset"})
    safety_aspect: str = field(default="safety", metadata={"help": "the reward model's aspect that --safety-threshold constrains"})
    safety_lr: float = field(default=0.1, metadata={"help": "dual-ascent step size for the safety multiplier λ"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA α (scaling α/r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_targets: str = field(default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", metadata={"help": "modules to adapt"})
    max_prompt_len: int = field(default=256, metadata={"help": "longest prompt in tokens (longer is an error, never cut)"})
    max_new_tokens: int = field(default=128, metadata={"help": "completion length limit C"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling (0: off)"})
    inner_iters: int = field(default=1, metadata={"help": "updates per batch of samples (GRPO's μ)"})
    micro_batch: int = field(default=0, metadata={"help": "sequences per forward/backward (0: the whole batch)"})
    save_every: int = field(default=50, metadata={"help": "save adapter + resumable checkpoint every N steps"})
    resume: bool = field(default=False, metadata={"help": "continue from out/checkpoint at its step and random state"})
    overwrite: bool = field(default=False, metadata={"help": "replace the run already in --out (deletes only what train wrote)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    checkpoint_layers: bool = field(default=False, metadata={"help": "activation checkpointing: recompute each block in the backward (less memory, ~1/3 more update compute)"})
    sample_merged: bool = field(default=False, metadata={"help": "sample from merged weights W + s·BA (a copy of each adapted weight): faster on small models, samples differ at rounding level (lora.lora_merged)"})
    release_memory: bool = field(default=False, metadata={"help": "CPU, glibc: return freed blocks of 64 KiB or more to the OS at once, so peak RSS follows live tensors (0.5B shape: peak 4.1 → 2.5 GiB, step 14 percent slower; minigrpo/malloc.py)"})
    autocast: bool = field(default=True, metadata={"help": "with a bfloat16 policy, run the update's forwards under torch.autocast(bfloat16)"})
    rm_dtype: Optional[str] = field(default=None, metadata={"help": "reward model dtype: float32 / bfloat16 / float16 (default: bfloat16 on cuda, float32 on cpu)"})
    probe: Optional[str] = field(default=None, metadata={"help": "comma-separated prompt files sampled every --probe-every steps and scored into probes.jsonl (note 6)"})
    probe_every: int = field(default=10, metadata={"help": "steps between probes (with --probe)"})


def parse_weights(spec, aspects, default):
    """Aspect weights from '1,1,1,1' (in aspect order) or 'safety=1,politeness=0.5' (others 0)."""
    if not spec:
        weights = torch.tensor(default, dtype=torch.float32)
        if not weights.any():
            raise InputError(f"the reward model's default weights {default} are all 0 (every reward 0); pass --weights")
        return weights
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if all("=" in p for p in parts):
        w = dict.fromkeys(aspects, 0.0)
        for p in parts:
            name, value = p.split("=", 1)
            if name not in w:
                raise InputError(f"--weights: unknown aspect '{name}'; the reward model has {aspects}")
            w[name] = _number(value)
        weights = torch.tensor([w[a] for a in aspects])
    elif len(parts) != len(aspects):
        raise InputError(f"--weights: {len(parts)} values for {len(aspects)} aspects {aspects}")
    else:
        weights = torch.tensor([_number(p) for p in parts])
    if not torch.isfinite(weights).all():
        raise InputError(f"--weights: {weights.tolist()} has a non-finite value")
    if not weights.any():
        raise InputError(f"--weights {spec!r}: every weight is 0, so every reward is 0 and nothing is learned")
    return weights


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--weights: {text!r} is not a number") from None


def prompt_batch(n_prompts, B, step, seed):
    """Indices of the B prompts of a step: epochs of a seeded permutation, a function of (seed, step) alone."""
    per_epoch = n_prompts // B
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n_prompts, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * B:(k + 1) * B].tolist()


class StepStats:
    """`grpo_loss`'s statistics over a whole step: every micro-batch of every inner iteration.

    Token statistics (clip fractions, ratio_mean, kl) are token-weighted, adv_mean is weighted by
    sequences, and `tokens` is the completion tokens of the step's batch (not counted once per
    inner iteration).
    """

    def __init__(self):
        self.sums, self.tokens, self.sequences = {}, 0.0, 0

    def add(self, stats, sequences):
        n = stats["tokens"]
        for k, v in stats.items():
            if k not in ("tokens", "adv_mean"):
                self.sums[k] = self.sums.get(k, 0.0) + v * n
        self.sums["adv_mean"] = self.sums.get("adv_mean", 0.0) + stats["adv_mean"] * sequences
        self.tokens += n
        self.sequences += sequences

    def sum_over_ranks(self):
        """Add up the other data-parallel ranks' statistics (their micro-batches), so every rank holds the step's."""
        if world() == 1:
            return
        keys = sorted(self.sums)
        total = all_reduce_sum(torch.tensor([self.sums[k] for k in keys] + [self.tokens, self.sequences],
                                            dtype=torch.float64)).tolist()
        self.sums = dict(zip(keys, total))
        self.tokens, self.sequences = total[-2], int(total[-1])

    def means(self, inner_iters):
        out = {k: v / max(self.tokens, 1) for k, v in self.sums.items() if k != "adv_mean"}
        out["adv_mean"] = self.sums["adv_mean"] / max(self.sequences, 1)
        out["tokens"] = self.tokens / inner_iters
        return out


def mixed_precision(model, cfg):
    """torch.autocast(bfloat16) on the policy's device when the policy is bf16 and `cfg.autocast`; else nothing."""
    p = model.model.embed_tokens.weight
    if cfg.autocast and p.dtype == torch.bfloat16:
        return torch.autocast(device_type=p.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


PROBE_SEED = 7_777_777  # the probes' sampling seed: fixed, so successive probes differ only by the policy


def load_probes(cfg, tokenizer):
    """[(split, prompt row, token ids)] of the --probe files; the split is the file's name without `prompts_`."""
    out = []
    for path in (p.strip() for p in cfg.probe.split(",") if p.strip()):
        rows = load_prompts(path)
        ids = encode_prompts(rows, tokenizer, cfg.max_prompt_len, path)
        out += [(Path(path).stem.removeprefix("prompts_"), r, i) for r, i in zip(rows, ids)]
    if not out:
        raise InputError(f"--probe {cfg.probe!r}: no prompt file named")
    return out


def run_probe(model, tokenizer, rm, probes, cfg, step, path):
    """Append one reward-model-scored completion per probe prompt, at `step`, to `path` (note 6)."""
    model.eval()
    with torch.no_grad():
        ro = generate(model, tokenizer, [i for _, _, i in probes], num_samples=1, max_new_tokens=cfg.max_new_tokens,
                      temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, seed=PROBE_SEED)
        scores = rm.score([r["text"] for _, r, _ in probes], ro.texts).float().cpu()  # (n, K)
    rows = []
    for (split, r, _), text, sc in zip(probes, ro.texts, scores.tolist()):
        extra = {k: r[k] for k in ("kind", "topic") if k in r}
        rows.append({"step": step, "split": split, "prompt": r["text"], **extra, "response": text,
                     **{f"rm/{a}": v for a, v in zip(rm.aspects, sc)}})
    with open(path, "a") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))


def check_finite(step, **tensors):
    """Stop with the step and the statistic that went bad, rather than train on NaN."""
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            raise FloatingPointError(f"step {step}: {name} is not finite ({t.flatten()[:8].tolist()} …); stopping")


def train(cfg):
    """Run GRPO; returns the list of per-step metrics (also written to out/metrics.jsonl).

    Every flag and --out are checked before anything is read or written (minigrpo/runs.py). Ctrl-C
    raises `Interrupted` (a KeyboardInterrupt) saying where the last checkpoint is; a full disk is
    an OSError(ENOSPC) naming the file or --out.
    """
    with process_group(cfg.device) as device:  # torchrun: this rank's device (minigrpo/distributed.py)
        state = on_main_first(lambda: validate(cfg))  # rank 0 alone may repair --out; then the others read it
        try:
            return _train(cfg, state, device)
        except KeyboardInterrupt:
            raise Interrupted(interrupted(cfg) if is_main() else "") from None
        except OSError as e:
            full = disk_full(e, e.filename or cfg.out)
            if full:
                raise full from None
            raise


def micro_batches(first, n, mb):
    """(start, stop) pieces of rows [first, first + n) of the batch, in local rows, cut where micro-batches of mb rows end.

    One process (first = 0, n = N) gets the micro-batches themselves; a data-parallel rank holding
    rows [first, first + n) gets each micro-batch's part that it holds.
    """
    s = 0
    while s < n:
        stop = min(n, ((first + s) // mb + 1) * mb - first)  # the end of the micro-batch holding row first + s
        yield s, stop
        s = stop


def weight(loss_type, start, stop, mb, lengths):
    """The factor on the loss of batch rows [start, stop) (inside one micro-batch of mb rows) before backward, so
    that the step's weighted losses add up to the whole batch's (note 3). lengths: (N,) completion tokens per row."""
    N = len(lengths)
    if loss_type == "dapo":
        return 1.0  # already divided by the whole batch's token count
    if loss_type == "bnpo":  # the micro-batch's token mean; a rank holding part of it weighs its part by its tokens
        m0, m1 = start // mb * mb, min(start // mb * mb + mb, N)  # the micro-batch holding the rows
        return (m1 - m0) / N * (int(lengths[start:stop].sum()) / int(lengths[m0:m1].sum()))
    return (stop - start) / N  # grpo, dr_grpo: sums of per-sequence terms over N


def _train(cfg, state, device):
    # ---------------------------------------------------------------- config → init
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.release_memory and not release_freed_memory():
        print("warning: --release-memory has no effect: the C library is not glibc", file=sys.stderr)
    G = cfg.group_size
    B = cfg.batch_size // G  # prompts of the whole step; this rank's are [lo, lo + b)
    lo, b = split(B, f"--batch-size {cfg.batch_size} / --group-size {G} = {B} prompts per step")
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.policy, dtype=cfg.dtype, device=device)
    info = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                    targets=tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip()))
    model.checkpoint_layers = cfg.checkpoint_layers
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError(f"--lora-targets {cfg.lora_targets!r} matched no linear layer: no trainable parameters")
    rm_dtype = cfg.rm_dtype or ("bfloat16" if cfg.device.startswith("cuda") else "float32")
    rm = load_reward_model(cfg.reward_model, dtype=getattr(torch, rm_dtype)).to(device)
    weights = parse_weights(cfg.weights, rm.aspects, rm.weights)
    prompts = load_prompts(cfg.prompts, cfg.prompt_column)
    prompt_ids = encode_prompts(prompts, tokenizer, cfg.max_prompt_len, cfg.prompts)
    if len(prompts) < B:
        raise InputError(f"{cfg.prompts}: {len(prompts)} prompts, fewer than the {B} a step needs")
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    constraint = None
    if cfg.safety_threshold is not None:
        if cfg.safety_aspect not in rm.aspects or len(rm.aspects) < 2:
            raise InputError(f"--safety-aspect {cfg.safety_aspect!r}: the constraint needs that aspect and another; "
                             f"the reward model {cfg.reward_model} has {rm.aspects}")
        constraint = SafetyConstraint(threshold=cfg.safety_threshold, lr=cfg.safety_lr, aspect=cfg.safety_aspect)
    probes = load_probes(cfg, tokenizer) if cfg.probe and is_main() else None  # note 6
    if world() > 1:  # the same LoRA init on every rank (seeded above), then each rank its own dropout masks
        torch.manual_seed(cfg.seed * 1_000_003 + rank())
    start, metrics = 0, []
    if is_main():
        prepare_out(cfg)  # only now, with every input loaded: --overwrite deletes the previous run here
    if cfg.resume:
        start, metrics = resume(cfg, model, opt, constraint, state)
    if probes and start == 0:
        run_probe(model, tokenizer, rm, probes, cfg, 0, out / "probes.jsonl")
    n_train = sum(p.numel() for p in params)
    n_all = sum(p.numel() for p in model.parameters())
    ranks = f" on {world()} ranks" if world() > 1 else ""
    print(f"train: {len(prompts)} prompts, B={B} × G={G}{ranks}, LoRA {n_train:,} trainable / {n_all:,} parameters "
          f"({100 * n_train / n_all:.2f}%), aspects {dict(zip(rm.aspects, weights.tolist()))}")

    t_start, warned = time.time(), False
    for step in range(start, cfg.steps):
        # ------------------------------------------------------------ rollouts
        t0 = time.time()
        idx = prompt_batch(len(prompts), B, step, cfg.seed)[lo:lo + b]  # this rank's share of the B prompts
        model.eval()
        merged = lora_merged(model) if cfg.sample_merged else contextlib.nullcontext()
        with torch.no_grad(), at_step(step + 1), merged:
            ro = generate(model, tokenizer, [prompt_ids[i] for i in idx], num_samples=G,
                          max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                          top_k=cfg.top_k, seed=cfg.seed * 1_000_003 + step, first_prompt=lo)
        t1 = time.time()
        # ------------------------------------------------------------ score
        texts = [prompts[i]["text"] for i in idx for _ in range(G)]  # b·G, samples of a prompt adjacent
        with torch.no_grad():
            scores = rm.score(texts, ro.texts).float().cpu()  # (b·G, K)
        check_finite(step + 1, rewards=scores)  # each rank its own, so the rank that met it names the step
        scores = all_gather_cat(scores)  # (N, K): the whole step's, on every rank
        lengths = all_gather_cat(ro.completion_mask.sum(1))  # (N,) completion tokens of every row
        rewards = scores.view(B, G, -1)  # (B, G, K)
        # ------------------------------------------------------------ advantages
        adv, diag = group_advantages(rewards, weights=weights, aggregation=cfg.aggregation, scale=cfg.scale,
                                     constraint=constraint, aspects=rm.aspects)  # the same on every rank
        if is_main():
            warned = warn_no_spread(step + 1, diag, warned)
        adv = adv.reshape(-1).to(device)  # (N,)
        t2 = time.time()
        # ------------------------------------------------------------ update
        model.train()
        N, rows, first = B * G, b * G, lo * G  # this rank holds rows [first, first + rows) of the N
        mine = adv[first:first + rows]  # this rank's advantages
        mb = cfg.micro_batch or N
        total_tokens = lengths.sum()  # dapo: the whole batch's, over every rank
        use_ref = cfg.beta > 0 or (cfg.log_kl_every > 0 and step % cfg.log_kl_every == 0)
        old_logp, ref_logp = {}, {}  # micro-batch start → (n, C), from the first inner iteration (note 2)
        step_loss, step_stats = 0.0, StepStats()
        for it in range(cfg.inner_iters):
            opt.zero_grad(set_to_none=True)
            for s, e in micro_batches(first, rows, mb):  # one process: range(0, N, mb)
                sl = slice(s, e)
                with mixed_precision(model, cfg):
                    logp = sequence_logprobs(model, ro.prompt_ids[sl], ro.prompt_mask[sl], ro.completion_ids[sl],
                                             ro.completion_mask[sl], temperature=cfg.temperature)  # (n, C)
                if it == 0:
                    old_logp[s] = logp.detach()  # (n, C): the policy before this batch's updates
                if it == 0 and use_ref:  # the frozen base is the reference: LoRA switched off
                    with torch.no_grad(), lora_disabled(model), mixed_precision(model, cfg):
                        ref_logp[s] = sequence_logprobs(model, ro.prompt_ids[sl], ro.prompt_mask[sl], ro.completion_ids[sl],
                                                        ro.completion_mask[sl], temperature=cfg.temperature)  # (n, C)
                old, ref = old_logp[s], ref_logp.get(s)
                loss, stats = grpo_loss(logp, old, mine[sl], ro.completion_mask[sl], loss_type=cfg.loss_type,
                                        epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta,
                                        ref_logp=ref, max_completion_length=cfg.max_new_tokens,
                                        num_items_in_batch=total_tokens)
                check_finite(step + 1, loss=loss, logprobs=logp)
                share = weight(cfg.loss_type, first + s, first + e, mb, lengths)  # see note 3 above
                (loss * share).backward()
                step_loss += loss.item() * share / cfg.inner_iters  # the step's objective, averaged over inner iterations
                step_stats.add(stats, sequences=logp.shape[0])
            all_reduce_grads(params)  # the sum of the ranks' gradients: the single process's (note 6)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            check_finite(step + 1, grad_norm=grad_norm)
            opt.step()
        step_loss = all_reduce_sum(torch.tensor(step_loss, dtype=torch.float64)).item()
        step_stats.sum_over_ranks()
        finished = all_gather_cat(ro.finished)  # (N,)
        t3 = time.time()
        # ------------------------------------------------------------ log
        lengths = lengths.float()  # (N,)
        row = {"step": step + 1, "loss": step_loss, "grad_norm": grad_norm.item(),
               "adv_std": adv.std().item(), "adv_min": adv.min().item(), "adv_max": adv.max().item(),
               "rm_truncated": int(all_reduce_sum(torch.tensor(rm.last_truncated))),
               **diag, **{f"loss/{k}": v for k, v in step_stats.means(cfg.inner_iters).items()},
               "reward": (scores @ weights).mean().item(),
               **{f"score/{a}": scores[:, k].mean().item() for k, a in enumerate(rm.aspects)},
               "completion_len": lengths.mean().item(), "frac_truncated": (~finished).float().mean().item(),
               "time_sample": t1 - t0, "time_score": t2 - t1, "time_update": t3 - t2}
        metrics.append(row)
        if is_main():
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        done = step + 1 - start
        rate = done / (time.time() - t_start)
        means = " ".join(f"{a[:4]} {scores[:, k].mean():.2f}" for k, a in enumerate(rm.aspects))
        print(f"step {step + 1}/{cfg.steps} | R {row['reward']:.3f} | {means} | len {row['completion_len']:.0f} "
              f"| {rate:.2f} steps/s ETA {(cfg.steps - step - 1) / rate:.0f}s", flush=True)
        if probes and ((step + 1) % cfg.probe_every == 0 or step + 1 == cfg.steps):
            run_probe(model, tokenizer, rm, probes, cfg, step + 1, out / "probes.jsonl")
        if is_main() and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(cfg, model, opt, constraint, step + 1)
    if is_main():
        save_adapter(model, out / "adapter")
        write_json(out / "train_config.json", {**asdict(cfg), "lora": info})
    return metrics
