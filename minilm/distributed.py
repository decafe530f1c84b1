"""Data-parallel training over MPI (mpi4py), with NCCL moving the gradients of GPU runs.

ChainerMN's design: every process (rank) holds a whole copy of the model. Rank 0's
initial parameters and data-order state are broadcast so that all copies start equal;
each rank computes the loss and gradients of its slice of every global batch; one
allreduce over a single flat buffer averages the gradients; every rank then takes the same
optimizer step, so the copies stay equal without ever sending parameters again.

    comm = minilm.distributed.init()   # under `mpiexec -n N`: N ranks; otherwise one
    comm.rank, comm.size, comm.is_main

A process that was not started by an MPI launcher is a world of one and never imports
mpi4py, so single-process training works exactly as before without MPI installed. The
Trainer calls `init()` itself; scripts need not.

Failures: an exception on one rank would leave the others waiting forever in the next
collective call. `abort_on_error()` prints the failing rank's traceback and calls
MPI_Abort, which ends every rank. Errors that every rank raises together (those from
`run_on_main`, or a loss that became NaN, which the allreduce makes global) are marked
with `raised_on_every_rank` and left to propagate normally, so a command can print them
once and exit cleanly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

import numpy as np

from .autograd import Tensor

# Variables that MPI launchers set in the processes they start: MPICH / Intel MPI (Hydra's
# PMI), Open MPI, PMIx launchers (srun --mpi=pmix), MVAPICH.
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")

_current: "Communicator | None" = None


class DistributedError(RuntimeError):
    """Data-parallel training cannot start as asked (e.g. launched by mpiexec without mpi4py)."""


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process (MINILM_DISTRIBUTED=1 forces yes, =0 no)."""
    forced = os.environ.get("MINILM_DISTRIBUTED")
    if forced in ("0", "1"):
        return forced == "1"
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def init(gpu: bool | None = None) -> "Communicator":
    """The communicator of this process; created on the first call, the same one after.

    gpu: bind each rank to its own GPU (the one numbered by its rank on this machine; NCCL
    needs one GPU per rank). None: when MINILM_BACKEND asks for CuPy. Call this before any
    array is put on the GPU.
    """
    global _current
    if _current is not None:
        return _current
    if not launched_by_mpi():
        _current = Communicator()
        return _current
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise DistributedError(
            "this process was started by an MPI launcher, but mpi4py is not installed: "
            "pip install mpi4py mpich (or mpi4py built against the system's MPI)"
        ) from error
    comm = Communicator(MPI.COMM_WORLD, MPI)
    announced = next((os.environ[name] for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
                      if os.environ.get(name, "").isdigit()), None)
    if announced is not None and int(announced) != comm.size:
        # Otherwise each process would train alone, all writing the same run folder.
        raise DistributedError(
            f"the launcher started {announced} processes, but MPI reports a world of {comm.size}: mpiexec and "
            "mpi4py come from different MPI installations; use the mpiexec that belongs to mpi4py's MPI "
            "(with `pip install mpi4py mpich`: the one in the virtual environment's bin/)")
    _current = comm
    if gpu is None:
        gpu = os.environ.get("MINILM_BACKEND", "").lower() in ("cupy", "cuda", "gpu")
    if gpu and comm.size > 1:
        import cupy

        gpus = cupy.cuda.runtime.getDeviceCount()
        if comm.local_size > gpus:  # NCCL refuses two ranks on one GPU (NCCL_ERROR_INVALID_USAGE)
            raise DistributedError(f"{comm.local_size} ranks on this machine but {gpus} GPU(s): "
                                   "data-parallel training on GPUs needs one GPU per rank")
        cupy.cuda.Device(comm.local_rank).use()
    return _current


def current() -> "Communicator | None":
    """The communicator made by `init()`, or None if it was never called."""
    return _current


def is_main_process() -> bool:
    """True on rank 0, and in a process that never joined a distributed run."""
    return _current is None or _current.is_main


def raised_on_every_rank(error: BaseException) -> BaseException:
    """Mark `error` as raised by every rank at the same point (so no rank needs aborting)."""
    error.raised_on_every_rank = True
    return error


def abort_on_error():
    """`Communicator.abort_on_error` of the current communicator (nothing without one)."""
    return _current.abort_on_error() if _current is not None else contextlib.nullcontext()


def shard_rows(batch: dict, rank: int, size: int) -> dict:
    """Rank `rank`'s contiguous slice (along the first axis) of every array in `batch`."""
    rows = len(next(iter(batch.values())))
    if rows % size:
        raise ValueError(f"a batch of {rows} rows cannot be split evenly over {size} ranks")
    per_rank = rows // size
    return {key: value[rank * per_rank : (rank + 1) * per_rank] for key, value in batch.items()}


class Communicator:
    """One process's view of the training world: its rank, the world size, and the few
    collective operations data-parallel training needs. Without an MPI communicator it is
    a world of one, where every operation is the identity."""

    def __init__(self, mpi_comm=None, mpi_module=None):
        self.mpi, self._MPI = mpi_comm, mpi_module
        self.rank = mpi_comm.Get_rank() if mpi_comm is not None else 0
        self.size = mpi_comm.Get_size() if mpi_comm is not None else 1
        # The rank among the processes on this machine (which GPU to take), and their number.
        local = mpi_comm.Split_type(mpi_module.COMM_TYPE_SHARED) if mpi_comm is not None else None
        self.local_rank = local.Get_rank() if local is not None else 0
        self.local_size = local.Get_size() if local is not None else 1
        self._nccl = None  # made at the first GPU allreduce
        # Wall time inside sum_in_place (benchmarks): on the CPU the whole allreduce, waiting
        # for the slowest rank included; on the GPU only the queueing of NCCL's kernel.
        self.allreduce_seconds = 0.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size})"

    # -- data ----------------------------------------------------------------------------------
    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise raised_on_every_rank(ValueError(
                f"the global batch size {batch_size} is not divisible by the {self.size} ranks; "
                f"choose a batch size that is a multiple of {self.size}"))

    def shard(self, batch: dict) -> dict:
        """This rank's rows of a global batch (the whole batch in a world of one)."""
        return batch if self.size == 1 else shard_rows(batch, self.rank, self.size)

    # -- broadcasts ----------------------------------------------------------------------------
    def broadcast_object(self, value):
        """Rank 0's `value` on every rank.

        For small control data (task state, run settings): mpi4py serializes the object in
        memory between the processes of this one job. Files are never read this way: weights
        and arrays travel as raw buffers (`Bcast`, the gradient allreduce)."""
        return value if self.size == 1 else self.mpi.bcast(value, root=0)

    def broadcast_parameters(self, module) -> None:
        """Overwrite every parameter and persistent buffer with rank 0's values, in place."""
        if self.size == 1:
            return
        for tensor in module.state_dict().values():
            device = tensor.device
            host = np.ascontiguousarray(device.to_host(tensor.data))
            self.mpi.Bcast(host, root=0)
            if host is not tensor.data:  # a GPU array, or a non-contiguous one
                tensor.data[...] = device.asarray(host)

    def run_on_main(self, fn):
        """fn() run on rank 0 only; its result, or the exception it raised, on every rank.

        For work that must happen once (reading or writing files, evaluation) while the
        other ranks wait: an error there is raised on every rank, so none is left hanging.
        """
        if self.size == 1:
            return fn()
        outcome = None
        if self.is_main:
            try:
                outcome = ("result", fn())
            except Exception as error:  # sent to the other ranks, then raised here too
                outcome = ("error", raised_on_every_rank(error))
        kind, value = self.mpi.bcast(_portable(outcome), root=0)
        if kind == "error":
            if self.is_main:
                raise outcome[1]
            raise raised_on_every_rank(RemoteError(*value))
        return outcome[1] if self.is_main else value

    # -- reductions ----------------------------------------------------------------------------
    def sum_in_place(self, array) -> None:
        """Sum `array` over all ranks, in place: NCCL for GPU arrays, MPI for host arrays."""
        if self.size == 1:
            return
        started = time.perf_counter()
        if isinstance(array, np.ndarray):
            self.mpi.Allreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM)
        else:
            self._nccl_sum_in_place(array)
        self.allreduce_seconds += time.perf_counter() - started

    def _nccl_sum_in_place(self, array) -> None:
        # Written from the CuPy documentation of cupy.cuda.nccl. CI has no GPU: this ran on
        # one H100 with one rank only (tests/distributed/check_nccl.py), never across GPUs.
        # Rank 0 makes NCCL's unique id and MPI carries it to the others; then NCCL sums
        # directly between the GPUs.
        import cupy
        from cupy.cuda import nccl

        if self._nccl is None:
            unique_id = self.mpi.bcast(nccl.get_unique_id() if self.is_main else None, root=0)
            self._nccl = nccl.NcclCommunicator(self.size, unique_id, self.rank)
        types = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                 np.dtype(np.float64): nccl.NCCL_FLOAT64}
        if array.dtype not in types:
            raise DistributedError(f"NCCL allreduce of {array.dtype} arrays is not supported here")
        stream = cupy.cuda.get_current_stream()
        self._nccl.allReduce(array.data.ptr, array.data.ptr, array.size, types[array.dtype], nccl.NCCL_SUM,
                             stream.ptr)

    def barrier(self) -> None:
        if self.size > 1:
            self.mpi.Barrier()

    # -- failure -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def abort_on_error(self):
        """Around code that runs between collective calls: if it fails on one rank only, print
        that rank's error and end every rank (MPI_Abort) instead of leaving the others hanging."""
        try:
            yield
        except BaseException as error:
            if self.size == 1 or getattr(error, "raised_on_every_rank", False):
                raise
            self.abort(error)

    def abort(self, error: BaseException, code: int = 2) -> None:
        """Print this rank's error and end every rank of the run (does not return)."""
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        sys.stderr.write(f"{text}minilm: rank {self.rank} of {self.size} failed: "
                         f"{type(error).__name__}: {error}; stopping all ranks\n")
        sys.stderr.flush()
        sys.stdout.flush()
        self.mpi.Abort(code)
        # MPICH's MPI_Abort can return before the launcher's kill arrives; this rank must
        # not go on as if the error had been handled.
        os._exit(code)


class RemoteError(ValueError):
    """Raised on the other ranks when rank 0's work in `run_on_main` failed; it carries
    rank 0's exception as text (its type's name and message), never as an object."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind} on rank 0: {message}")
        self.kind = kind


def _portable(outcome):
    """What the other ranks receive: the result, or the error as (type name, message)."""
    if outcome is not None and outcome[0] == "error":
        error = outcome[1]
        return "error", (type(error).__name__, str(error))
    return outcome


class GradientAllreduce:
    """Averages the gradients of `params` over the ranks with one allreduce per step.

    The gradients are copied into one flat buffer (allocated once, on the gradients'
    device, in the widest of their dtypes), followed by one "has a gradient" flag per
    parameter and the rank's loss; the buffer is summed over the ranks (NCCL on the GPU,
    MPI on the CPU) and divided by the world size, and the averages are copied back. A
    parameter keeps `grad = None` only if no rank computed a gradient for it, so the
    optimizer skips it exactly as a single process would.

    The allreduce runs after backward, not overlapped with it: minilm's autograd engine
    hands every leaf its gradient together at the end of the pass, so no backward work is
    left to overlap with.
    """

    def __init__(self, params, comm: Communicator):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("GradientAllreduce got no trainable parameters")
        self.comm = comm
        self.dtype = np.result_type(*[p.dtype for p in self.params])
        self.total = sum(p.size for p in self.params)
        self.buffer = None

    def __call__(self, loss: float = 0.0) -> float:
        """Average the gradients in place; returns the mean of `loss` over the ranks."""
        device = self.params[0].device
        xp = device.xp
        count = len(self.params)
        if self.buffer is None:
            self.buffer = xp.empty(self.total + count + 1, dtype=self.dtype)  # grads | flags | loss
        buffer, offset = self.buffer, 0
        flags = np.zeros(count + 1, dtype=self.dtype)
        for i, p in enumerate(self.params):
            if p.grad is None:
                buffer[offset : offset + p.size] = 0
            else:
                buffer[offset : offset + p.size] = p.grad.data.reshape(-1)
                flags[i] = 1
            offset += p.size
        flags[-1] = loss
        buffer[self.total :] = device.asarray(flags)
        self.comm.sum_in_place(buffer)
        buffer /= self.comm.size
        flags = device.to_host(buffer[self.total :])
        offset = 0
        for i, p in enumerate(self.params):
            average = buffer[offset : offset + p.size].reshape(p.shape)
            offset += p.size
            if flags[i] == 0:
                continue
            if p.grad is None:
                p.grad = Tensor(average.astype(p.dtype, copy=True))
            else:
                p.grad.data[...] = average
                p.grad._version += 1
        return float(flags[-1])


__all__ = ["Communicator", "DistributedError", "GradientAllreduce", "abort_on_error", "current", "init",
           "is_main_process", "launched_by_mpi", "raised_on_every_rank", "shard_rows", "RemoteError"]
