"""Exercise — chapter 9, sampling with a KV cache. Expected time: 30–45 minutes."""
import torch


def top_p_filter(logits, top_p):
    """Nucleus (top-p) filtering: logits (n, V) with the tokens outside the nucleus set to −inf.

    Holtzman et al. 2019 (arXiv 1904.09751 §3.1): keep the smallest set of most probable tokens
    whose total probability reaches top_p. As transformers' TopPLogitsWarper: rank tokens by
    probability p = softmax(logits) (descending); keep a token while the mass of the tokens ranked
    above it is < top_p. So the most probable token is always kept, and kept logits are unchanged.
    top_p = 1 keeps every token. Rows are independent.

    Hints: `logits.sort(-1, descending=True)` gives the ranked values and their vocabulary order;
    `probs.cumsum(-1) − probs` is the mass above each ranked token; put the decision back in
    vocabulary order with `.scatter(-1, order, ...)`, then `masked_fill(drop, float("-inf"))`.
    """
    raise NotImplementedError("not done yet")
