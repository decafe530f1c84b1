"""Large elementwise work split across the CPU cores with threads.

NumPy releases the GIL inside its loops (ufuncs, copies, `take`/`put` on numeric arrays), so
Python threads can run elementwise work on several cores at once: each thread takes its own
contiguous range of elements, in chunks small enough to stay in the caches. Every element is
computed by the same code whatever the thread count, so results are bit-identical to a
single-threaded run (no reductions are split here).

    in_parallel(x.size, lambda start, stop: work(x[start:stop], out[start:stop]))

Threads: `MINILM_NUM_THREADS` if set, else the cores this process may run on (at most 8).
Work smaller than two chunks runs inline, in the calling thread.

Work that itself calls BLAS (attention's many small batched GEMMs) is split coarsely, one
block per thread (`split_evenly`), with BLAS held to one thread meanwhile: one level of
parallelism at a time. Nested, each small GEMM would wake the BLAS thread pool from two
Python threads at once; measured on 2 cores, attention forward B=16, H=4, T=128, D=64:
7.5 ms unsplit with 2 BLAS threads, 6.4 ms with 1, 8.2 ms split with 2 BLAS threads each,
3.8 ms split with 1.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_inside = threading.local()  # set in the pool's threads: nested calls run inline


def num_threads() -> int:
    """Threads that elementwise work is split over (1 = no splitting)."""
    value = os.environ.get("MINILM_NUM_THREADS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"MINILM_NUM_THREADS must be a whole number, got {value!r}") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minilm-elementwise",
                                       initializer=lambda: setattr(_inside, "worker", True))
        return _pool


def _forget_pool_in_child() -> None:
    # A forked child (multiprocessing) inherits the pool object but not its threads.
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


CHUNK = 131072  # elements a piece: 512 KiB of float32, so a piece's passes stay in the caches


def in_parallel(size: int, work: Callable[[int, int], None], chunk: int = CHUNK) -> None:
    """Call work(start, stop) over [0, size) in ranges of at most `chunk` elements; the ranges
    are split into one contiguous block per thread, the calling thread taking the first."""
    chunks = -(-size // chunk)
    threads = min(num_threads(), chunks // 2) if not getattr(_inside, "worker", False) else 1
    if threads <= 1:
        for start in range(0, size, chunk):
            work(start, min(start + chunk, size))
        return

    def block(index: int) -> None:
        first, last = chunks * index // threads, chunks * (index + 1) // threads
        for c in range(first, last):
            work(c * chunk, min((c + 1) * chunk, size))

    pool = _get_pool(threads - 1)
    futures = [pool.submit(block, index) for index in range(1, threads)]
    block(0)
    for future in futures:
        future.result()  # re-raises a worker's exception here


def in_pieces(array, work: Callable[[int, int], None], row: int = 1) -> None:
    """work(start, stop) over the `array.size // row` rows of `array` (row = 1: its elements),
    in cache-sized pieces of whole rows shared among the threads. Arrays other than NumPy's
    (CuPy's, on the GPU) are handed over whole, in one call: the device runs its own kernels."""
    rows = array.size // row if row else 0
    if not isinstance(array, np.ndarray):
        work(0, rows)
        return
    in_parallel(rows, work, chunk=max(1, CHUNK // row))


def split_evenly(size: int, work: Callable[[int, int], None]) -> None:
    """Call work(start, stop) once per thread over contiguous, near-equal ranges of [0, size),
    BLAS held to one thread meanwhile (see the module docstring). For coarse units that each
    carry much work (a batch row of attention); `size` below 2 runs inline."""
    threads = min(num_threads(), size) if not getattr(_inside, "worker", False) else 1
    if threads <= 1:
        work(0, size)
        return
    bounds = [size * index // threads for index in range(threads + 1)]
    with _blas_single_threaded():
        pool = _get_pool(threads - 1)
        futures = [pool.submit(work, bounds[i], bounds[i + 1]) for i in range(1, threads)]
        work(bounds[0], bounds[1])
        for future in futures:
            future.result()


# ---------------------------------------------------------------------------------------
# BLAS threads: NumPy's bundled OpenBLAS exports its thread-count setter under a prefixed
# name; it is found among the shared libraries this process has loaded (Linux). With
# another BLAS, or none found, the count is left alone.
# ---------------------------------------------------------------------------------------
_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads")
_BLAS_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads")
_blas_controls: tuple | None = None  # (set, get), () when none found
_blas_lock = threading.Lock()
_blas_holders = 0
_blas_saved = 1


def _find_blas_controls() -> tuple:
    global _blas_controls
    if _blas_controls is None:
        _blas_controls = ()
        try:
            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line})
        except OSError:
            paths = []
        for path in paths:
            try:
                library = ctypes.CDLL(path)
            except OSError:
                continue
            for set_name, get_name in zip(_BLAS_SETTERS, _BLAS_GETTERS):
                if hasattr(library, set_name) and hasattr(library, get_name):
                    setter, getter = getattr(library, set_name), getattr(library, get_name)
                    setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                    _blas_controls = (setter, getter)
                    return _blas_controls
    return _blas_controls


class _blas_single_threaded:
    """BLAS held to one thread inside the block; the first to enter saves the count, the last
    to leave restores it (blocks may nest or overlap across threads)."""

    def __enter__(self):
        global _blas_holders, _blas_saved
        controls = _find_blas_controls()
        with _blas_lock:
            if controls and _blas_holders == 0:
                _blas_saved = controls[1]()
                controls[0](1)
            _blas_holders += 1

    def __exit__(self, *exc):
        global _blas_holders
        controls = _find_blas_controls()
        with _blas_lock:
            _blas_holders -= 1
            if controls and _blas_holders == 0:
                controls[0](_blas_saved)
