"""GPT-2 initialisation, owned by the GPT model (no reference library needed)."""

import math

import pytest

from minilm import nn
from minilm.models.gpt import gpt2_init_


def test_gpt2_init_scales_residual_projections():
    n_layer = 8
    model = nn.ModuleList([nn.TransformerBlock(64, 4, causal=True) for _ in range(n_layer)])
    model.append(nn.Embedding(300, 64, padding_idx=0))
    gpt2_init_(model, n_layer)
    stds = {name: p.numpy().std() for name, p in model.named_parameters()}
    assert stds["0.attn.in_proj.weight"] == pytest.approx(0.02, rel=0.05)
    assert stds["0.mlp.fc.weight"] == pytest.approx(0.02, rel=0.05)
    assert stds["8.weight"] == pytest.approx(0.02, rel=0.05)
    for name in ("attn.out_proj.weight", "mlp.proj.weight"):
        assert stds[f"3.{name}"] == pytest.approx(0.02 / math.sqrt(2 * n_layer), rel=0.1)
    assert not model[0].attn.in_proj.bias.numpy().any() and (model[0].ln_1.weight.numpy() == 1).all()
    assert not model[8].weight.numpy()[0].any()  # the padding row stays zero
