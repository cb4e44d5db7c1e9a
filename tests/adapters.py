"""The one door between the tests and the code they grade (as CS336's tests/adapters.py).

Each function below has an exercise's signature (walkthrough/exercises/) and calls either
  * the reference (default; `make test`, `make grade-solutions`): the package where it has the piece,
    adapted to the exercise's simpler signature, else walkthrough/solutions/<name>.py; or
  * the student's stub, when MINIGRPO_IMPL=student (`make grade`).
Tests marked `@pytest.mark.exercise("name")` call these, so the SAME tests check both.
"""
import importlib
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # walkthrough/ is imported from the repository root
    sys.path.insert(0, str(ROOT))

IMPL = os.environ.get("MINIGRPO_IMPL", "solutions")
if IMPL not in ("student", "solutions"):
    raise ValueError(f"MINIGRPO_IMPL={IMPL!r}: expected 'student' or 'solutions'")

# exercise: (chapter, its file in walkthrough/exercises/), in the order of the course
EXERCISES = {
    "sequence_logprobs": (2, "sequence_logprobs"),
    "pg_loss": (3, "pg_loss"),
    "group_advantages": (4, "group_advantages"),
    "gae": (5, "gae"),
    "grpo_loss": (6, "grpo_loss"),
    "kl_k3": (6, "kl_k3"),
    "reduce_tokens": (7, "reduce_tokens"),
    "lora_forward": (8, "lora"),
    "lora_merge": (8, "lora"),
    "top_p_filter": (9, "top_p_filter"),
    "bradley_terry_loss": (10, "bradley_terry_loss"),
    "dual_ascent_step": (12, "dual_ascent_step"),
    "dpo_loss": (13, "dpo_loss"),
}


def student(name):
    """The student's function `name` from walkthrough/exercises/; a stub's NotImplementedError skips the test.

    A skip (not a failure) because hypothesis re-raises a skip at once, where it would spend minutes
    shrinking an error that every input raises. The grader reports it as "not done yet".
    """
    file = f"walkthrough/exercises/{EXERCISES[name][1]}.py"
    fn = getattr(importlib.import_module(f"walkthrough.exercises.{EXERCISES[name][1]}"), name)

    def call(*args):
        try:
            return fn(*args)
        except NotImplementedError as e:
            pytest.skip(f"not done yet: {name} in {file} raised NotImplementedError({e})")
    return call


def solution(name):
    """A reference the package does not need, from walkthrough/solutions/."""
    return getattr(importlib.import_module(f"walkthrough.solutions.{name}"), name)


def package(name):
    """minigrpo.<name>, or skip: gae and dpo_loss arrive with another branch."""
    import minigrpo
    if not hasattr(minigrpo, name):
        pytest.skip(f"reference not available yet (minigrpo.{name})")
    return getattr(minigrpo, name)


# ------------------------------------------------------------------ ch. 2-4
def sequence_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0):
    if IMPL == "student":
        return student("sequence_logprobs")(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                            temperature)
    from minigrpo.sampler import sequence_logprobs as ref
    return ref(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature)


def pg_loss(logp, advantages, mask):
    if IMPL == "student":
        return student("pg_loss")(logp, advantages, mask)
    return solution("pg_loss")(logp, advantages, mask)


def group_advantages(rewards, weights=None, scale="group", eps=1e-4):
    if IMPL == "student":
        return student("group_advantages")(rewards, weights, scale, eps)
    from minigrpo.advantages import group_advantages as ref  # also GDPO, constraints, diagnostics
    return ref(rewards, weights, scale=scale, eps=eps)[0]


# ------------------------------------------------------------------ ch. 5-7
def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    if IMPL == "student":
        return student("gae")(rewards, values, mask, gamma, lam)
    return package("gae")(rewards, values, mask, gamma=gamma, lam=lam)


def grpo_loss(logp, old_logp, advantages, mask, epsilon=0.2, epsilon_high=None, beta=0.0, ref_logp=None):
    if IMPL == "student":
        return student("grpo_loss")(logp, old_logp, advantages, mask, epsilon, epsilon_high, beta, ref_logp)
    from minigrpo.loss import grpo_loss as ref  # also the other loss types and the stats
    return ref(logp, old_logp, advantages, mask, loss_type="grpo", epsilon=epsilon, epsilon_high=epsilon_high,
               beta=beta, ref_logp=ref_logp)[0]


def kl_k3(logp, ref_logp):
    if IMPL == "student":
        return student("kl_k3")(logp, ref_logp)
    from minigrpo.loss import kl_k3 as ref
    return ref(logp, ref_logp)


def reduce_tokens(per_token, mask, loss_type, max_completion_length=None, num_items_in_batch=None):
    if IMPL == "student":
        return student("reduce_tokens")(per_token, mask, loss_type, max_completion_length, num_items_in_batch)
    from minigrpo.loss import reduce_tokens as ref
    return ref(per_token, mask, loss_type, max_completion_length, num_items_in_batch)


# ------------------------------------------------------------------ ch. 8-9
def _lora_layer(W, b, A, B, alpha, rslora):
    """The package's LoRALinear holding the given W (out, in), b (out,) or None, A (r, in), B (out, r)."""
    from minigrpo.lora import LoRALinear
    base = nn.Linear(W.shape[1], W.shape[0], bias=b is not None, dtype=W.dtype)
    layer = LoRALinear(base, A.shape[0], alpha, rslora=rslora)
    with torch.no_grad():
        for p, v in ((base.weight, W), (base.bias, b), (layer.lora_A.weight, A), (layer.lora_B.weight, B)):
            if v is not None:
                p.copy_(v)
    return layer


def lora_forward(x, W, b, A, B, alpha, rslora=False):
    if IMPL == "student":
        return student("lora_forward")(x, W, b, A, B, alpha, rslora)
    with torch.no_grad():
        return _lora_layer(W, b, A, B, alpha, rslora)(x)


def lora_merge(W, A, B, alpha, rslora=False):
    if IMPL == "student":
        return student("lora_merge")(W, A, B, alpha, rslora)
    from minigrpo.lora import merge_lora
    holder = nn.Module()  # merge_lora merges every LoRALinear of a model: give it a model of one
    holder.layer = _lora_layer(W, None, A, B, alpha, rslora)
    merge_lora(holder)
    return holder.layer.base_layer.weight.detach().clone()


def top_p_filter(logits, top_p):
    if IMPL == "student":
        return student("top_p_filter")(logits, top_p)
    from minigrpo.sampler import filter_logits  # also top-k
    return filter_logits(logits, top_k=0, top_p=top_p)


# ------------------------------------------------------------------ ch. 10-13
def bradley_terry_loss(chosen_scores, rejected_scores):
    if IMPL == "student":
        return student("bradley_terry_loss")(chosen_scores, rejected_scores)
    return solution("bradley_terry_loss")(chosen_scores, rejected_scores)


def dual_ascent_step(lam, mean_safety, threshold, lr=0.1, lambda_max=10.0):
    if IMPL == "student":
        return student("dual_ascent_step")(lam, mean_safety, threshold, lr, lambda_max)
    from minigrpo.advantages import SafetyConstraint  # the step is its update(); λ lives in log space there
    c = SafetyConstraint(threshold, lr=lr, lambda_init=lambda_max, lambda_max=lambda_max)
    c.log_lam = math.log(lam)
    return c.update(mean_safety)


def dpo_loss(policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp, beta=0.1):
    if IMPL == "student":
        return student("dpo_loss")(policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp,
                                   beta)
    return package("dpo_loss")(policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp,
                               beta=beta)[0]  # the package also returns stats
