"""Mixed precision: autocast's dtype rules, float32 master gradients, loss scaling that
rescues gradients float16 would flush to zero, dynamic scale updates, and training that
tracks float32 training.

On the CPU NumPy emulates float16, so these tests use tiny models; the numbers are the
same float16 arithmetic a GPU does (IEEE half, float32 accumulation in matmuls).
"""

import numpy as np
import pytest

import minilm as ml
from minilm import amp, nn, optim
from minilm import functional as F
from minilm.models import GPT, GPTConfig


def tiny_gpt(seed=0, **overrides):
    ml.manual_seed(seed)
    return GPT(GPTConfig(**{**dict(vocab_size=32, n_layer=2, n_head=2, n_embd=32, block_size=16), **overrides}))


def copy_batch(rng, batch=8, length=16, vocab=32):
    """Counting sequences (each token is the previous plus 1, mod vocab) from random starts:
    a pattern a tiny model learns in a few dozen steps."""
    ids = (rng.integers(0, vocab, (batch, 1)) + np.arange(length + 1)) % vocab
    return ids[:, :-1], ids[:, 1:]


def test_autocast_runs_gemms_in_float16_and_sums_and_norms_in_float32():
    x = ml.tensor(np.random.default_rng(0).standard_normal((4, 8)), dtype=ml.float32, requires_grad=True)
    w = nn.Parameter(ml.tensor(np.random.default_rng(1).standard_normal((6, 8)), dtype=ml.float32))
    square = nn.Parameter(ml.tensor(np.eye(8), dtype=ml.float32))
    with amp.autocast():
        h = F.linear(x, w)
        assert h.dtype == np.float16
        assert (x @ w.T).dtype == np.float16
        assert F.softmax(h).dtype == np.float32
        assert F.layer_norm(h).dtype == np.float32
        assert F.cross_entropy(h, np.array([0, 1, 2, 3])).dtype == np.float32
        assert h.sum().dtype == np.float32
        assert F.gelu(h).dtype == np.float16  # elementwise ops keep what they are given
        assert (x + F.linear(x, square)).dtype == np.float32  # promotion: the residual stream stays float32
        with amp.autocast(enabled=False):
            assert F.linear(x, w).dtype == np.float32
    assert F.linear(x, w).dtype == np.float32  # and off again outside
    assert not amp.is_autocast_enabled()


def test_gradients_reach_the_float32_master_weights_as_float32_and_close_to_float32_ones():
    model = tiny_gpt()
    ids, targets = copy_batch(np.random.default_rng(0))
    _, loss = model(ids, targets=targets)
    loss.backward()
    reference = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    model.zero_grad()
    with amp.autocast():
        _, half_loss = model(ids, targets=targets)
    half_loss.backward()
    assert half_loss.dtype == np.float32
    assert abs(half_loss.item() - loss.item()) < 1e-2 * loss.item()
    for name, p in model.named_parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32, name
        error = np.linalg.norm(p.grad.numpy() - reference[name]) / np.linalg.norm(reference[name])
        assert error < 2e-2, f"{name}: relative gradient error {error:.2e} under float16"


def test_padding_masks_stay_finite_under_autocast():
    # GPT masks padded keys with float32's most negative number; in float16 that is -inf,
    # and a row of -inf would make NaN. Attention keeps its scores in float32 for this.
    model = tiny_gpt()
    ids = np.random.default_rng(0).integers(0, 32, (2, 10))
    mask = np.ones((2, 10), dtype=np.int64)
    mask[0, :4] = 0  # left padding
    reference = model(ids, attention_mask=mask).logits.numpy()
    with amp.autocast():
        logits = model(ids, attention_mask=mask).logits.numpy()
    assert np.isfinite(logits).all()
    real = mask.astype(bool)
    np.testing.assert_allclose(logits[real], reference[real], atol=3e-2)


def _linear_problem(loss_factor):
    """A linear classifier whose loss is multiplied by a small factor: its gradients are
    then below float16's smallest number (about 6e-8)."""
    rng = np.random.default_rng(0)
    x = ml.tensor(rng.standard_normal((64, 16)))
    y = rng.integers(0, 4, 64)
    w = nn.Parameter(ml.tensor(rng.standard_normal((4, 16)) * 0.1))

    def loss_fn():
        return F.cross_entropy(F.linear(x, w), y) * loss_factor

    return w, loss_fn


def test_loss_scaling_rescues_gradients_that_float16_flushes_to_zero():
    w, loss_fn = _linear_problem(1e-6)
    loss_fn().backward()
    reference = w.grad.numpy().copy()
    assert np.abs(reference).max() < 6e-8 * 64  # the per-row gradients are subnormal in float16

    w.grad = None
    with amp.autocast():
        loss = loss_fn()
    loss.backward()
    unscaled_error = np.linalg.norm(w.grad.numpy() - reference) / np.linalg.norm(reference)
    assert unscaled_error > 0.9, "without loss scaling float16 should lose these gradients"

    w.grad = None
    scaler = amp.GradScaler()
    with amp.autocast():
        loss = loss_fn()
    scaler.scale(loss).backward()
    scaler.unscale_(optim.SGD([w], lr=0.1))
    scaled_error = np.linalg.norm(w.grad.numpy() - reference) / np.linalg.norm(reference)
    assert scaled_error < 1e-2


@pytest.mark.parametrize("flat", [False, True])
def test_an_overflow_skips_the_step_and_backs_off_then_the_scale_grows_again(flat):
    w = nn.Parameter(ml.tensor(np.ones(3, dtype=np.float32)))
    optimizer = optim.AdamW([w], lr=0.1, flat=flat)
    scaler = amp.GradScaler(init_scale=1024.0, growth_interval=2)

    w.grad = ml.tensor(np.array([1.0, np.inf, 0.0], dtype=np.float32))
    assert scaler.step(optimizer) is None
    scaler.update()
    np.testing.assert_array_equal(w.numpy(), np.ones(3))  # the step was skipped
    assert scaler.get_scale() == 512.0 and scaler.skipped_steps == 1
    optimizer.zero_grad()

    for expected_scale in (512.0, 1024.0, 1024.0, 2048.0):  # growth after 2 clean steps
        w.grad = ml.tensor(np.full(3, 0.5 * scaler.get_scale(), dtype=np.float32))  # "scaled" gradients
        scaler.unscale_(optimizer)
        np.testing.assert_allclose(w.grad.numpy(), 0.5)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        assert scaler.get_scale() == expected_scale
    assert not np.allclose(w.numpy(), 1.0)


def test_scaler_misuse_is_reported():
    w = nn.Parameter(ml.tensor(np.ones(2, dtype=np.float32)))
    optimizer = optim.SGD([w], lr=0.1)
    scaler = amp.GradScaler()
    w.grad = ml.tensor(np.ones(2, dtype=np.float32))
    scaler.unscale_(optimizer)
    with pytest.raises(RuntimeError, match="already called"):
        scaler.unscale_(optimizer)
    with pytest.raises(RuntimeError, match="without a step"):
        amp.GradScaler().update()
    with pytest.raises(ValueError, match="init_scale"):
        amp.GradScaler(init_scale=0.0)
    with pytest.raises(ValueError, match="backoff_factor"):
        amp.GradScaler(backoff_factor=1.5)
    with pytest.raises(ValueError, match="float16"):
        with amp.autocast(dtype="float64"):
            pass


def test_a_disabled_scaler_is_plain_float32_training():
    w = nn.Parameter(ml.tensor(np.ones(2, dtype=np.float32)))
    optimizer = optim.SGD([w], lr=0.5)
    scaler = amp.GradScaler(enabled=False)
    loss = (w * w).sum()
    assert scaler.scale(loss) is loss
    loss.backward()
    scaler.step(optimizer)
    scaler.update()
    np.testing.assert_allclose(w.numpy(), 0.0)  # w - 0.5 * 2w
    assert scaler.get_scale() == 1.0 and scaler.state_dict() == {}


def test_scaler_state_dict_round_trip():
    scaler = amp.GradScaler(init_scale=256.0, growth_interval=7)
    w = nn.Parameter(ml.tensor(np.ones(2, dtype=np.float32)))
    optimizer = optim.SGD([w], lr=0.1)
    w.grad = ml.tensor(np.ones(2, dtype=np.float32))
    scaler.step(optimizer)
    scaler.update()
    restored = amp.GradScaler()
    restored.load_state_dict(scaler.state_dict())
    assert restored.state_dict() == scaler.state_dict()
    assert restored.get_scale() == 256.0 and restored.growth_interval == 7


def test_mixed_precision_training_tracks_float32_training():
    losses = {}
    for precision in ("fp32", "fp16"):
        model = tiny_gpt()
        optimizer = optim.AdamW(model.parameters(), lr=3e-3, flat=True)
        scaler = amp.GradScaler(enabled=precision == "fp16")
        rng = np.random.default_rng(0)
        history = []
        for _ in range(40):
            ids, targets = copy_batch(rng)
            with amp.autocast(enabled=precision == "fp16"):
                _, loss = model(ids, targets=targets)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            history.append(loss.item())
        losses[precision] = history
    fp32, fp16 = np.array(losses["fp32"]), np.array(losses["fp16"])
    assert fp32[-5:].mean() < 0.5 * fp32[:5].mean()  # it learns
    np.testing.assert_allclose(fp16, fp32, rtol=5e-3)  # and float16 follows the same curve (measured 2e-4)
