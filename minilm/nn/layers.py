"""Basic layers: Linear, Embedding, LayerNorm, Dropout and the activations.

Parameter names, shapes and default initialisations are PyTorch's, so weights copy across.
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import ops
from ..autograd import Tensor, data_of, get_default_dtype, no_grad
from . import init
from .module import Module, Parameter


def _empty(*shape) -> Parameter:
    """A parameter of the default dtype, to be filled by an init function."""
    from .. import zeros

    return Parameter(zeros(*shape, dtype=get_default_dtype()))


class Linear(Module):
    """y = x W^T + b, with W [out_features, in_features] as PyTorch stores it.

    Initialised as PyTorch: W and b ~ U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features)
        self.register_parameter("bias", _empty(out_features) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"Linear: expected input [..., {self.in_features}], got shape {x.shape}")
        return F.linear(x, self.weight, self.bias)  # [..., in] -> [..., out]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: integer ids [...] -> rows of weight [num_embeddings, embedding_dim].

    Initialised N(0, 1) as PyTorch. `padding_idx`: that row starts at zero and receives no
    gradient from this lookup (the same weight used elsewhere, e.g. tied to an output
    layer, still gets gradients from there).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"Embedding: padding_idx {padding_idx} is out of range for {num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = _empty(num_embeddings, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    def forward(self, ids) -> Tensor:
        out = F.embedding(ids, self.weight)  # [...] -> [..., C]
        if self.padding_idx is not None and out.requires_grad:
            ids_array = data_of(ids, out.device)  # on out's device
            keep = Tensor((ids_array != self.padding_idx)[..., None].astype(out.dtype))  # [..., 1]
            # Dropping the gradient of padded positions here, before it is scattered into
            # the table, leaves the padding row's gradient at exactly zero.
            out.register_hook(lambda grad: grad * keep)
        return out

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class LayerNorm(Module):
    """Normalize the last dimension to zero mean and unit variance, then scale and shift."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        if not isinstance(normalized_shape, int):
            shape = tuple(normalized_shape)
            if len(shape) != 1:
                raise ValueError(f"LayerNorm normalizes over the last dimension only; got normalized_shape {shape}")
            normalized_shape = shape[0]
        self.normalized_shape, self.eps = normalized_shape, eps
        self.register_parameter("weight", _empty(normalized_shape) if elementwise_affine else None)
        self.register_parameter("bias", _empty(normalized_shape) if elementwise_affine and bias else None)
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1:] != (self.normalized_shape,):
            raise ValueError(f"LayerNorm: expected input [..., {self.normalized_shape}], got shape {x.shape}")
        return F.layer_norm(x, self.weight, self.bias, self.eps)  # [..., C] -> [..., C]

    def extra_repr(self) -> str:
        return f"({self.normalized_shape},), eps={self.eps}, elementwise_affine={self.weight is not None}"


class Dropout(Module):
    """Zero each element with probability p while training (inverted dropout); identity in eval()."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GELU(Module):
    """x * Phi(x); approximate='tanh' is the tanh approximation GPT-2 uses."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class RMSNorm(Module):
    """Scale the last dimension to unit root-mean-square, then by a learned weight (Llama's norm).

    No centring and no bias: y = x / sqrt(mean(x^2) + eps) * weight, PyTorch's nn.RMSNorm
    (with eps given; its default of None means the dtype's machine epsilon, as there).
    """

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True):
        super().__init__()
        if not isinstance(normalized_shape, int):
            shape = tuple(normalized_shape)
            if len(shape) != 1:
                raise ValueError(f"RMSNorm normalizes over the last dimension only; got normalized_shape {shape}")
            normalized_shape = shape[0]
        self.normalized_shape, self.eps = normalized_shape, eps
        self.register_parameter("weight", _empty(normalized_shape) if elementwise_affine else None)
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1:] != (self.normalized_shape,):
            raise ValueError(f"RMSNorm: expected input [..., {self.normalized_shape}], got shape {x.shape}")
        eps = float(np.finfo(x.dtype).eps) if self.eps is None else self.eps
        return F.rms_norm(x, self.weight, eps)  # [..., C] -> [..., C]

    def extra_repr(self) -> str:
        return f"({self.normalized_shape},), eps={self.eps}, elementwise_affine={self.weight is not None}"


class SiLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)
