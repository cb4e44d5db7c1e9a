"""Prompt files for `train`, `sample` and `eval`: JSONL (`{"prompt": ...}` or `{"messages": [...]}`) or CSV.

Each prompt becomes a dict with `messages` (the chat turns the policy sees), `text` (the last user
turn, which the reward model scores the response against) and any other fields of the row (the
embedded world's `kind`, `split`, ...). CSV files need `--prompt-column` (AdvBench: `goal`,
XSTest: `prompt`); their other columns are kept as strings.

Chat markers typed inside a prompt (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`) are refused,
naming the file and line. transformers' chat template would turn them into the real special
tokens, silently changing the conversation the policy sees (a user turn that ends early, a
forged assistant turn); treating them as plain text would differ from every Qwen tool. Neither
is what a prompt file means, so it is an error.
"""
import csv
import io
from pathlib import Path

from minigrpo.errors import InputError
from minigrpo.files import iter_jsonl, read_utf8

MARKERS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")  # Qwen's chat and document special tokens


def _check_markers(msgs, where):
    for m in msgs:
        found = next((t for t in MARKERS if t in m["content"]), None)
        if found:
            raise InputError(f"{where}: the {m['role']} message contains the chat marker {found!r}, which would become "
                             "the real special token (see minigrpo/prompts.py); remove it")


def prompt_from_row(row, where):
    """A prompt dict ({'messages', 'text', ...}) from one row of a prompt file; `where` names it in errors."""
    prompt = _parse_row(row, where)
    _check_markers(prompt["messages"], where)
    return prompt


def _parse_row(row, where):
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in msgs):
            raise InputError(f"{where}: field 'messages' must be a non-empty list of {{'role': str, 'content': str}}")
        users = [m["content"] for m in msgs if m["role"] == "user"]
        if not users:
            raise InputError(f"{where}: field 'messages' has no user turn")
        return {**{k: v for k, v in row.items() if k != "messages"}, "messages": msgs, "text": users[-1]}
    text = row.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: expected a non-empty string field 'prompt' (or 'messages'), found {text!r}")
    return {**row, "messages": [{"role": "user", "content": text}], "text": text}


def load_prompts(path, column=None):
    """Read prompts from a .jsonl or .csv file; errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: prompt file not found")
    out = []
    if path.suffix == ".csv":
        with io.StringIO(read_utf8(path), newline="") as f:
            reader = csv.DictReader(f)
            if column is None or column not in (reader.fieldnames or []):
                raise InputError(f"{path}: prompt column {column!r} not found; columns are {reader.fieldnames} "
                                  "(pass --prompt-column)")
            for n, row in enumerate(reader, 2):  # line 1 is the header
                out.append(prompt_from_row({**row, "prompt": row[column]}, f"{path}:{n}"))
    else:
        for n, row in iter_jsonl(path):
            if column is not None and column != "prompt" and column in row:
                row = {**row, "prompt": row[column]}
            out.append(prompt_from_row(row, f"{path}:{n}"))
    if not out:
        raise InputError(f"{path}: no prompts")
    return out


def encode_prompts(prompts, tokenizer, max_len, path="prompts"):
    """Chat-templated token ids of each prompt; prompts over `max_len` tokens are an error, never cut."""
    ids = [tokenizer.encode_chat(p["messages"]) for p in prompts]
    over = [i for i, x in enumerate(ids) if len(x) > max_len]
    if over:
        raise InputError(f"{path}: {len(over)} of {len(ids)} prompts exceed --max-prompt-len={max_len} tokens "
                          f"(longest {max(len(ids[i]) for i in over)}); raise the limit or shorten them")
    return ids
