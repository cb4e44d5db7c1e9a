"""A toy world for trainer tests: world prompts, a tokenizer, a transformers-saved random Qwen2, a 1-epoch
tiny reward model (what tests/test_train.py builds), and a check that an adapter loads in peft."""
import json

import torch

from checkpoints import tiny_qwen_hf
from minigrpo.world.base_policy import TokenizerConfig, train_tokenizer
from minigrpo.cli import main
from minigrpo.tokenizer import load_tokenizer
from minigrpo.world import WorldConfig, make_world


def build(d):
    """Write world/, tok/, policy/ (random Qwen2, hidden 32) and rm/ under d; return d."""
    make_world(WorldConfig(out=str(d / "world"), train=12, test=6, ood=6, sft_per_prompt=2, rm_per_prompt=4))
    train_tokenizer(TokenizerConfig(data=f"{d}/world/sft.jsonl,{d}/world/rm.jsonl", out=str(d / "tok"), vocab_size=400))
    tok = load_tokenizer(d / "tok")
    hf = tiny_qwen_hf(vocab_size=tok.vocab_size, hidden_size=32, heads=4, kv_heads=2, seed=3)
    hf.save_pretrained(d / "policy")
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (d / "policy" / f).write_bytes((d / "tok" / f).read_bytes())
    assert main(["train-rm", "--data", f"{d}/world/rm.jsonl", "--config", "tiny", "--out", str(d / "rm"),
                 "--epochs", "1", "--seed", "0"]) == 0
    return d


def rows(out):
    """The rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_peft_loads(policy_dir, adapter_dir):
    """peft.PeftModel.from_pretrained loads the adapter onto transformers' model with our logits, and it moved them."""
    import peft
    import transformers

    from minigrpo import load_adapter, load_policy
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(policy_dir)).float().eval()
    ids = torch.randint(0, hf.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = hf(ids).logits
        theirs = peft.PeftModel.from_pretrained(hf, str(adapter_dir)).eval()(ids).logits
        model, _ = load_policy(policy_dir)
        load_adapter(model, adapter_dir)
        ours = model(ids)
    assert (ours - base).abs().max() > 1e-4  # training changed the policy
    assert (ours - theirs).abs().max() <= 1e-4
