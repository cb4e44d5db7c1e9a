"""Exercises — chapter 8, LoRA: the forward pass and the merge. Expected time: 30–45 minutes for both."""
import torch


def lora_forward(x, W, b, A, B, alpha, rslora=False):
    """A LoRA layer's output (..., out) for inputs x (..., in).

    LoRA (Hu et al. 2021, arXiv 2106.09685, eq. 3) freezes a linear layer y = x Wᵀ + b and learns a
    low-rank update ΔW = s · B A:
        y = x Wᵀ + b + s · (x Aᵀ) Bᵀ,    s = α / r   (rsLoRA, arXiv 2312.03732: s = α / √r)
    W (out, in), b (out,) or None, A (r, in), B (out, r); the rank r is A.shape[0].
    x may have any number of leading dimensions (N, T, in) or just (in,).

    Hints: compute x Aᵀ first ((..., r), cheap) rather than forming B A ((out, in), dear);
    torch.nn.functional.linear(x, W, b) is x Wᵀ + b. With B = 0 (LoRA's initialisation) the output
    must be exactly the base layer's.
    """
    raise NotImplementedError("not done yet")


def lora_merge(W, A, B, alpha, rslora=False):
    """The merged weight (out, in): W + s · B A, so that one plain linear layer computes the LoRA layer.

    After training, merging removes the adapter's cost at inference (Hu et al. 2021 §4.1:
    "no additional inference latency"). Return a new tensor; do not modify W in place.
    s as in lora_forward. Then F.linear(x, lora_merge(W, A, B, α), b) ≈ lora_forward(x, W, b, A, B, α).
    """
    raise NotImplementedError("not done yet")
