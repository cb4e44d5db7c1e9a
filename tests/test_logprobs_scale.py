"""sequence_logprobs at Qwen's real vocabulary (V = 151,936): equal to a naive full-logits reference,
gradients included, while its peak memory stays far below the (N, C, V) fp32 logits it avoids, on both
of its large-vocabulary paths: vocabulary blocks (a frozen head, as under LoRA) and checkpointed
token chunks (a trainable head)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from checkpoints import randomise_
from minigrpo.qwen import Qwen, QwenConfig
from minigrpo.sampler import LOGITS_BYTES, sequence_logprobs

ROOT = Path(__file__).resolve().parents[1]
V, N, P, C = 151_936, 32, 8, 128
FULL_LOGITS = N * C * V * 4  # bytes of the fp32 logits (N, C, V): 2.49 GB
GRAD_ROWS = 4  # rows the test loss weighs (the naive reference backpropagates through these only)


def build():
    """A random Qwen2 with the real vocabulary and a tiny body (H = 16), and a fixed batch."""
    cfg = QwenConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=8, rope_theta=10000.0)
    model = randomise_(Qwen(cfg), seed=4, std=0.5)
    g = torch.Generator().manual_seed(5)
    prompt_ids = torch.randint(0, V, (N, P), generator=g)  # (N, P)
    prompt_mask = torch.ones(N, P, dtype=torch.long)  # (N, P)
    prompt_mask[::4, :3] = 0  # left padding on some rows
    completion_ids = torch.randint(0, V, (N, C), generator=g)  # (N, C)
    completion_mask = torch.ones(N, C, dtype=torch.long)  # (N, C)
    for i in range(0, N, 3):
        completion_mask[i, 20 + i:] = 0  # some rows stop early
    weights = torch.randn(N, C, generator=g)  # (N, C): a random linear loss of the log-probs ...
    weights[GRAD_ROWS:] = 0  # ... of the first rows only (they span several chunks), to keep the reference cheap
    return model, (prompt_ids, prompt_mask, completion_ids, completion_mask), weights


def _rss(field):
    """VmRSS / VmHWM of this process in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def chunked_child(out, train_head=False):
    """In a fresh process: sequence_logprobs and its backward; writes results and the peak extra RSS."""
    torch.set_num_threads(2)
    model, batch, weights = build()
    model.lm_head.weight.requires_grad_(train_head)  # frozen: vocabulary blocks, as under LoRA; trainable: token chunks
    small = [t[:1, :2] for t in batch]
    sequence_logprobs(model, *small).sum().backward()  # warm-up: load kernels, allocator pools
    model.zero_grad(set_to_none=True)
    before = _rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    logp = sequence_logprobs(model, *batch)  # (N, C)
    (logp * weights).sum().backward()
    peak = _rss("VmHWM")
    torch.save({"logp": logp.detach(), "grads": {n: p.grad for n, p in model.named_parameters() if p.grad is not None}},
               out / "chunked.pt")
    (out / "peak.json").write_text(json.dumps({"extra": peak - before}))


@pytest.mark.parametrize("path,bound", [("blocks", 2 * LOGITS_BYTES), ("chunks", 6 * LOGITS_BYTES)])
def test_real_vocab_logprobs_equal_naive_and_memory_stays_bounded(tmp_path, path, bound):
    """At V = 151,936, N = 32, C = 128: log-probs (and the gradients of a loss on the first rows) equal
    a naive per-row full-logits reference, and the peak extra RSS of forward + backward is a small fraction
    of the 2.49 GB logits: vocabulary blocks keep (N·C, 2,048) temporaries (~100 MiB); token chunks a few
    chunks' logits (~5 × 128 MiB)."""
    train_head = path == "chunks"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    code = f"import test_logprobs_scale as t, pathlib; t.chunked_child(pathlib.Path({str(tmp_path)!r}), {train_head})"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=300)
    extra = json.loads((tmp_path / "peak.json").read_text())["extra"]
    got = torch.load(tmp_path / "chunked.pt")

    model, (prompt_ids, prompt_mask, completion_ids, completion_mask), weights = build()
    model.lm_head.weight.requires_grad_(train_head)
    want = torch.zeros(N, C)  # (N, C)
    for i in range(N):  # naive: the row's real tokens alone, full logits (T, V), log_softmax, gather
        p = prompt_ids[i][prompt_mask[i].bool()]
        c = completion_ids[i][completion_mask[i].bool()]
        with torch.set_grad_enabled(i < GRAD_ROWS):
            logits = model(torch.cat([p, c])[None])[0, len(p) - 1:-1]  # (C_i, V)
            lp = logits.log_softmax(-1).gather(-1, c[:, None]).squeeze(-1)  # (C_i,)
        if i < GRAD_ROWS:
            (lp * weights[i, :len(c)]).sum().backward()
        want[i, :len(c)] = lp.detach()
    assert (got["logp"] - want).abs().max() <= 1e-4
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-4, atol=1e-5 * p.grad.abs().max().item())
    assert set(got["grads"]) == {n for n, p in model.named_parameters() if p.grad is not None}
    print(f"{path}: peak extra RSS {extra / 2**20:.0f} MiB vs full logits {FULL_LOGITS / 2**20:.0f} MiB")
    assert extra < bound <= FULL_LOGITS / 3  # the documented bounds (sequence_logprobs)
