"""The embedded world: the laboratory every new user runs first, in its own room.

The reusable library (decoder, loader, tokenizer, LoRA, sampler, encoder, reward model,
advantages, loss, the trainers) imports nothing from here; this subpackage builds on it.

    lexicon.py      topics, prompt templates and the grammar of eight response styles
    rubric.py       the ground-truth rubric: scores any text on the four aspects (plays human evaluation)
    generator.py    `minigrpo world`: prompts (train / test / OOD), SFT data, reward-model data, world.json
    base_policy.py  `minigrpo tokenizer` and `minigrpo sft`: the tiny Qwen2 base policy GRPO starts from
    goals.py        the world's judgement of a policy: rubric scores, behaviour rates, the run's goals
"""
from minigrpo.world.generator import WorldConfig, make_world, policy_means, style_table
from minigrpo.world.lexicon import IDEAL, KINDS, SFT_MIX, STYLES, TOPICS
