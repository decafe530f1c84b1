"""The Transformer block: attention and an MLP, each wrapped in a residual connection.

Two placements of the layer norms:
  pre-LN (GPT-2, norm_first=True):   x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
  post-LN (BERT, norm_first=False):  x = ln_1(x + attn(x));  x = ln_2(x + mlp(x))
Dropout is applied to each sublayer's output before the residual add (and inside attention
to the probabilities), as GPT-2 and BERT do; the MLP has no inner dropout.
"""

from __future__ import annotations

from .. import functional as F
from ..autograd import Tensor
from .attention import KVCache, MultiHeadAttention
from .layers import GELU, Dropout, LayerNorm, Linear, ReLU
from .module import Module

_ACTIVATIONS = {"gelu": lambda: GELU("none"), "gelu_tanh": lambda: GELU("tanh"), "relu": ReLU}


class MLP(Module):
    """Position-wise feed-forward network: Linear(C, d_ff) -> activation -> Linear(d_ff, C)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        self.fc = Linear(d_model, d_ff, bias=bias)
        self.act = _ACTIVATIONS[activation]()
        self.proj = Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))  # [B, T, C] -> [B, T, d_ff] -> [B, T, C]


class TransformerBlock(Module):
    """One Transformer layer on [B, T, C] (see the module docstring for the two forms).

    causal=True makes every call causal (a GPT decoder block). Parameter names:
    ln_1, attn.in_proj, attn.out_proj, ln_2, mlp.fc, mlp.proj.
    """

    def __init__(self, d_model: int, n_head: int, d_ff: int | None = None, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "gelu", causal: bool = False,
                 layer_norm_eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.norm_first, self.causal = norm_first, causal
        self.ln_1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.attn = MultiHeadAttention(d_model, n_head, dropout=dropout, bias=bias)
        self.ln_2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.mlp = MLP(d_model, 4 * d_model if d_ff is None else d_ff, activation, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, key_padding_mask=None, attn_mask=None, cache: KVCache | None = None,
                need_weights: bool = False, tokens=None):
        """x [B, T, C] -> [B, T, C]; with need_weights, (output, attention weights [B, H, T, S]).

        tokens: a boolean [B, T] mask of the real tokens; x is then packed, [N, C] with N of
        them (MultiHeadAttention's `tokens`). Everything but attention works row by row, so
        padding costs nothing there."""
        weights = None

        def attend(h):
            nonlocal weights
            out, weights = self.attn(h, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                     is_causal=self.causal, cache=cache, need_weights=need_weights,
                                     average_attn_weights=False, tokens=tokens)
            return self.dropout(out)

        if self.norm_first:
            x = x + attend(self.ln_1(x))  # [B, T, C]
            x = x + self.dropout(self.mlp(self.ln_2(x)))
        else:
            x = self.ln_1(x + attend(x))
            x = self.ln_2(x + self.dropout(self.mlp(x)))
        return (x, weights) if need_weights else x

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}, causal={self.causal}"


class SwiGLU(Module):
    """The gated feed-forward network of Llama: down(silu(gate(x)) * up(x)).

    gate and up are one Linear(C, 2 d_ff) (rows [W_gate; W_up]): one GEMM instead of two,
    which matters most in token-by-token decoding where each GEMM is a pass over its weights.
    """

    def __init__(self, d_model: int, d_ff: int, bias: bool = False):
        super().__init__()
        self.d_ff = d_ff
        self.gate_up = Linear(d_model, 2 * d_ff, bias=bias)
        self.down = Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        h = F.swiglu(self.gate_up(x))  # [B, T, C] -> [B, T, 2 d_ff] -> silu(gate) * up [B, T, d_ff]
        return self.down(h)  # [B, T, d_ff] -> [B, T, C]
