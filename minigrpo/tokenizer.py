"""The policy's tokenizer: a `tokenizers` BPE from `tokenizer.json`, plus a hand-written ChatML template.

ChatML, as Qwen2/2.5/3 chat models use it:
    <|im_start|>{role}\\n{content}<|im_end|>\\n      for each message, then
    <|im_start|>assistant\\n                        when a generation prompt is asked for.
Qwen2.5's own Jinja template inserts a default system message ("You are Qwen, created by Alibaba
Cloud. You are a helpful assistant.") when the conversation has none; we read that sentence from
`tokenizer_config.json`'s `chat_template` when it is there, so prompts match the official template.
Not replicated: tool calls, and Qwen3's stripping of `<think>` blocks from earlier turns.

EOS ids come from `generation_config.json` (what `transformers.generate` stops on), else from the
tokenizer's `eos_token`, else from `config.json`; the pad id from `tokenizer_config.json`'s
`pad_token`, else `generation_config.json`, else the first EOS id.
"""
import re
from pathlib import Path

from tokenizers import Tokenizer

from minigrpo.errors import InputError
from minigrpo.files import read_json

CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system\\n(You are [^'\"<]*)<\|im_end\|>")


class ChatTokenizer:
    """Encode/decode text and chat messages; knows the checkpoint's EOS and pad ids."""

    def __init__(self, tokenizer, eos_token_ids, pad_token_id, default_system=None):
        self.tokenizer = tokenizer
        self.eos_token_ids = list(eos_token_ids)
        self.pad_token_id = pad_token_id
        self.default_system = default_system
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text):
        """Token ids of `text`; special tokens written in the text (e.g. `<|im_end|>`) are recognised."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens=True):
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages, add_generation_prompt=True):
        """ChatML text of a list of {"role", "content"} messages (see the module docstring)."""
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise InputError(f"message {i}: expected {{'role': str, 'content': str}}, found {m!r}")
        if self.default_system and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}] + list(messages)
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def encode_chat(self, messages, add_generation_prompt=True):
        """Token ids of the ChatML text, with the chat special tokens as single ids."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt))


def _token_id(tok, token, where):
    if isinstance(token, dict):  # older tokenizer_config.json: {"content": "<|im_end|>", ...}
        token = token.get("content")
    if token is None:
        return None
    tid = tok.token_to_id(token)
    if tid is None:
        raise InputError(f"{where}: token {token!r} is not in tokenizer.json's vocabulary")
    return tid


def load_tokenizer(path):
    """Load the ChatTokenizer of a checkpoint directory (tokenizer.json + optional config files)."""
    path = Path(path)
    tj = path / "tokenizer.json"
    if not tj.is_file():
        raise InputError(f"{path}: tokenizer.json not found (expected the Hugging Face fast-tokenizer file)")
    try:
        tok = Tokenizer.from_file(str(tj))
    except Exception as e:
        raise InputError(f"{tj}: not a readable tokenizers file ({e})") from None
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    missing = [t for t in CHAT_TOKENS if t not in special]
    if missing:
        raise InputError(f"{tj}: chat special tokens {missing} are missing; expected {list(CHAT_TOKENS)} as special added tokens")

    tc_path, gc_path = path / "tokenizer_config.json", path / "generation_config.json"
    tc = read_json(tc_path) if tc_path.is_file() else {}
    gc = read_json(gc_path) if gc_path.is_file() else {}
    cfg = read_json(path / "config.json") if (path / "config.json").is_file() else {}

    eos = gc.get("eos_token_id")
    if eos is None:
        eos = _token_id(tok, tc.get("eos_token"), tc_path)
    if eos is None:
        eos = cfg.get("eos_token_id")
    if eos is None:
        raise InputError(f"{path}: no EOS token in generation_config.json, tokenizer_config.json or config.json")
    eos = [eos] if isinstance(eos, int) else eos
    pad = _token_id(tok, tc.get("pad_token"), tc_path)
    if pad is None:
        pad = gc.get("pad_token_id", eos[0] if isinstance(eos, list) and eos else None)
    V = tok.get_vocab_size(with_added_tokens=True)
    for name, ids in (("eos_token_id", eos), ("pad_token_id", [pad])):
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < V
                                                         for i in ids):
            raise InputError(f"{path}: {name} {ids if name == 'eos_token_id' else pad!r} (from generation_config.json, "
                             f"tokenizer_config.json or config.json) is not a token id; expected ids in [0, {V})")

    template = tc.get("chat_template") or ""
    if isinstance(template, list):  # a list of named templates: take "default"
        template = next((t.get("template", "") for t in template if isinstance(t, dict) and t.get("name") == "default"), "")
    if not isinstance(template, str):
        raise InputError(f"{tc_path}: field 'chat_template' is {type(template).__name__}, expected a string")
    m = _DEFAULT_SYSTEM.search(template)
    return ChatTokenizer(tok, eos, pad, default_system=m.group(1) if m else None)
