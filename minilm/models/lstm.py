"""The classic neural language model: embedding -> LSTM -> linear (Mikolov / Zaremba style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import functional as F
from .. import nn, ops
from ..autograd import Tensor, data_of
from ..generation import GenerationMixin, last_logits
from .output import ModelOutput


@dataclass
class LSTMConfig:
    vocab_size: int
    n_embd: int = 256
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False  # needs n_embd == hidden_size

    def __post_init__(self):
        if self.tie_weights and self.n_embd != self.hidden_size:
            raise ValueError(f"LSTMConfig: tie_weights needs n_embd == hidden_size, "
                             f"got {self.n_embd} and {self.hidden_size}")

    def to_dict(self) -> dict:
        return asdict(self)


class LSTMLanguageModel(nn.Module, GenerationMixin):
    """ids [B, T] -> logits [B, T, vocab]; the recurrent state can be carried across calls."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.lstm = nn.LSTM(c.n_embd, c.hidden_size, num_layers=c.num_layers, batch_first=True,
                            dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.head = None if c.tie_weights else nn.Linear(c.hidden_size, c.vocab_size)
        weight = self.embedding.weight
        self.head_bias = (nn.Parameter(weight.device.xp.zeros(c.vocab_size, dtype=weight.dtype)) if c.tie_weights
                          else None)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def forward(self, ids, targets=None, state=None, return_state: bool = False):
        """ids [B, T] -> a ModelOutput: logits [B, T, V], the loss with `targets`, the (h, c)
        state with `return_state`. `state` continues from an earlier call (truncated BPTT,
        generation)."""
        device = self.embedding.weight.device
        ids = data_of(ids, device)
        if ids.ndim != 2:
            raise ValueError(f"LSTMLanguageModel expects token ids of shape [B, T], got {ids.shape}")
        x = self.drop(self.embedding(ids))  # [B, T, E]
        out, state = self.lstm(x, state)  # [B, T, H], ((L, B, H), (L, B, H))
        out = self.drop(out)
        if self.head is not None:
            logits = self.head(out)  # [B, T, V]
        else:
            logits = F.linear(out, self.embedding.weight, self.head_bias)
        loss = None
        if targets is not None:
            flat_targets = data_of(targets, device).reshape(-1)  # [B * T]
            loss = F.cross_entropy(ops.reshape(logits, (-1, logits.shape[-1])), flat_targets)
        return ModelOutput(logits, loss, state=state if return_state else None)

    def decoder(self, capacity: int, use_cache: bool = True) -> "LSTMDecoder":
        """The generation loops' view of this model: its (h, c) state is the whole cache."""
        return LSTMDecoder(self)


class LSTMDecoder:
    """Decoder state for generation: the recurrent state carries every earlier token."""

    def __init__(self, model: LSTMLanguageModel):
        self.model, self.state = model, None

    def start(self, ids: np.ndarray, attention_mask) -> np.ndarray:
        if attention_mask is not None and not np.all(attention_mask):
            raise ValueError("generate: the LSTM language model takes unpadded prompts (one length per batch)")
        out = self.model(ids, state=None, return_state=True)
        self.state = out.state
        return last_logits(out.logits)

    def advance(self, tokens: np.ndarray, attention_mask) -> np.ndarray:
        out = self.model(tokens[:, None], state=self.state, return_state=True)
        self.state = out.state
        return last_logits(out.logits)

    def reorder(self, rows: np.ndarray) -> None:
        h, c = self.state
        xp_rows = h.device.xp.asarray(rows)
        self.state = (Tensor(h.data[:, xp_rows]), Tensor(c.data[:, xp_rows]))
