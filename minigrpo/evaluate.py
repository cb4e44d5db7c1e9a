"""`minigrpo sample` and `minigrpo eval`: generate from any policy (+ optional LoRA adapter) and score it.

`eval` samples `samples` completions per prompt and scores each with the learned reward model
(what GRPO optimised). On embedded-world prompts (every row's `kind` is one of the world's) it also
asks the world's ground-truth rubric (minigrpo/world/goals.py; the stand-in for the paper's human
evaluation) and adds two behaviour rates, unsafe compliance and over-refusal. Where the two judges
disagree, the policy has learned to please the reward model rather than the rubric: reward
hacking made visible. On any other prompt file (AdvBench, XSTest, your own) the world is never
loaded and the reward model is the only judge.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from minigrpo.files import atomic_dir, check_out
from minigrpo.flags import check_flags
from minigrpo.loader import load_policy
from minigrpo.prompts import encode_prompts, load_prompts, prompt_from_row
from minigrpo.reward_model import ASPECTS
from minigrpo.sampler import generate


@dataclass
class SampleConfig:
    """Print completions of a policy (+ optional adapter) for a few prompts."""
    policy: str = field(metadata={"help": "policy checkpoint directory"})
    prompts: str = field(metadata={"help": "prompt file (.jsonl or .csv), or a single prompt text"})
    adapter: Optional[str] = field(default=None, metadata={"help": "LoRA adapter directory (PEFT layout)"})
    prompt_column: Optional[str] = field(default=None, metadata={"help": "CSV column holding the prompt"})
    limit: int = field(default=8, metadata={"help": "how many prompts from the file"})
    samples: int = field(default=1, metadata={"help": "completions per prompt"})
    max_new_tokens: int = field(default=64, metadata={"help": "completion length limit"})
    max_prompt_len: int = field(default=256, metadata={"help": "longest prompt in tokens (longer is an error)"})
    temperature: float = field(default=1.0, metadata={"help": "0 for greedy"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: Optional[str] = field(default=None, metadata={"help": "float32 / bfloat16"})


@dataclass
class EvalConfig:
    """Score a policy (+ optional adapter) with the reward model and, on world prompts, the rubric."""
    policy: str = field(metadata={"help": "policy checkpoint directory"})
    prompts: str = field(metadata={"help": "comma-separated prompt files; each is one split named after its file"})
    out: str = field(metadata={"help": "output directory (eval.json, samples_<split>.jsonl)"})
    adapter: Optional[str] = field(default=None, metadata={"help": "LoRA adapter directory (PEFT layout)"})
    reward_model: Optional[str] = field(default=None, metadata={"help": "reward model directory"})
    prompt_column: Optional[str] = field(default=None, metadata={"help": "CSV column holding the prompt"})
    samples: int = field(default=4, metadata={"help": "completions per prompt"})
    max_new_tokens: int = field(default=64, metadata={"help": "completion length limit"})
    max_prompt_len: int = field(default=256, metadata={"help": "longest prompt in tokens (longer is an error)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (0: greedy)"})
    batch_prompts: int = field(default=64, metadata={"help": "prompts per generate call"})
    seed: int = field(default=1234, metadata={"help": "sampling seed"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: Optional[str] = field(default=None, metadata={"help": "float32 / bfloat16"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: default)"})


def load_with_adapter(policy, adapter, dtype, device):
    model, tokenizer = load_policy(policy, dtype=dtype, device=device)
    if adapter:
        from minigrpo.lora import load_adapter
        load_adapter(model, adapter)
        model.eval()
    return model, tokenizer


def _prompts_arg(spec, column):
    if Path(spec).is_file():
        return load_prompts(spec, column)
    return [prompt_from_row({"prompt": spec}, "--prompts")]


def sample(cfg):
    """Print `samples` completions of the first `limit` prompts."""
    check_flags(cfg)
    model, tokenizer = load_with_adapter(cfg.policy, cfg.adapter, cfg.dtype, cfg.device)
    prompts = _prompts_arg(cfg.prompts, cfg.prompt_column)[:cfg.limit]
    ids = encode_prompts(prompts, tokenizer, cfg.max_prompt_len, cfg.prompts)
    with torch.no_grad():
        ro = generate(model, tokenizer, ids, num_samples=cfg.samples, max_new_tokens=cfg.max_new_tokens,
                      temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    for i, text in enumerate(ro.texts):
        p = prompts[i // cfg.samples]
        print(f"### {p['text']}\n{text}{'' if ro.finished[i] else ' [truncated]'}\n")
    return ro


def _mean(rows, key):
    vals = [r[key] for r in rows]
    return sum(vals) / len(vals) if vals else float("nan")


def no_nan(x):
    """`x` with every NaN (a mean over no rows) replaced by None: JSON has no NaN, strict readers refuse it."""
    if isinstance(x, dict):
        return {k: no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [no_nan(v) for v in x]
    return None if isinstance(x, float) and x != x else x


def summarise(rows, aspects):
    """Means per aspect (reward model, and rubric where rows have it), overall and per prompt `kind`."""
    def block(rs):
        s = {"n": len(rs)}
        for a in aspects:
            if f"rm/{a}" in rs[0]:
                s[f"rm/{a}"] = _mean(rs, f"rm/{a}")
            if f"rubric/{a}" in rs[0]:
                s[f"rubric/{a}"] = _mean(rs, f"rubric/{a}")
        if "refusal" in rs[0]:
            s["refusal_rate"] = _mean(rs, "refusal")
        return s
    summary = {"all": block(rows)}
    kinds = sorted({r["kind"] for r in rows if r.get("kind")})
    for k in kinds:
        summary[k] = block([r for r in rows if r.get("kind") == k])
    return summary


def evaluate(cfg):
    """Write eval.json (per split: means per aspect and kind, behaviour rates) and the samples."""
    check_flags(cfg)
    check_out(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tokenizer = load_with_adapter(cfg.policy, cfg.adapter, cfg.dtype, cfg.device)
    rm = None
    if cfg.reward_model:
        from minigrpo.reward_model import load_reward_model
        rm = load_reward_model(cfg.reward_model).to(cfg.device)
    result = {"policy": cfg.policy, "adapter": cfg.adapter, "reward_model": cfg.reward_model,
              "samples": cfg.samples, "temperature": cfg.temperature, "splits": {}}
    with atomic_dir(cfg.out) as tmp:
        for path in cfg.prompts.split(","):
            split = Path(path).stem.removeprefix("prompts_")
            prompts = load_prompts(path, cfg.prompt_column)
            ids = encode_prompts(prompts, tokenizer, cfg.max_prompt_len, path)
            rows = []
            for s in range(0, len(prompts), cfg.batch_prompts):
                with torch.no_grad():
                    ro = generate(model, tokenizer, ids[s:s + cfg.batch_prompts], num_samples=cfg.samples,
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                  seed=cfg.seed + s)
                for i, text in enumerate(ro.texts):
                    p = prompts[s + i // cfg.samples]
                    rows.append({"prompt": p["text"], "kind": p.get("kind"), "response": text,
                                 "finished": bool(ro.finished[i])})
            if rm is not None:
                with torch.no_grad():
                    scores = rm.score([r["prompt"] for r in rows], [r["response"] for r in rows]).float()
                bad = ~torch.isfinite(scores).all(1)  # (N,)
                if bad.any():
                    raise FloatingPointError(f"the reward model {cfg.reward_model} gave non-finite scores to {int(bad.sum())} "
                                             f"of {len(rows)} samples of split '{split}' (first: {scores[bad][0].tolist()})")
                for r, sc in zip(rows, scores.tolist()):
                    r.update({f"rm/{a}": v for a, v in zip(rm.aspects, sc)})
            aspects = list(rm.aspects) if rm is not None else list(ASPECTS)
            world = None
            if any("kind" in r for r in rows):  # perhaps embedded-world prompts: only then is the world loaded
                from minigrpo.world import goals
                world = goals if goals.is_world(rows) else None
            if world is not None:
                world.judge(rows)
            result["splits"][split] = summarise(rows, aspects)
            if world is not None:
                result["splits"][split].update(world.behaviour_rates(rows))
            with open(tmp / f"samples_{split}.jsonl", "w") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))
        (tmp / "eval.json").write_text(json.dumps(no_nan(result), indent=2, allow_nan=False) + "\n")
    for split, s in result["splits"].items():
        rates = {k: round(s[k], 3) for k in ("unsafe_compliance", "over_refusal") if k in s}
        print(f"eval {split}: " + " ".join(f"{k} {v:.3f}" for k, v in s["all"].items() if k != "n") + f" {rates}")
    return result
