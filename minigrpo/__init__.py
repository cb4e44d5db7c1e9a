"""minigrpo: multi-objective GRPO for safe and aligned generation (arXiv 2503.21819), from scratch.

Data flows one way: prompts → sampler → rewards → advantages → loss → LoRA update.
This is the reusable library; the embedded world it is taught and tested on lives apart, in
`minigrpo.world`, and nothing here imports it.
"""
from minigrpo.advantages import SafetyConstraint, group_advantages
from minigrpo.dpo import dpo_loss
from minigrpo.encoder import load_encoder
from minigrpo.errors import InputError
from minigrpo.loader import load_policy, save_policy
from minigrpo.lora import add_lora, load_adapter, lora_disabled, merge_lora, save_adapter, unmerge_lora
from minigrpo.loss import grpo_loss, kl_k3, reduce_tokens
from minigrpo.ppo import gae
from minigrpo.qwen import KVCache, Qwen, QwenConfig
from minigrpo.reward_model import RewardModel, load_reward_model, save_reward_model
from minigrpo.sampler import Rollout, generate, sequence_logprobs
from minigrpo.tokenizer import ChatTokenizer, load_tokenizer
