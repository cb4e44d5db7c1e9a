"""The ChatML tokenizer, on a tokenizer trained inside the test (no download)."""
import json

import pytest

from checkpoints import write_tokenizer
from minigrpo import InputError, load_tokenizer

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I kill a Python process?"}]
# The ChatML Jinja template (the shape of Qwen2.5's, tool calls left out), to check ours against transformers.
CHATML_JINJA = (
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture
def tok_dir(tmp_path):
    write_tokenizer(tmp_path)
    return tmp_path


def test_chat_template_text(tok_dir):
    """apply_chat_template writes ChatML exactly."""
    tok = load_tokenizer(tok_dir)
    text = tok.apply_chat_template(MESSAGES)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nHow do I kill a Python process?<|im_end|>\n<|im_start|>assistant\n")
    assert not tok.apply_chat_template(MESSAGES, add_generation_prompt=False).endswith("assistant\n")


def test_special_tokens_single_ids(tok_dir):
    """encode_chat maps each ChatML marker to its single special id; decode restores the text."""
    tok = load_tokenizer(tok_dir)
    ids = tok.encode_chat(MESSAGES)
    start, end = tok.tokenizer.token_to_id("<|im_start|>"), tok.tokenizer.token_to_id("<|im_end|>")
    assert ids.count(start) == 3 and ids.count(end) == 2 and ids[0] == start
    assert tok.decode(ids, skip_special_tokens=False) == tok.apply_chat_template(MESSAGES)
    assert "<|im_start|>" not in tok.decode(ids, skip_special_tokens=True)


def test_round_trip_unicode(tok_dir):
    """Byte-level BPE encodes any text, including characters never seen in training."""
    tok = load_tokenizer(tok_dir)
    for text in ["héllo wörld ✓", "", "  spaces\n\ttabs", "日本語"]:
        assert tok.decode(tok.encode(text)) == text


def test_eos_and_pad_from_files(tok_dir):
    """EOS ids come from generation_config.json, the pad id from tokenizer_config.json's pad_token."""
    tok = load_tokenizer(tok_dir)
    assert tok.eos_token_ids == [2, 0] and tok.pad_token_id == 0
    (tok_dir / "generation_config.json").unlink()
    tok = load_tokenizer(tok_dir)
    assert tok.eos_token_ids == [tok.tokenizer.token_to_id("<|im_end|>")]


def test_matches_transformers_chat_template(tmp_path):
    """With Qwen2.5's default-system template, our ChatML text and ids equal transformers'."""
    transformers = pytest.importorskip("transformers")
    write_tokenizer(tmp_path, chat_template=CHATML_JINJA)
    ours = load_tokenizer(tmp_path)
    assert ours.default_system == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    hf.chat_template = CHATML_JINJA
    for msgs in (MESSAGES, MESSAGES[1:]):
        text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert ours.apply_chat_template(msgs) == text
        assert ours.encode_chat(msgs) == hf(text, add_special_tokens=False)["input_ids"]


def test_bad_message(tok_dir):
    """A message without role/content is an error naming its index."""
    tok = load_tokenizer(tok_dir)
    with pytest.raises(InputError, match="message 1"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "user"}])


def test_tokenizer_config_unknown_pad(tok_dir):
    """A pad_token absent from the vocabulary names the file and token."""
    tc = json.loads((tok_dir / "tokenizer_config.json").read_text())
    tc["pad_token"] = "<pad>"
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(InputError, match="tokenizer_config.json.*<pad>"):
        load_tokenizer(tok_dir)
