"""GPT against transformers' GPT-2 on weights large enough that the network is far from
linear: every GELU, softmax and layer norm works in its curved range, so a wrong
nonlinearity (the exact GELU for GPT-2's tanh form, say) moves the logits by far more than
float32 rounding, and the tolerance here is near float32 precision."""

import numpy as np
import pytest

import minilm as ml
from minilm.models import GPT

from ..helpers import oracle

torch = oracle("torch", reason="PyTorch runs the reference GPT-2")
transformers = oracle("transformers", reason="transformers provides the reference GPT-2")

VOCAB, WIDTH = 97, 32


def _reference(activation="gelu_new"):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=WIDTH, n_layer=3, n_head=4,
                                     activation_function=activation, bos_token_id=0, eos_token_id=0,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.3 * noise)
            elif "wte" in name or "wpe" in name:
                p.copy_(noise)
            else:  # [in, out] projections: pre-activations of std ~2 after a layer norm
                p.copy_(noise * (2.0 / WIDTH**0.5))
    return model


@pytest.fixture(scope="module")
def scaled_gpt2(tmp_path_factory):
    model = _reference()
    folder = tmp_path_factory.mktemp("gpt2-scaled")
    model.save_pretrained(folder)
    return folder, model


def _ids():
    return np.random.default_rng(0).integers(0, VOCAB, (2, 24))


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.double().numpy()


def test_logits_equal_transformers_far_from_linear(scaled_gpt2):
    folder, reference = scaled_gpt2
    ids = _ids()
    expected = _logits(reference, ids)
    with ml.no_grad():
        out = GPT.from_pretrained(folder)(ids)
    got = getattr(out, "logits", out).numpy().astype(np.float64)
    scale = np.abs(expected).max()
    error = np.abs(got - expected).max() / scale
    # The test must be able to see a wrong nonlinearity: transformers' own GPT-2 with the
    # exact GELU instead of the tanh form differs from the reference by this much...
    exact_gelu = _reference("gelu")
    exact_gelu.load_state_dict(reference.state_dict())
    nonlinearity_gap = np.abs(_logits(exact_gelu, ids) - expected).max() / scale
    tolerance = 5e-6  # ~40 float32 epsilons (1.2e-7) of the largest logit; seen: 9e-7
    assert nonlinearity_gap > 20 * tolerance, nonlinearity_gap  # seen: 2.3e-4
    # ...while minilm agrees to near float32 precision.
    assert error < tolerance, (error, nonlinearity_gap)
