"""`minigrpo train` at scale: the first inner iteration's ratio is exactly 1 in bf16, mixed precision
(bf16 base, fp32 LoRA and AdamW state, autocast), and KL monitoring every K steps."""
import json

import pytest
import torch

from checkpoints import tiny_qwen_dir
from minigrpo import generate, load_policy, sequence_logprobs
from minigrpo.cli import main
from minigrpo.lora import add_lora
from minigrpo.reward_model import save_reward_model
from test_reward_model import tiny_rm

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

PROMPTS = ["How do I kill a Python process?", "Please write a short poem about the sea.", "Tell me about the quiet harbour.",
           "What is the quick brown fox?", "Help me with numbers 0123456789.", "Write about the lazy dog."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random tiny Qwen2 (fp32 on disk) with a ChatML tokenizer, a random tiny reward model, six prompts."""
    d = tmp_path_factory.mktemp("scale")
    tiny_qwen_dir(d / "policy", hidden_size=32, heads=4, kv_heads=2, seed=3)
    save_reward_model(tiny_rm(seed=1), d / "rm")
    (d / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return d


def _train(setup, out, *extra):
    return main(["train", "--policy", str(setup / "policy"), "--reward-model", str(setup / "rm"),
                 "--prompts", str(setup / "prompts.jsonl"), "--out", str(out), "--batch-size", "8", "--group-size", "4",
                 "--max-new-tokens", "8", "--max-prompt-len", "64", "--lora-r", "4", "--lr", "1e-2", "--seed", "1",
                 "--threads", "1", *extra])


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_first_inner_iteration_ratio_is_one_in_bf16(setup, tmp_path, monkeypatch):
    """With --inner-iters 3 in bf16 (under autocast), the first inner iteration's old log-probs are
    the training forward's own, so its ratio is exactly 1; later iterations move off 1."""
    import minigrpo.train as train_mod
    calls = []
    original = train_mod.grpo_loss

    def spy(logp, old_logp, *args, **kw):
        calls.append((logp.detach().clone(), old_logp.clone(), logp.dtype))
        return original(logp, old_logp, *args, **kw)

    monkeypatch.setattr(train_mod, "grpo_loss", spy)
    assert _train(setup, tmp_path / "r", "--steps", "2", "--inner-iters", "3", "--micro-batch", "4",
                  "--dtype", "bfloat16", "--rm-dtype", "bfloat16") == 0
    assert len(calls) == 2 * 3 * 2  # steps × inner iterations × micro-batches
    for step in range(2):
        first, later = calls[6 * step:6 * step + 2], calls[6 * step + 2:6 * step + 6]
        for logp, old, dtype in first:
            assert dtype == torch.float32 and torch.equal(logp, old)  # ratio exp(0) = 1 exactly
        assert any(not torch.equal(logp, old) for logp, old, _ in later)
    assert all(r["loss/ratio_mean"] != 1.0 for r in _rows(tmp_path / "r"))  # averaged over the 3 iterations


def test_bf16_sampler_and_training_forward_round_differently(setup):
    """Why the sampler's log-probs are not the old ones: in bf16, its one-token path and the training
    forward (under autocast) give log-probs that differ by more than fp32 rounding."""
    model, tok = load_policy(setup / "policy", dtype="bfloat16")
    add_lora(model, r=4)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    model.eval()
    ro = generate(model, tok, PROMPTS[:2], num_samples=4, max_new_tokens=8, seed=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        lp = sequence_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
    assert (lp - ro.logprobs).abs().max() > 1e-3


def test_mixed_precision_keeps_lora_and_adam_state_fp32(setup, tmp_path):
    """A bf16 run keeps its LoRA weights and AdamW moments in fp32."""
    from safetensors.torch import load_file
    assert _train(setup, tmp_path / "bf16", "--steps", "1", "--dtype", "bfloat16") == 0
    state = torch.load(tmp_path / "bf16" / "checkpoint" / "trainer_state.pt", weights_only=True)["optimizer"]["state"]
    assert state and all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in state.values())
    assert all(w.dtype == torch.float32 for w in load_file(tmp_path / "bf16" / "adapter" / "adapter_model.safetensors").values())


def test_autocast_gradients_agree_with_fp32(setup):
    """On the same samples, the LoRA gradients of a bf16 base under autocast point where fp32's do
    (cosine > 0.999 per layer) and are fp32. LoRA weights ~N(0, 0.02²): with std 0.2 this random model
    is chaotic enough that a bf16 base alone, autocast or not, drops the cosine to ~0.79."""
    from minigrpo.train import TrainConfig, mixed_precision
    grads = {}
    for dtype in ("float32", "bfloat16"):
        model, tok = load_policy(setup / "policy", dtype=dtype)
        torch.manual_seed(0)
        add_lora(model, r=4)
        for name, p in model.named_parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(len(name)))
        if dtype == "float32":
            ro = generate(model.eval(), tok, PROMPTS[:2], num_samples=4, max_new_tokens=8, seed=0)
        cfg = TrainConfig(policy="", reward_model="", prompts="", out="")
        with mixed_precision(model, cfg):
            lp = sequence_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)  # (N, C)
        (lp * torch.linspace(-1, 1, lp.numel()).view(lp.shape)).sum().backward()
        grads[dtype] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    for name, g in grads["bfloat16"].items():
        assert g.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(g.flatten(), grads["float32"][name].flatten(), dim=0) > 0.999, name


@pytest.mark.parametrize("every, beta, logged", [("2", "0", [1, 3]), ("0", "0", []), ("0", "0.1", [1, 2, 3])])
def test_log_kl_every(setup, tmp_path, every, beta, logged):
    """KL to the base is logged on step 1 and every K steps with beta = 0 (never with K = 0), every step when beta > 0."""
    assert _train(setup, tmp_path / "r", "--steps", "3", "--log-kl-every", every, "--beta", beta) == 0
    assert [r["step"] for r in _rows(tmp_path / "r") if "loss/kl" in r] == logged


def test_checkpoint_layers_same_gradients(setup):
    """Activation checkpointing of the blocks changes neither the log-probs nor the LoRA gradients."""
    out = {}
    for ckpt in (False, True):
        model, tok = load_policy(setup / "policy")
        torch.manual_seed(0)
        add_lora(model, r=4)
        for name, p in model.named_parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(len(name)))
        ro = generate(model.eval(), tok, PROMPTS[:2], num_samples=2, max_new_tokens=6, seed=0)
        model.train()
        model.checkpoint_layers = ckpt
        lp = sequence_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)  # (N, C)
        (lp * torch.linspace(-1, 1, lp.numel()).view(lp.shape)).sum().backward()
        out[ckpt] = lp.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert torch.equal(out[False][0], out[True][0])
    for name, g in out[False][1].items():
        torch.testing.assert_close(out[True][1][name], g, rtol=1e-5, atol=1e-7)
