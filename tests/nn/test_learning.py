"""End to end: small seeded models learn small patterns with the layers and optimizers.

Each test trains for a few hundred steps (a few seconds on 2 CPU cores) and asserts that
the loss falls from about log(V) (guessing) to well below a stated threshold.
"""

import math

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm import nn, optim
from minilm.models.gpt import gpt2_init_


def on_device(array):
    """NumPy data as a tensor on the backend under test (ml.tensor keeps arrays where they are)."""
    return ml.tensor(array, device=ml.default_device())


class CharLSTM(nn.Module):
    def __init__(self, vocab: int, width: int = 16, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))  # [B, T] -> [B, T, C] -> [B, T, H]
        return self.head(out)  # [B, T, V]


class TinyGPT(nn.Module):
    def __init__(self, vocab: int, length: int, width: int = 32, layers: int = 2, norm_first: bool = True):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(length, width)
        self.blocks = nn.ModuleList([nn.TransformerBlock(width, 2, causal=True, norm_first=norm_first,
                                                         activation="gelu_tanh") for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        gpt2_init_(self, layers)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(ml.arange(ids.shape[1]))  # [B, T, C]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # [B, T, V]


def test_char_lstm_learns_a_repeating_text():
    # After "hello " comes "w" or "m" in turn: predicting it needs memory of the previous line.
    text = "hello world, hello minilm. " * 20
    chars = sorted(set(text))
    vocab, data = len(chars), np.array([chars.index(c) for c in text])
    model = CharLSTM(vocab)
    opt = optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(150):
        starts = rng.integers(0, len(data) - 33, 16)
        x = np.stack([data[s : s + 32] for s in starts])
        y = np.stack([data[s + 1 : s + 33] for s in starts])
        loss = F.cross_entropy(model(on_device(x)).reshape(-1, vocab), on_device(y.reshape(-1)))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(vocab)) < 0.3
    assert np.mean(losses[-10:]) < 0.1, f"final loss {np.mean(losses[-10:]):.3f}"


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
def test_tiny_transformer_learns_to_copy(norm_first):
    # [d1..d5, SEP, d1..d5]: the second half is predictable only by attending back.
    digits, n, steps = 8, 5, 300
    model = TinyGPT(digits + 1, 2 * n, norm_first=norm_first)
    opt = optim.AdamW(optim.param_groups_no_decay(model, 0.01), lr=3e-3)
    # Post-LN (BERT) needs a longer warmup than pre-LN to train reliably: 50 steps here.
    schedule = optim.lr_scheduler.WarmupCosineLR(opt, warmup_steps=50, total_steps=steps, min_ratio=0.1)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        d = rng.integers(0, digits, (32, n))
        seq = np.concatenate([d, np.full((32, 1), digits), d], axis=1)
        x, y = seq[:, :-1], seq[:, 1:].copy()
        y[:, :n] = -100  # score only the copied half
        loss = F.cross_entropy(model(on_device(x)).reshape(-1, digits + 1), on_device(y.reshape(-1)))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(digits + 1)) < 0.3
    assert np.mean(losses[-10:]) < 0.05, f"final loss {np.mean(losses[-10:]):.3f}"
