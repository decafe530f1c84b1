"""Work split across threads (minilm.parallel) gives the same bits as one thread.

The fused operations that split their elementwise work (GELU, layer norm, cross-entropy) or
their batch (attention) over the cores must not change a single bit with the thread count:
a run's numbers may not depend on the machine it ran on.
"""

import numpy as np
import pytest

import minilm as ml
from minilm import functional as F
from minilm import parallel


def _forward_and_grads(threads: int, monkeypatch, build):
    monkeypatch.setenv("MINILM_NUM_THREADS", str(threads))
    inputs, out = build()
    out.backward(np.random.default_rng(1).standard_normal(out.shape).astype(np.float32))
    return [out.numpy()] + [t.grad.numpy() for t in inputs]


def _tensor(rng, shape):
    return ml.Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)


def _gelu(approximate):
    def build():
        x = _tensor(np.random.default_rng(0), (8, 128, 1024))  # 1M elements: 8 pieces
        return [x], F.gelu(x, approximate=approximate)
    return build


def _layer_norm():
    rng = np.random.default_rng(0)
    x, w, b = _tensor(rng, (16, 128, 512)), _tensor(rng, (512,)), _tensor(rng, (512,))
    return [x, w, b], F.layer_norm(x, w, b)


def _cross_entropy():
    rng = np.random.default_rng(0)
    logits = _tensor(rng, (1024, 1000))
    targets = rng.integers(0, 1000, 1024)
    targets[::7] = -100
    loss = F.cross_entropy(logits, targets, label_smoothing=0.1, reduction="none")
    return [logits], loss


def _attention(mask_kind):
    def build():
        rng = np.random.default_rng(0)
        q, k, v = (_tensor(rng, (8, 4, 96, 32)) for _ in range(3))
        if mask_kind == "causal":
            return [q, k, v], F.scaled_dot_product_attention(q, k, v, is_causal=True)
        padding = np.ones((8, 1, 1, 96), dtype=bool)
        padding[3, ..., 60:] = False  # one padded sequence: its own mask rows
        ml.manual_seed(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=padding, dropout_p=0.1, training=True)
        return [q, k, v], out
    return build


@pytest.mark.parametrize("build", [_gelu("tanh"), _gelu("none"), _layer_norm, _cross_entropy,
                                   _attention("causal"), _attention("padding")],
                         ids=["gelu-tanh", "gelu-exact", "layer-norm", "cross-entropy", "attention-causal",
                              "attention-padding-dropout"])
def test_two_threads_give_the_bits_of_one(build, monkeypatch):
    one = _forward_and_grads(1, monkeypatch, build)
    two = _forward_and_grads(2, monkeypatch, build)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_work_is_really_split_over_threads(monkeypatch):
    """The split happens at these sizes (else the test above would compare one thread with itself)."""
    import threading
    monkeypatch.setenv("MINILM_NUM_THREADS", "2")
    seen = set()
    parallel.in_parallel(4 * parallel.CHUNK, lambda start, stop: seen.add(threading.get_ident()))
    assert len(seen) == 2
    seen.clear()
    parallel.split_evenly(8, lambda start, stop: seen.add(threading.get_ident()))
    assert len(seen) == 2


def test_blas_threads_are_restored_after_a_split(monkeypatch):
    controls = parallel._find_blas_controls()
    if not controls:
        pytest.skip("reason: no OpenBLAS thread control found in this process (NumPy built on another BLAS)")
    before = controls[1]()
    inside = []
    parallel.split_evenly(4, lambda start, stop: inside.append(controls[1]()))
    assert inside and all(count == 1 for count in inside)
    assert controls[1]() == before
