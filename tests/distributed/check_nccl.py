"""On a machine with GPUs: `mpiexec -n N python tests/distributed/check_nccl.py`, one rank per
GPU (N=1 works too: it still runs NCCL). Checks the NCCL allreduce of minilm.distributed and a
GradientAllreduce of a GPT on CuPy against the same gradients computed on the CPU; prints OK.
Not part of CI, which has no GPU."""

import os

os.environ.setdefault("MINILM_BACKEND", "cupy")  # before minilm is imported: init() binds the GPU

import numpy as np  # noqa: E402

from minilm import distributed  # noqa: E402

comm = distributed.init(gpu=True)

import cupy  # noqa: E402

import minilm as ml  # noqa: E402
from minilm.models import GPT, GPTConfig  # noqa: E402


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


with comm.abort_on_error():
    for dtype in (np.float16, np.float32, np.float64):
        values = cupy.arange(1000, dtype=dtype) * (comm.rank + 1)
        comm._nccl_sum_in_place(values)  # also with one rank, so that NCCL itself runs
        expected = np.arange(1000, dtype=dtype) * sum(range(1, comm.size + 1))
        check(np.array_equal(cupy.asnumpy(values), expected), f"NCCL sum of {np.dtype(dtype).name} arrays is wrong")

    ml.manual_seed(0)  # after init(): the generator lives on this rank's GPU
    ml.set_default_dtype(ml.float64)
    model = GPT(GPTConfig(vocab_size=40, n_layer=1, n_head=2, n_embd=16, block_size=16))
    comm.broadcast_parameters(model)
    windows = np.random.default_rng(0).integers(0, 40, (4 * comm.size, 17))
    model(windows[:, :-1], targets=windows[:, 1:]).loss.backward()  # the full batch, on the GPU
    expected = {name: cupy.asnumpy(p.grad.data).copy() for name, p in model.named_parameters()}
    model.zero_grad()
    shard = comm.shard({"ids": windows[:, :-1], "targets": windows[:, 1:]})
    model(shard["ids"], targets=shard["targets"]).loss.backward()
    allreduce = distributed.GradientAllreduce(model.parameters(), comm)
    allreduce(0.0)
    check(isinstance(allreduce.buffer, cupy.ndarray), "the flat buffer is not on the GPU")
    for name, p in model.named_parameters():
        got = cupy.asnumpy(p.grad.data)
        error = np.abs(got - expected[name]).max() / max(np.abs(expected[name]).max(), 1e-300)
        check(error <= 1e-12, f"{name}: averaged gradient differs by {error:.2e}")
    comm.barrier()
    if comm.is_main:
        print(f"OK ({comm.size} rank(s), NCCL {cupy.cuda.nccl.get_version()})")
