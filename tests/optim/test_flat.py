"""Adam/AdamW with flat=True: all parameters, gradients and moments in one buffer each.

The flat update must give the very same numbers as the per-parameter one (bit for bit: the
same elementwise operations, only run over cache-sized chunks), keep the model's weights as
views into its buffer whatever other code assigns, and share checkpoints with flat=False.
"""

import numpy as np
import pytest

import minilm as ml
from minilm import optim
from minilm.models import GPT, GPTConfig


def shares_memory(a, b) -> bool:
    return bool(ml.default_device().xp.shares_memory(a, b))  # NumPy or CuPy arrays


def tiny_gpt(seed=0):
    ml.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=16, block_size=16))


def batch(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 50, size=(2, 12))
    return ids, np.roll(ids, -1, axis=1)


def train(model, optimizer, steps, first_seed=0, zero=None):
    losses = []
    for step in range(steps):
        ids, targets = batch(first_seed + step)
        _, loss = model(ids, targets=targets)
        loss.backward()
        optimizer.step()
        (zero or optimizer.zero_grad)()
        losses.append(loss.item())
    return losses


def make_optimizer(model, flat, name="AdamW"):
    groups = optim.param_groups_no_decay(model, weight_decay=0.1)  # two groups: two ranges
    return getattr(optim, name)(groups, lr=3e-3, betas=(0.9, 0.95), flat=flat)


def weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_flat_update_is_bit_identical_to_the_per_parameter_update(name):
    reference, flat_model = tiny_gpt(), tiny_gpt()
    expected = train(reference, make_optimizer(reference, False, name), 8)
    got = train(flat_model, make_optimizer(flat_model, True, name), 8)
    assert got == expected
    for key, value in weights(reference).items():
        np.testing.assert_array_equal(weights(flat_model)[key], value, err_msg=key)


def test_chunked_cpu_update_covers_ranges_longer_than_a_chunk():
    # One parameter of 300,001 elements spans three 131,072-element chunks with a ragged end,
    # shared out over the CPU's threads.
    rng = np.random.default_rng(0)
    start = rng.standard_normal(300_001).astype(np.float32)
    grads = [rng.standard_normal(300_001).astype(np.float32) for _ in range(3)]
    results = []
    for flat in (False, True):
        p = ml.nn.Parameter(ml.tensor(start.copy()))
        optimizer = optim.AdamW([p], lr=0.01, flat=flat)
        for g in grads:
            p.grad = ml.tensor(g.copy())
            optimizer.step()
        results.append(p.numpy())
    np.testing.assert_array_equal(results[1], results[0])
    assert not np.array_equal(results[0], start)


def test_parameters_and_gradients_are_views_into_the_buffers():
    model = tiny_gpt()
    optimizer = make_optimizer(model, True)
    flat = optimizer.flat
    assert flat.size == sum(p.size for p in model.parameters())
    for p in flat.params:
        assert shares_memory(p.data, flat.data)
        assert shares_memory(p.grad.data, flat.grads)
    flat.data[...] = 0.5  # writing the buffer is writing the model
    assert all(np.all(p.numpy() == 0.5) for p in model.parameters())
    ids, targets = batch(0)
    _, loss = model(ids, targets=targets)
    loss.backward()  # accumulates into the views, in place
    assert float(abs(flat.grads).sum()) > 0
    assert all(shares_memory(p.grad.data, flat.grads) for p in model.parameters())


def test_code_that_replaces_grads_or_weights_does_not_leave_the_buffer_stale():
    reference, flat_model = tiny_gpt(), tiny_gpt()
    expected = train(reference, make_optimizer(reference, False), 5)
    optimizer = make_optimizer(flat_model, True)
    # The module's zero_grad sets .grad = None: backward then makes fresh arrays, which the
    # next step must copy into the buffer.
    got = train(flat_model, optimizer, 5, zero=flat_model.zero_grad)
    assert got == expected
    # Loading weights copies them in place (the views survive); assigning .data replaces
    # the array, and the next step copies it in.
    state = weights(reference)
    flat_model.load_state_dict({k: ml.tensor(v) for k, v in state.items()})
    assert all(shares_memory(p.data, optimizer.flat.data) for p in flat_model.parameters())
    first = next(iter(flat_model.parameters()))
    first.data = np.zeros_like(first.data)
    for group in optimizer.param_groups:
        group["lr"] = 0.0  # a step that changes nothing: the buffer must now hold the zeros
    optimizer.step()
    assert shares_memory(first.data, optimizer.flat.data)
    assert np.all(first.numpy() == 0.0)
    index = next(i for i, p in enumerate(optimizer.flat.params) if p is first)
    assert not optimizer.flat.view(optimizer.flat.data, index).any()


def test_checkpoints_move_between_flat_and_per_parameter_optimizers():
    a, b, c = tiny_gpt(), tiny_gpt(), tiny_gpt()
    per_parameter = make_optimizer(a, False)
    train(a, per_parameter, 4)
    state = per_parameter.state_dict()
    for model in (b, c):
        model.load_state_dict(a.state_dict())
    resumed_flat, resumed_plain = make_optimizer(b, True), make_optimizer(c, False)
    resumed_flat.load_state_dict(state)
    resumed_plain.load_state_dict(state)
    assert train(b, resumed_flat, 4, first_seed=4) == train(c, resumed_plain, 4, first_seed=4)
    # ... and back: the flat optimizer's state dict holds per-parameter copies.
    saved = resumed_flat.state_dict()
    assert saved["state"][0]["step"] == 8
    assert not shares_memory(saved["state"][0]["exp_avg"].data, resumed_flat._flat_m)
    d = tiny_gpt()
    d.load_state_dict(b.state_dict())
    again = make_optimizer(d, False)
    again.load_state_dict(saved)
    assert train(d, again, 2, first_seed=8) == train(b, resumed_flat, 2, first_seed=8)


def test_parameters_with_different_step_counts_keep_their_own_bias_correction():
    # A per-parameter run in which one parameter missed the first step: its step count is
    # one behind. The flat optimizer must carry on with both counts, as flat=False does.
    results = []
    for flat in (False, True):
        ml.manual_seed(0)
        w = ml.nn.Parameter(ml.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3)))
        b = ml.nn.Parameter(ml.tensor(np.ones(3, dtype=np.float32)))
        warmup = optim.AdamW([w, b], lr=0.1)
        w.grad = ml.tensor(np.full((2, 3), 0.5, dtype=np.float32))
        warmup.step()  # b has no gradient: skipped, its step count stays 0
        optimizer = optim.AdamW([w, b], lr=0.1, flat=flat)
        optimizer.load_state_dict(warmup.state_dict())
        for step in range(3):
            w.grad = ml.tensor(np.full((2, 3), 0.1 * step - 0.2, dtype=np.float32))
            b.grad = ml.tensor(np.full(3, 0.3 - 0.1 * step, dtype=np.float32))
            optimizer.step()
        results.append((w.numpy().copy(), b.numpy().copy(), optimizer.state[w]["step"], optimizer.state[b]["step"]))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])
    assert results[1][2:] == results[0][2:] == (4, 3)


def test_a_parameter_without_gradient_is_stepped_with_a_zero_gradient():
    w = ml.nn.Parameter(ml.tensor(np.ones(4, dtype=np.float32)))
    optimizer = optim.AdamW([w], lr=0.1, weight_decay=0.5, flat=True)
    w.grad = None
    optimizer.step()
    np.testing.assert_allclose(w.numpy(), 1 - 0.1 * 0.5)  # only the decoupled weight decay


def test_flat_needs_one_dtype_and_says_which_parameters_differ():
    a = ml.nn.Parameter(ml.tensor(np.ones(3, dtype=np.float32)))
    b = ml.nn.Parameter(ml.tensor(np.ones((2, 2), dtype=np.float64)))
    with pytest.raises(ValueError, match=r"one dtype.*\(3,\) \(float32.*\(2, 2\) \(float64"):
        optim.AdamW([a, b], flat=True)
