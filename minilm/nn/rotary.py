"""Rotary position embedding (RoPE): positions enter attention as rotations of q and k.

Each head's dims come in pairs (i, i + D/2) (Hugging Face's rotate-half layout); pair i
of the token at position p is rotated by the angle p * inv_freq[i], with
inv_freq[i] = theta ** (-2i / D). The score q_m . k_n then depends on m - n only.

Frequency scalings for longer contexts, as the checkpoints' configs name them:
  linear  every inv_freq divided by `factor` (positions interpolated);
  llama3  Llama 3.1's: slow-turning pairs (wavelength > original context / low_freq_factor)
          divided by `factor`, fast ones (wavelength < original context / high_freq_factor)
          kept, and the ones between blended smoothly.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor
from .module import Module

ROPE_TYPES = ("default", "linear", "llama3")


def rope_inverse_frequencies(head_dim: int, theta: float = 10000.0, scaling: dict | None = None) -> np.ndarray:
    """inv_freq [D/2] (float64) for a head of `head_dim` dims, with an optional scaling
    dict as Hugging Face configs write it ({"rope_type": "llama3", "factor": ...})."""
    if head_dim % 2:
        raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # [D/2]
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope scaling type {rope_type!r} is not supported by minilm (supported: {ROPE_TYPES})")
    if rope_type == "default":
        return inv_freq
    factor = _field(scaling, "factor")
    if rope_type == "linear":
        return inv_freq / factor
    low, high = _field(scaling, "low_freq_factor"), _field(scaling, "high_freq_factor")
    original = _field(scaling, "original_max_position_embeddings")
    wavelength = 2 * math.pi / inv_freq
    scaled = np.where(wavelength > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelength - low) / (high - low)  # 0 at the slow edge, 1 at the fast edge
    between = (wavelength >= original / high) & (wavelength <= original / low)
    return np.where(between, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


def _field(scaling: dict, name: str) -> float:
    if name not in scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        raise ValueError(f"rope scaling {kind!r} needs {name!r}; got {scaling}")
    return float(scaling[name])


class RotaryEmbedding(Module):
    """The cos and sin of every (position, pair) angle, for F.apply_rotary.

    forward(position_ids [B or 1, T], dtype) -> (cos, sin), arrays [B or 1, 1, T, D/2] that
    broadcast over the heads of q, k [B, H, T, D]. The angles are computed in float64
    (positions times frequencies lose digits in float32 at long contexts) and cast to dtype.
    No parameters: the frequencies are fixed by the config (or given, e.g. by a GGUF file).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling: dict | None = None,
                 inv_freq: np.ndarray | None = None):
        super().__init__()
        self.head_dim = head_dim
        self.inv_freq = rope_inverse_frequencies(head_dim, theta, scaling) if inv_freq is None else \
            np.asarray(inv_freq, dtype=np.float64)
        if self.inv_freq.shape != (head_dim // 2,):
            raise ValueError(f"RotaryEmbedding: inv_freq has shape {self.inv_freq.shape}, expected ({head_dim // 2},)")

    def forward(self, position_ids, dtype, xp=np):
        positions = position_ids.data if isinstance(position_ids, Tensor) else position_ids
        positions = np.asarray(positions.get() if hasattr(positions, "get") else positions, dtype=np.float64)
        angles = positions[:, None, :, None] * self.inv_freq  # [B, 1, T, 1] * [D/2] -> [B, 1, T, D/2]
        return xp.asarray(np.cos(angles).astype(dtype)), xp.asarray(np.sin(angles).astype(dtype))

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}"
