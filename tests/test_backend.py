"""Backend selection, devices, seeding, dtypes and ml.save / ml.load."""

import importlib.util

import numpy as np
import pytest

import minilm as ml
from minilm.backend import BackendError

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def _gpu_available() -> bool:
    if not HAS_CUPY:
        return False
    try:
        ml.get_device("cuda")
        return True
    except BackendError:
        return False


@pytest.mark.skipif(HAS_CUPY, reason="checks the message shown where CuPy is not installed")
def test_asking_for_cupy_without_cupy_says_so():
    with pytest.raises(BackendError, match="CuPy, which is not installed"):
        ml.get_device("cupy")


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(BackendError, match="unknown device or backend 'tpu'"):
        ml.set_backend("tpu")


@pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_tensors_move_between_devices_and_mixing_them_names_both():
    x = ml.tensor([1.0, 2.0], device="cpu", requires_grad=True)
    g = x.to("cuda")
    assert g.device.name == "cuda"
    with pytest.raises(BackendError, match="cpu and cuda"):
        x + ml.tensor([1.0, 2.0], device="cuda")
    (g * g).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    assert x.grad.device.name == "cpu"


def test_manual_seed_makes_random_tensors_repeatable():
    ml.manual_seed(123)
    a = ml.randn(3, 4).numpy()
    ml.manual_seed(123)
    b = ml.randn(3, 4).numpy()
    np.testing.assert_array_equal(a, b)


def test_default_dtype_is_float32_and_float64_on_request():
    assert ml.randn(2).dtype == np.float32
    ml.set_default_dtype(ml.float64)
    try:
        assert ml.tensor([1.0]).dtype == np.float64
        assert ml.zeros(2).dtype == np.float64
    finally:
        ml.set_default_dtype(ml.float32)
    with pytest.raises(TypeError):
        ml.set_default_dtype(ml.int64)


def test_save_and_load_round_trip(tmp_path):
    tensors = {"w": ml.randn(3, 4), "ids": ml.tensor([1, 2, 3]), "scalar": ml.tensor(2.5, dtype=ml.float64)}
    path = tmp_path / "weights.safetensors"
    ml.save(tensors, path, metadata={"format": "minilm"})
    loaded = ml.load(path)
    assert set(loaded) == set(tensors)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype
        np.testing.assert_array_equal(loaded[name].numpy(), t.numpy())


@pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_gpu_memory_pool_does_not_grow_over_a_training_run():
    from minilm import optim
    from minilm.models import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=64, n_layer=2, n_head=2, n_embd=32, block_size=32)).to("cuda")
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    ids = np.random.default_rng(0).integers(0, 64, (4, 33))
    used = []
    for _ in range(30):
        _, loss = model(ids[:, :-1], targets=ids[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        del loss
        used.append(ml.memory_info("cuda")["used_bytes"])
    assert used[-1] <= used[5], f"pool use grew from {used[5]} to {used[-1]} bytes"


@pytest.mark.parametrize("indices", [
    np.array([[3, 1, 3], [0, 3, 1]]),  # repeats: summed, in any position
    np.array([4, 2, 0]),  # each row once
    np.array([2, 2, 2, 2]),  # one row, many times
])
def test_scatter_add_sums_repeated_rows_like_add_at(indices):
    """The fast path (plain += for rows picked once, a one-hot product for repeats) must give
    np.add.at's sums, into a target that already holds values, on the default device."""
    rng, device = np.random.default_rng(0), ml.default_device()
    target = rng.standard_normal((5, 2, 3)).astype(np.float32)
    values = rng.standard_normal(indices.shape + (2, 3)).astype(np.float32)
    expected = target.copy()
    np.add.at(expected, indices, values)
    on_device = device.asarray(target)
    device.scatter_add(on_device, device.asarray(indices), device.asarray(values))
    np.testing.assert_allclose(device.to_host(on_device), expected, rtol=1e-6, atol=1e-6)


def test_scatter_add_gives_the_same_bits_on_every_run():
    """An embedding backward with many repeated tokens: no atomic adds whose order (and so
    whose rounding) could change between runs (GPU), so a resumed run stays bit-identical."""
    rng, device = np.random.default_rng(1), ml.default_device()
    indices = device.asarray(rng.integers(0, 50, size=(16, 64)))
    values = device.asarray(rng.standard_normal((16, 64, 32)).astype(np.float32))
    runs = []
    for _ in range(3):
        target = device.xp.zeros((50, 32), dtype=np.float32)
        device.scatter_add(target, indices, values)
        runs.append(device.to_host(target))
    np.testing.assert_array_equal(runs[1], runs[0])
    np.testing.assert_array_equal(runs[2], runs[0])


def test_scatter_add_out_of_range_index_is_an_error():
    target = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(IndexError):
        ml.get_device("cpu").scatter_add(target, np.array([0, 3]), np.ones((2, 2), dtype=np.float32))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_keep_mask_drops_each_entry_with_probability_p(p):
    device = ml.get_device("cpu")
    mask = device.keep_mask((301, 333), p)  # an odd count: half of one 64-bit draw unused
    assert mask.shape == (301, 333) and mask.dtype == bool
    assert abs((1.0 - mask.mean()) - p) < 0.005
    if p == 0.0:
        assert mask.all()
