"""minilm's own threads (minilm.parallel): blocks cover the work once, GEMMs split exactly, and
training gives bit for bit the same numbers on one thread and on several."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from minilm import parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, **env) -> str:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS",
                                "MINILM_NUM_THREADS", "MINILM_THREADED_GEMM")}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=environment, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("size, grain, align", [(1000, 1, 1), (1000, 100, 16), (37, 5, 16), (7, 100, 1), (0, 1, 1)])
def test_blocks_cover_the_range_once(monkeypatch, size, grain, align):
    monkeypatch.setenv("MINILM_NUM_THREADS", "3")
    seen, lock = [], threading.Lock()

    def work(start, stop):
        with lock:
            seen.append((start, stop))

    parallel.over_blocks(size, work, grain=grain, align=align)
    covered = sorted(i for start, stop in seen for i in range(start, stop))
    assert covered == list(range(size))
    assert len(seen) <= max(1, min(3, size // grain))
    assert all(start % align == 0 for start, _ in seen)


def test_a_small_models_step_never_asks_for_the_thread_count(monkeypatch):
    # num_threads() reads the environment and the CPU affinity (~5 us): asked on every small
    # op and product it made a tiny MLP's training step 1.7x slower (benchmarks/
    # autograd_overhead.py). Work too small to split must run inline without asking.
    import minilm as ml
    import minilm.functional as F

    def asked():
        raise AssertionError("num_threads() was asked for work too small to split")

    monkeypatch.setattr(parallel, "num_threads", asked)
    rng = np.random.default_rng(0)
    x = ml.tensor(rng.standard_normal((64, 32)).astype(np.float32))
    w = ml.tensor(rng.standard_normal((10, 32)).astype(np.float32), requires_grad=True)
    b = ml.tensor(np.zeros(10, np.float32), requires_grad=True)
    hidden = F.gelu(F.layer_norm(x)) @ ml.tensor(np.eye(32, dtype=np.float32))
    loss = F.cross_entropy(F.softmax(F.linear(hidden, w, b), -1), rng.integers(0, 10, 64))
    loss.backward()
    assert w.grad.shape == (10, 32) and np.isfinite(w.grad.numpy()).all()


def test_a_workers_exception_reaches_the_caller_and_nested_work_runs_inline(monkeypatch):
    monkeypatch.setenv("MINILM_NUM_THREADS", "2")
    inner = []

    def work(start, stop):
        parallel.over_blocks(100, lambda a, b: inner.append((a, b)), grain=1)  # nested: one block
        if start > 0:
            raise KeyError("from the second block")

    with pytest.raises(KeyError, match="second block"):
        parallel.over_blocks(100, work, grain=1)
    assert sorted(inner) == [(0, 100), (0, 100)]


def test_started_work_runs_beside_the_caller_or_inline_on_one_thread(monkeypatch):
    monkeypatch.setenv("MINILM_NUM_THREADS", "2")
    pending = parallel.start(lambda: threading.current_thread())
    assert pending.result() is not threading.current_thread()  # ran on a thread of minilm's

    def fail():
        raise KeyError("from the started work")

    failed = parallel.start(fail)
    with pytest.raises(KeyError, match="started work"):
        failed.result()
    monkeypatch.setenv("MINILM_NUM_THREADS", "1")
    assert parallel.start(lambda: threading.current_thread()).result() is threading.current_thread()
    failed = parallel.start(fail)  # inline: the error still comes from result()
    with pytest.raises(KeyError, match="started work"):
        failed.result()


@pytest.mark.parametrize("shape_a, shape_b, with_bias", [
    ((1024, 256), (256, 300), True),  # split by rows
    ((100, 512), (512, 2000), True),  # fewer rows than columns: split by columns
    ((8, 4, 128, 64), (8, 4, 64, 256), False),  # stacks: split by the first axis
    ((300, 50), (50, 30), True),  # too small to split
    ((53, 576), (576, 576), False),  # a prompt's few rows against a layer's weights
])
def test_split_gemms_equal_the_plain_product_bit_for_bit(monkeypatch, shape_a, shape_b, with_bias):
    monkeypatch.setenv("MINILM_NUM_THREADS", "2")
    monkeypatch.setattr(parallel, "_last_split", time.monotonic() + 60)  # as in a step that splits work
    pools = []
    monkeypatch.setattr(parallel, "_get_pool", lambda workers, get=parallel._get_pool: pools.append(1) or get(workers))
    rng, dtype = np.random.default_rng(0), np.float32
    a, b = rng.standard_normal(shape_a).astype(dtype), rng.standard_normal(shape_b).astype(dtype)
    bias = rng.standard_normal(shape_b[-1]).astype(dtype) if with_bias else None
    expected = a @ b
    if bias is not None:
        expected += bias
    got = parallel.matmul(a, b, bias)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert bool(pools) == (a.size * b.shape[-1] >= parallel.BLAS_THREADS_FROM)  # split where large enough
    # transposed operands, as the weight gradients pass them
    np.testing.assert_array_equal(parallel.matmul(b.swapaxes(-1, -2), a.swapaxes(-1, -2)),
                                  b.swapaxes(-1, -2) @ a.swapaxes(-1, -2))


def test_blas_is_taken_over_only_when_nobody_chose_its_threads():
    probe = """
        import json, minilm
        from minilm import parallel
        threads = parallel._openblas_function("get_num_threads")
        print(json.dumps({**parallel.take_over_blas(), "blas_threads": threads() if threads else None,
                          "gemm_threads": parallel.gemm_threads()}))
    """
    default = json.loads(run_python(probe, MINILM_NUM_THREADS="2"))
    if default["blas_threads"] is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS: there is nothing to take over")
    assert default["applied"] and default["blas_threads"] == 1 and default["gemm_threads"] == 2
    off = json.loads(run_python(probe, MINILM_NUM_THREADS="2", MINILM_THREADED_GEMM="0", OPENBLAS_NUM_THREADS="2"))
    assert not off["applied"] and "MINILM_THREADED_GEMM=0" in off["reason"]
    assert off["blas_threads"] == 2 and off["gemm_threads"] == 1
    chosen = json.loads(run_python(probe, MINILM_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2"))
    assert not chosen["applied"] and "OPENBLAS_NUM_THREADS" in chosen["reason"] and chosen["blas_threads"] == 2


TRAIN_TWO_STEPS = """
    import hashlib, json
    import numpy as np
    import minilm as ml
    from minilm import optim, parallel
    from minilm.models import GPT, GPTConfig, Transformer, TransformerConfig

    # The mid-sized GEMMs left to OpenBLAS's threads round as OpenBLAS does, for some shapes
    # differently from one thread: here they run on one, to test minilm's own splits.
    parallel._on_blas_threads = lambda threads, a, b: a @ b
    dispatches = [0]
    get_pool = parallel._get_pool
    def counting_get_pool(workers):
        dispatches[0] += 1
        return get_pool(workers)
    parallel._get_pool = counting_get_pool

    def train(model, loss_of):
        opt = optim.AdamW(model.parameters(), lr=1e-3, flat=True)
        digest = hashlib.sha256()
        for _ in range(2):
            loss = loss_of(model)
            loss.backward()
            opt.step()
            opt.zero_grad()
            digest.update(np.float64(loss.item()).tobytes())
        for p in model.parameters():
            digest.update(np.ascontiguousarray(p.data).tobytes())
        return digest.hexdigest()

    rng = np.random.default_rng(0)
    ml.manual_seed(0)
    seq2seq = Transformer(TransformerConfig.marian(
        vocab_size=2048, d_model=128, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=64,
        dropout=0.1, pad_token_id=2047, eos_token_id=0)).train()
    src, tgt = rng.integers(3, 2047, (8, 64)), rng.integers(3, 2047, (8, 64))
    mask = np.ones((8, 64), dtype=np.int64)
    mask[:2, 40:] = 0
    digests = [train(seq2seq, lambda m: m(src, tgt, src_attention_mask=mask, labels=tgt, label_smoothing=0.1).loss)]
    ml.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=1024, n_layer=1, n_head=4, n_embd=256, block_size=128, dropout=0.1)).train()
    ids = rng.integers(0, 1024, (8, 129))
    digests.append(train(gpt, lambda m: m(ids[:, :-1], targets=ids[:, 1:]).loss))
    from minilm.models.lstm import LSTMConfig, LSTMLanguageModel
    ml.manual_seed(0)
    lstm = LSTMLanguageModel(LSTMConfig(vocab_size=256, n_embd=64, hidden_size=64, num_layers=2))
    ids = rng.integers(0, 256, (8, 41))  # 40 steps: backward through time hands on 3 pieces
    digests.append(train(lstm, lambda m: m(ids[:, :-1], targets=ids[:, 1:]).loss))
    print(json.dumps({"digests": digests, "dispatches": dispatches[0]}))
"""


def test_training_is_bit_identical_on_one_thread_and_on_two():
    """The same seq2seq (SiLU, padded attention, label smoothing), GPT (tanh GELU) and LSTM
    training steps on one thread and on two give the same loss and parameters to the last bit,
    while the two-thread run really splits its GEMMs, attention, activations and cross-entropy
    (and finishes the LSTM's gradient pieces beside its time loop)."""
    one = json.loads(run_python(TRAIN_TWO_STEPS, MINILM_NUM_THREADS="1"))
    two = json.loads(run_python(TRAIN_TWO_STEPS, MINILM_NUM_THREADS="2"))
    assert one["dispatches"] == 0 and two["dispatches"] > 50
    assert one["digests"] == two["digests"]
