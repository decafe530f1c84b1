"""Evaluation: sliding-window perplexity of a causal language model."""

from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .autograd import Tensor, no_grad


def perplexity(model, ids, block_size: int, stride: int | None = None, batch_size: int = 8) -> float:
    """exp(mean negative log-likelihood) of `ids` under `model`, scored with sliding windows.

    Each window holds up to `block_size` tokens and moves by `stride` (default: block_size,
    i.e. disjoint windows). Only the tokens new to a window are scored, so every token is
    counted once, and with stride < block_size each one is predicted from at least
    block_size - stride tokens of context (the way Hugging Face evaluates GPT-2).
    `model(ids).logits` must be the logits [B, T, vocab].
    """
    ids = np.asarray(ids.numpy() if isinstance(ids, Tensor) else ids, dtype=np.int64).reshape(-1)
    stride = block_size if stride is None else stride
    if not 0 < stride <= block_size:
        raise ValueError(f"stride must be in (0, block_size={block_size}], got {stride}")
    if ids.size < 2:
        raise ValueError("perplexity needs at least 2 tokens")
    windows = []  # (start, end, first scored target position within the window)
    scored_until = 0  # targets ids[1 .. scored_until] are already counted
    start = 0
    while scored_until < ids.size - 1:
        end = min(start + block_size + 1, ids.size)  # the window's inputs are ids[start:end-1]
        first_new = scored_until - start  # targets before this offset were scored earlier
        windows.append((start, end, max(first_new, 0)))
        scored_until = end - 1
        start += stride
    total_nll, count = 0.0, 0
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with no_grad():
            for group in range(0, len(windows), batch_size):
                for start, end, first in windows[group : group + batch_size]:
                    inputs, targets = ids[start : end - 1], ids[start + 1 : end].copy()
                    targets[:first] = -100
                    logits = model(inputs[None, :]).logits  # [1, T, V]
                    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, reduction="sum")
                    total_nll += float(nll.item())
                    count += int((targets != -100).sum())
    finally:
        if was_training:
            model.train()
    return math.exp(total_nll / count)
