"""What a training run costs, counted so that machines do not matter: token-passes through policy-sized models.

A token-pass is one token through one decoder (policy, frozen reference, or critic), forward or
backward. The rules, the same for every trainer (GRPO's are rebuilt from its metrics by `minigrpo compare`):
  * sampling: each prompt is prefilled once (its real tokens), then one forward per generated token;
  * a training or reference forward over prompt + completion counts its real tokens T; a backward
    counts them again as backward token-passes; the critic's forwards and backwards count the same;
  * the reward model (a small encoder, the same for every method, one pass per sampled completion)
    is not a decoder pass and is reported apart, as its completions scored.
Dividing by the sampled completions gives a per-completion figure, the comparison's headline.
Wall time (split sample / score / update) and peak RSS are measured too; they depend on the machine.
`python -m minigrpo.measure OUT.json COMMAND ...` runs a sub-command and records the process's wall
time and peak RSS (minigrpo/measure.py).
"""
import resource

import torch

TIMES = ("sample", "score", "update")


class Cost:
    """Counters a trainer adds to as it runs; `state_dict` keeps them across `--resume`."""

    def __init__(self):
        self.completions = 0  # sampled from the policy (or the base, for DPO)
        self.scored = 0  # completions the reward model scored
        self.forward_tokens = 0
        self.backward_tokens = 0
        self.time = dict.fromkeys(TIMES, 0.0)

    def sampled(self, ro):
        """A `Rollout`: its B prompts prefilled once each, one forward per generated token."""
        G = ro.num_samples
        self.completions += ro.completion_ids.shape[0]
        self.forward_tokens += int(ro.prompt_mask[::G].sum()) + int(ro.completion_mask.sum())

    def passes(self, prompt_mask, completion_mask, forward=1, backward=0):
        """`forward` (and `backward`) passes of prompt + completion through decoders: real tokens each."""
        T = int(prompt_mask.sum()) + int(completion_mask.sum())
        self.forward_tokens += forward * T
        self.backward_tokens += backward * T

    def sum_over_ranks(self, before, all_sum):
        """Make the counts since `before` (a state_dict) those of every data-parallel rank (distributed.all_reduce_sum)."""
        keys = ("completions", "scored", "forward_tokens", "backward_tokens")
        mine = torch.tensor([getattr(self, k) - before[k] for k in keys], dtype=torch.float64)  # exact below 2^53
        for k, n in zip(keys, all_sum(mine).tolist()):
            setattr(self, k, before[k] + int(n))

    def state_dict(self):
        return {"completions": self.completions, "scored": self.scored, "forward_tokens": self.forward_tokens,
                "backward_tokens": self.backward_tokens, "time": dict(self.time)}

    def load_state_dict(self, state):
        for k, v in state.items():
            setattr(self, k, dict(v) if k == "time" else v)

    def summary(self, trainable, models):
        """The figures `cost.json` holds: counts, per-completion token-passes, time split, peak RSS so far."""
        n = max(self.completions, 1)
        return {**self.state_dict(), "trainable_parameters": trainable, "models_in_memory": models,
                "forward_per_completion": self.forward_tokens / n, "backward_per_completion": self.backward_tokens / n,
                "time_total": sum(self.time.values()), "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb():
    """This process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
