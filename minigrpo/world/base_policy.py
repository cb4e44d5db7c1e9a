"""The embedded world's base policy: a byte-level BPE tokenizer and a tiny Qwen2 trained by SFT.

The paper starts GRPO from Qwen2.5-Instruct. With no weights to download, the embedded world
trains its own stand-in: a Qwen2-architecture decoder (a few hundred thousand parameters) fitted by
supervised fine-tuning on `sft.jsonl`, a deliberately mixed distribution of response styles (it
often complies with harmful requests and often refuses safe ones) — the misbehaving model GRPO
must fix. It is saved in the Hugging Face layout, so `transformers` and `load_policy` both load it.

Two stages, two sub-commands:
    minigrpo tokenizer --data world/sft.jsonl,world/rm.jsonl --out runs/small/tokenizer
    minigrpo sft --data world/sft.jsonl --tokenizer runs/small/tokenizer --out runs/small/base

SFT loss: token-level cross-entropy on the response and its closing `<|im_end|>` only (the prompt
and the chat markers are context, not targets), averaged over response tokens of the batch.
"""
import json
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from minigrpo.bpe import train_bpe
from minigrpo.errors import InputError
from minigrpo.files import atomic_dir, check_out, read_jsonl
from minigrpo.flags import check_flags
from minigrpo.loader import save_policy
from minigrpo.qwen import Qwen, QwenConfig
from minigrpo.tokenizer import load_tokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # Qwen2's, in Qwen2's order
CHATML_JINJA = (  # so that transformers' apply_chat_template writes what ours writes
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass
class TokenizerConfig:
    """Train the embedded world's byte-level BPE tokenizer (with the ChatML special tokens)."""
    data: str = field(metadata={"help": "comma-separated JSONL files; their prompt and response texts train the BPE"})
    out: str = field(metadata={"help": "output directory (tokenizer.json, tokenizer_config.json, generation_config.json)"})
    vocab_size: int = field(default=1024, metadata={"help": "vocabulary size, special tokens included"})


def train_tokenizer(cfg):
    """Train the BPE on the prompts and responses of the JSONL files; write it with its config files."""
    check_flags(cfg)
    check_out(cfg.out)
    texts = []
    for path in cfg.data.split(","):
        for row in read_jsonl(path, {"prompt": str}):
            texts.append(row["prompt"])
            texts.append(row.get("response", ""))
    tok = train_bpe(texts, cfg.vocab_size, SPECIALS)
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    with atomic_dir(cfg.out) as tmp:
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "chat_template": CHATML_JINJA}, indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps({
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]], "pad_token_id": ids["<|endoftext|>"]}, indent=2) + "\n")
    print(f"tokenizer: {tok.get_vocab_size()} tokens from {len(texts)} texts → {cfg.out}")


@dataclass
class SFTConfig:
    """Train the tiny Qwen2 base policy from scratch by SFT on (prompt, response) pairs."""
    data: str = field(metadata={"help": "JSONL with {'prompt': str, 'response': str} rows (the world's sft.jsonl)"})
    tokenizer: str = field(metadata={"help": "directory written by `minigrpo tokenizer`"})
    out: str = field(metadata={"help": "output checkpoint directory (Hugging Face layout)"})
    hidden_size: int = field(default=128, metadata={"help": "model width H"})
    layers: int = field(default=4, metadata={"help": "number of decoder blocks"})
    heads: int = field(default=4, metadata={"help": "query heads"})
    kv_heads: int = field(default=2, metadata={"help": "key/value heads (grouped-query attention)"})
    intermediate_size: int = field(default=384, metadata={"help": "SwiGLU hidden size"})
    max_len: int = field(default=128, metadata={"help": "longest chat sequence allowed (longer rows are an error, never cut)"})
    epochs: int = field(default=3, metadata={"help": "passes over the data"})
    batch_size: int = field(default=32, metadata={"help": "sequences per step"})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate (linear warm-up, cosine decay)"})
    warmup: int = field(default=30, metadata={"help": "warm-up steps"})
    seed: int = field(default=0, metadata={"help": "initialisation and shuffling seed"})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default)"})


def encode_sft_rows(rows, tokenizer, max_len, path="data"):
    """Token ids and target masks: the templated user prompt (context) + response + <|im_end|> (targets)."""
    im_end = tokenizer.tokenizer.token_to_id("<|im_end|>")
    seqs, too_long = [], []
    for n, row in enumerate(rows, 1):
        context = tokenizer.encode_chat([{"role": "user", "content": row["prompt"]}])
        target = tokenizer.encode(row["response"]) + [im_end]
        if len(context) + len(target) > max_len:
            too_long.append((n, len(context) + len(target)))
        seqs.append((context, target))
    if too_long:
        worst = max(t for _, t in too_long)
        raise InputError(f"{path}: {len(too_long)} rows exceed max_len={max_len} tokens (first at row {too_long[0][0]}, "
                          f"longest {worst}); raise --max-len, nothing is cut silently")
    return seqs


def collate(seqs, pad_id):
    """Right-padded ids (N, T), attention mask (N, T) and target mask (N, T) for next-token loss."""
    T = max(len(c) + len(t) for c, t in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (N, T)
    attn = torch.zeros(len(seqs), T, dtype=torch.long)  # (N, T)
    target = torch.zeros(len(seqs), T, dtype=torch.bool)  # (N, T): True where the token is predicted
    for i, (c, t) in enumerate(seqs):
        ids[i, :len(c) + len(t)] = torch.tensor(c + t)
        attn[i, :len(c) + len(t)] = 1
        target[i, len(c):len(c) + len(t)] = True
    return ids, attn, target


def init_weights_(model, std=0.02, seed=0):
    """Normal(0, std) for matrices and embeddings, zero biases, unit norms (transformers' Qwen2 init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def train_sft(cfg):
    """Train the tiny base policy by SFT and save it in the Hugging Face layout."""
    check_flags(cfg)
    check_out(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.tokenizer)
    rows = read_jsonl(cfg.data, {"prompt": str, "response": str})
    seqs = encode_sft_rows(rows, tokenizer, cfg.max_len, cfg.data)
    if cfg.hidden_size % cfg.heads or cfg.heads % cfg.kv_heads:
        raise InputError(f"hidden_size={cfg.hidden_size}, heads={cfg.heads}, kv_heads={cfg.kv_heads}: "
                          "expected hidden_size divisible by heads and heads by kv_heads")
    mcfg = QwenConfig(vocab_size=tokenizer.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                      num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
                      head_dim=cfg.hidden_size // cfg.heads, rope_theta=10000.0, tie_word_embeddings=True,
                      max_position_embeddings=max(cfg.max_len, 256))
    model = Qwen(mcfg)
    init_weights_(model, seed=cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    # linear warm-up then cosine decay to 10% (nanoGPT's get_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))))
    print(f"sft: {len(seqs)} rows, {n_params / 1e6:.2f} M parameters, {total} steps")
    g = torch.Generator().manual_seed(cfg.seed)
    log, step, t0 = [], 0, time.time()
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(seqs), generator=g).tolist()
        for b in range(steps_per_epoch):
            batch = [seqs[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            ids, attn, target = collate(batch, tokenizer.pad_token_id)
            logits = model(ids, attention_mask=attn)  # (N, T, V)
            # next-token cross-entropy on target positions: logits at t predict token t+1
            loss = F.cross_entropy(logits[:, :-1][target[:, 1:]], ids[:, 1:][target[:, 1:]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            log.append({"step": step, "epoch": epoch, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
            if step % 50 == 0 or step == total:
                rate = step / (time.time() - t0)
                print(f"sft step {step}/{total} loss {loss.item():.3f} {rate:.1f} steps/s ETA {(total - step) / rate:.0f}s", flush=True)
    model.eval()
    extra = {"sft_log.jsonl": "".join(json.dumps(r) + "\n" for r in log)}
    save_policy(model, cfg.tokenizer, cfg.out, extra_files=extra)
    print(f"sft: final loss {log[-1]['loss']:.3f} → {cfg.out}")
    return log
