"""Recurrent layers: a tanh RNN and an LSTM, multi-layer, with PyTorch's parameter names.

Per layer l (parameters weight_ih_l{l} [G*H, I], weight_hh_l{l} [G*H, H], bias_ih_l{l},
bias_hh_l{l}; G = 1 for the RNN, 4 for the LSTM with gates in PyTorch's order i, f, g, o):

    RNN:   h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    LSTM:  i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
           c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

Speed: the input projection W_ih x_t + b does not depend on h, so it is computed for many
time steps at once: for the RNN one GEMM of [T*B, I] x [I, G*H] before the time loop, which
then does one small GEMM per step. An LSTM layer is one fused rule (`F.lstm_layer` in
functional.py): the projection is made in pieces of steps on a second thread while the
time loop runs on arrays in buffers made once, backward through time walks them in
reverse, and W_hh's gradient is made piece by piece beside it.
"""

from __future__ import annotations

import math

from .. import functional as F
from .. import ops
from ..autograd import Tensor
from . import init
from .layers import _empty
from .module import Module


class _Recurrent(Module):
    """Shared structure of RNN and LSTM: parameters, input checks, the layer loop."""

    gates = 1  # blocks of H rows in the weights

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"{type(self).__name__}: num_layers must be at least 1, got {num_layers}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        rows = self.gates * hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            setattr(self, f"weight_ih_l{layer}", _empty(rows, layer_input))
            setattr(self, f"weight_hh_l{layer}", _empty(rows, hidden_size))
            if bias:
                setattr(self, f"bias_ih_l{layer}", _empty(rows))
                setattr(self, f"bias_hh_l{layer}", _empty(rows))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), as PyTorch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _check_input(self, x: Tensor) -> Tensor:
        """x as [T, B, I] (time first, the loop's layout)."""
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            layout = "[B, T, I]" if self.batch_first else "[T, B, I]"
            raise ValueError(
                f"{type(self).__name__}: expected input {layout} with I={self.input_size}, got shape {x.shape}")
        return ops.swapaxes(x, 0, 1) if self.batch_first else x

    def _initial_state(self, state, batch: int, x: Tensor, name: str) -> Tensor:
        expected = (self.num_layers, batch, self.hidden_size)
        if state is None:
            return Tensor(x.device.xp.zeros(expected, dtype=x.dtype))
        if state.shape != expected:
            raise ValueError(
                f"{type(self).__name__}: {name} must have shape {expected} [layers, B, H], got {state.shape}")
        return state

    def _bias(self, layer: int) -> Tensor | None:
        """b_ih + b_hh: both are added to every step's pre-activations, so they act as one."""
        return getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}") if self.bias else None

    def _projected(self, x: Tensor, layer: int) -> Tensor:
        """W_ih x_t + b_ih + b_hh for every step t, one GEMM: [T, B, I] -> [T, B, G*H]."""
        return F.linear(x, getattr(self, f"weight_ih_l{layer}"), self._bias(layer))

    def _input_steps(self, x: Tensor, layer: int) -> tuple:
        """The projection cut into its time steps: T x [B, G*H]."""
        return F.unbind(self._projected(x, layer))

    def _between_layers(self, x: Tensor, layer: int) -> Tensor:
        """Dropout on a layer's output when it feeds another layer (never on the last)."""
        if layer < self.num_layers - 1:
            return F.dropout(x, self.dropout, self.training)
        return x

    def _output(self, out: Tensor) -> Tensor:
        return ops.swapaxes(out, 0, 1) if self.batch_first else out  # [T, B, H] -> [B, T, H]

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}")


class RNN(_Recurrent):
    """Elman RNN, h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    forward(x, h0=None) -> (output, h_n)
      x [T, B, I] ([B, T, I] if batch_first); h0 [num_layers, B, H] (zeros if None)
      output: the last layer's h_t for every t, [T, B, H] ([B, T, H] if batch_first)
      h_n: every layer's final hidden state, [num_layers, B, H]
    """

    gates = 1

    def forward(self, x: Tensor, h0: Tensor | None = None):
        x = self._check_input(x)
        h0 = self._initial_state(h0, x.shape[1], x, "h0")
        final = []
        for layer in range(self.num_layers):
            w_hh_t = ops.swapaxes(getattr(self, f"weight_hh_l{layer}"), 0, 1)  # [H, H], transposed once
            h = h0[layer]  # [B, H]
            steps = []
            for projected in self._input_steps(x, layer):
                h = ops.tanh(projected + h @ w_hh_t)  # [B, H]
                steps.append(h)
            final.append(h)
            x = self._between_layers(ops.stack(steps, axis=0), layer)  # T x [B, H] -> [T, B, H]
        return self._output(x), ops.stack(final, axis=0)


class LSTM(_Recurrent):
    """Long short-term memory, gates i, f, g, o in PyTorch's order.

    forward(x, hx=None) -> (output, (h_n, c_n))
      x [T, B, I] ([B, T, I] if batch_first); hx = (h0, c0), each [num_layers, B, H]
      output [T, B, H] ([B, T, H] if batch_first); h_n, c_n [num_layers, B, H]
    """

    gates = 4

    def forward(self, x: Tensor, hx: tuple | None = None):
        x = self._check_input(x)
        batch = x.shape[1]
        h0, c0 = hx if hx is not None else (None, None)
        h0 = self._initial_state(h0, batch, x, "h0")
        c0 = self._initial_state(c0, batch, x, "c0")
        final_h, final_c = [], []
        for layer in range(self.num_layers):
            # the input projection, the time loop and their backward run inside one fused rule
            out, h, c = F.lstm_layer(x, getattr(self, f"weight_ih_l{layer}"), self._bias(layer),
                                     getattr(self, f"weight_hh_l{layer}"), h0[layer], c0[layer])  # [T, B, H]
            final_h.append(h)  # [B, H]
            final_c.append(c)
            x = self._between_layers(out, layer)  # [T, B, H]
        return self._output(x), (ops.stack(final_h, axis=0), ops.stack(final_c, axis=0))
