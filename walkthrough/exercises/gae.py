"""Exercise — chapter 5, PPO and the critic. Expected time: 30–45 minutes."""
import torch


def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation; returns (advantages, returns), each (N, C).

    PPO learns a critic V(s_t) per token and estimates advantages by GAE (Schulman et al. 2016,
    arXiv 1506.02438, eq. 16), a backward recursion over each sequence's real tokens:
        δ_t = r_t + γ · V_{t'} − V_t          t' = the next real token; V_{t'} = 0 after the last
        A_t = δ_t + γ λ · A_{t'}               A_{t'} = 0 after the last
        returns_t = A_t + V_t                   (the critic's regression target, TRL's convention)
    λ = 1 gives the Monte-Carlo advantage (reward-to-go − V); λ = 0 the one-step TD error δ_t.

    Inputs (N, C): rewards (usually 0 except the last real token, which holds the reward model's
    score), values V(s_t), mask (1 for real tokens). Masked tokens get advantage and return 0 and
    change nothing: a masked position between two real ones passes the carry through.

    Hint: loop t from C − 1 down to 0, carrying `next_value` and `next_adv` (each (N,)), updated only
    where mask[:, t] is 1 (torch.where). Vectorise over N, not over t.
    """
    raise NotImplementedError("not done yet")
