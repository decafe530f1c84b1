"""minilm's own threads: large GEMMs, row-wise and elementwise work split across the CPU cores.

NumPy releases the GIL inside its loops (ufuncs, copies, `take`/`put` on numeric arrays) and
inside BLAS calls, so Python threads can run NumPy work on several cores at once: each thread
takes its own contiguous block of rows or elements. Every element is computed by the same code
whatever the thread count, so results are bit-identical to a single-threaded run (no reduction
is ever split across threads; a GEMM is split by rows or columns of its output, and OpenBLAS
gives each output element the same sum whichever block it is in). That is more than OpenBLAS's
own threads promise: for some shapes they round differently from one thread, and the few
mid-sized GEMMs left to them (BLAS_THREADS_FROM) round as they do.

    in_parallel(x.size, lambda start, stop: work(x[start:stop], out[start:stop]))   # elements
    over_blocks(rows, lambda start, stop: work(x[start:stop], out[start:stop]), grain)  # rows
    y = matmul(a, b, bias)                                                        # a GEMM
    pending = start(work); ...; pending.result()               # work beside the caller's own

Why minilm splits GEMMs itself (`take_over_blas`): OpenBLAS's own worker threads keep spinning
for a while after each GEMM, waiting for the next one. A training step alternates GEMMs with
elementwise work (LayerNorm, activations, softmax), and a thread of minilm's that runs that work
on the second core then shares it with a spinning OpenBLAS worker: measured on 2 cores, a
sigmoid on 1M floats right after a GEMM took 0.66 ms on one thread and no less on two. So at
import minilm sets OpenBLAS to one thread, and while it has such work of its own to split it
splits the GEMMs across its own threads too, which sleep when idle: the GEMMs run within a few
percent of OpenBLAS's speed and the rest of the step gets the second core. When it has
nothing of its own to split (small models, inference that is all GEMMs), a GEMM runs on
OpenBLAS's threads for the one call (see BLAS_THREADS_FROM). `MINILM_THREADED_GEMM=0` leaves
OpenBLAS as it is (then minilm does not split GEMMs); so does setting OPENBLAS_NUM_THREADS,
GOTO_NUM_THREADS or OMP_NUM_THREADS yourself, or a NumPy built on another BLAS.

Threads: `MINILM_NUM_THREADS` if set, else the cores this process may run on (at most 8).
Work too small to pay for waking a thread runs inline, in the calling thread.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
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


def in_parallel(size: int, work: Callable[[int, int], None], chunk: int = 262144, like=None) -> None:
    """Call work(start, stop) over [0, size) in ranges of at most `chunk` elements (small
    enough that a range's several passes stay in the cache); the ranges are split into one
    contiguous block per thread (at least two ranges each), the calling thread taking the
    first. `like`: as for over_blocks."""

    def block(first: int, last: int) -> None:  # ranges first:last, one after the other
        for c in range(first, last):
            work(c * chunk, min((c + 1) * chunk, size))

    over_blocks(-(-size // chunk), block, grain=2, like=like)


def over_blocks(size: int, work: Callable[[int, int], None], grain: int, align: int = 1, like=None,
                _gemm: bool = False) -> None:
    """Call work(start, stop) once per thread, over contiguous blocks that cover [0, size),
    the calling thread taking the first. A block is at least `grain` long (fewer threads
    otherwise: one means inline) and starts at a multiple of `align`. With `like` an array
    that is not NumPy's (a GPU array), work runs inline: the device does the parallel part."""
    # Too small to split is decided first: it is most calls, and num_threads() reads the
    # environment and the CPU affinity (~5 us, more than a small op's arithmetic).
    blocks = size // max(grain, 1)
    if blocks <= 1 or getattr(_inside, "worker", False) or (like is not None and type(like) is not np.ndarray):
        threads = 1
    else:
        threads = min(num_threads(), blocks)
    if threads <= 1:
        work(0, size)
        return
    bounds = [min(size, -(-size * index // threads // align) * align) for index in range(threads + 1)]
    if not _gemm:  # matmul's own splits do not count (see BLAS_THREADS_FROM)
        global _last_split
        _last_split = time.monotonic()
    pool = _get_pool(threads - 1)
    futures = [pool.submit(work, bounds[i], bounds[i + 1]) for i in range(1, threads) if bounds[i] < bounds[i + 1]]
    _inside.worker = True  # the calling thread's block: work nested in it runs inline, as in the pool's
    try:
        work(bounds[0], bounds[1])
    finally:
        _inside.worker = False
        for future in futures:
            future.result()  # re-raises a worker's exception here


class _Done:
    """Work that ran inline, with a Future's result(): its value, or its exception raised again."""

    def __init__(self, work: Callable[[], object]):
        self.value, self.error = None, None
        try:
            self.value = work()
        except Exception as error:  # raised from result(), where a Future raises it
            self.error = error

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


def start(work: Callable[[], object], like=None):
    """Begin work() on one of minilm's threads while the caller goes on; returns an object
    whose result() waits for it (and re-raises its exception). Runs inline, at once, when
    there is one thread, inside a thread of minilm's, or for GPU arrays (`like`), so the
    caller's arithmetic is the same whatever the thread count."""
    if num_threads() <= 1 or getattr(_inside, "worker", False) or (like is not None and type(like) is not np.ndarray):
        return _Done(work)
    return _get_pool(num_threads() - 1).submit(work)


# ---------------------------------------------------------------------------------------
# GEMMs on minilm's threads
# ---------------------------------------------------------------------------------------
# What take_over_blas() did: None until it runs; OpenBLAS's set_num_threads once found.
_blas: dict | None = None
_blas_set_threads = None

# Who runs a float32 GEMM of BLAS_THREADS_FROM multiply-adds or more (smaller ones run on one
# thread). Handing a block to a sleeping thread of minilm's costs ~0.1 ms (measured on 2
# cores: wake-up and GIL hand-offs), where OpenBLAS's threads, which spin between calls, hand
# off in microseconds: on GEMMs alone OpenBLAS's threads are as fast or faster (by ~0.1 ms a
# call). But one call on them leaves their workers spinning for ~0.1 s, enough to slow all
# the split work around it: one such call a step (an embedding gradient's 3M multiply-adds)
# made a seq2seq step 15-24% slower. So while minilm has split work of its own (attention,
# activations, softmax) in the last _SPIN_SECONDS, it splits the GEMMs too and OpenBLAS
# stays on one thread; otherwise (small models, inference that is all GEMMs) the GEMM runs
# on OpenBLAS's threads for the call.
BLAS_THREADS_FROM = 1 << 23
_SPIN_SECONDS = 0.2
_last_split = -1e9  # time.monotonic() of minilm's last split of work other than a GEMM

_USER_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def _openblas_function(suffix: str):
    """The loaded OpenBLAS's `openblas_<suffix>` C function (any of the names NumPy's builds
    export it under), or None when NumPy's BLAS is not a loaded OpenBLAS."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    except OSError:  # not Linux
        return None
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in (f"scipy_openblas_{suffix}64_", f"openblas_{suffix}64_", f"openblas_{suffix}"):
            function = getattr(library, name, None)
            if function is not None:
                return function
    return None


def take_over_blas() -> dict:
    """Set OpenBLAS to one thread so that minilm's threads split the GEMMs (see the module
    docstring). Runs once per process (at import); returns what was done:
    {"applied": bool, "reason": str}."""
    global _blas
    if _blas is not None:
        return _blas
    user_set = [name for name in _USER_BLAS_THREADS if os.environ.get(name)]
    set_threads = None
    if os.environ.get("MINILM_THREADED_GEMM", "1").strip().lower() in ("0", "off", "false", "no"):
        reason = "turned off by MINILM_THREADED_GEMM=0"
    elif user_set:
        reason = f"{user_set[0]} is set: BLAS threads are left as chosen"
    else:
        np.ones((2, 2)) @ np.ones((2, 2))  # make sure NumPy's BLAS is loaded
        set_threads = _openblas_function("set_num_threads")
        reason = "OpenBLAS set to one thread" if set_threads else "NumPy's BLAS is not OpenBLAS"
    if set_threads is not None:
        set_threads(1)
        global _blas_set_threads
        _blas_set_threads = set_threads
    _blas = {"applied": set_threads is not None, "reason": reason}
    return _blas


def gemm_threads() -> int:
    """Threads minilm splits a large GEMM over (1: it leaves the GEMM to the BLAS)."""
    return num_threads() if (_blas or take_over_blas())["applied"] else 1


def matmul(a, b, bias=None):
    """a @ b (+ bias, broadcast over rows), split across minilm's threads when large.

    2-D products are split by rows of the output, or by its columns when it has fewer rows
    than columns (weight gradients, a few decoded tokens); stacks [n, ..., M, K] @ [n, ..., K, N]
    by their first axis. Each thread adds the bias to its own block. Only float32 products
    of BLAS_THREADS_FROM multiply-adds or more are split, or run on OpenBLAS's threads (see
    BLAS_THREADS_FROM); a block then holds at least 4M multiply-adds, above the sizes where OpenBLAS
    switches to its small-matrix kernels, so every element is the same sum as in the unsplit
    product. Anything else (smaller products, float64, broadcast stacks, a call inside a
    block of minilm's threads, CuPy arrays) is a plain `a @ b`.
    """
    # OpenBLAS's float64 GEMM rounds a row differently with the size of the call: split, it
    # would depend on the thread count. float32 is split only above the small-matrix sizes.
    # Whether the product is one of those is decided before the thread count is asked for
    # (see over_blocks): most products in a small model are not.
    on_cpu = type(a) is np.ndarray and type(b) is np.ndarray and a.ndim >= 2 and b.ndim >= 2
    work = a.size * b.shape[-1] if on_cpu else 0  # multiply-adds: [..., M, K] @ [K, N] is M K N per matrix
    large_float32 = (work >= BLAS_THREADS_FROM and a.dtype == b.dtype == np.float32
                     and not getattr(_inside, "worker", False))
    threads = gemm_threads() if large_float32 else 1
    if not large_float32 or threads <= 1:  # the common case for small models, before any other work
        out = a @ b
        if bias is not None:
            out += bias
        return out
    splitting_lately = time.monotonic() - _last_split < _SPIN_SECONDS
    if splitting_lately and (a.ndim == b.ndim == 2 or (a.ndim == b.ndim and a.shape[:-2] == b.shape[:-2])):
        rows, columns = a.shape[-2], b.shape[-1]
        out = np.empty(a.shape[:-1] + (columns,), dtype=np.result_type(a, b))  # as a @ b; the bias is added in place
        if a.ndim > 2:  # stacks: each thread its share of the matrices

            def block(start, stop):
                np.matmul(a[start:stop], b[start:stop], out=out[start:stop])
                if bias is not None:
                    out[start:stop] += bias

            over_blocks(a.shape[0], block, grain=-(-BLAS_THREADS_FROM // threads * a.shape[0] // work), _gemm=True)
        elif rows >= columns:

            def block(start, stop):  # rows start:stop of the output
                np.matmul(a[start:stop], b, out=out[start:stop])
                if bias is not None:
                    out[start:stop] += bias

            over_blocks(rows, block, grain=-(-BLAS_THREADS_FROM // threads * rows // work), align=16, _gemm=True)
        else:

            def block(start, stop):  # columns start:stop of the output
                np.matmul(a, b[:, start:stop], out=out[:, start:stop])
                if bias is not None:
                    out[:, start:stop] += bias[start:stop]

            over_blocks(columns, block, grain=-(-BLAS_THREADS_FROM // threads * columns // work), align=16,
                        _gemm=True)
        return out
    if not splitting_lately:
        out = _on_blas_threads(threads, a, b)
    else:  # a broadcast stack while minilm splits other work: one call, OpenBLAS on one thread
        out = a @ b
    if bias is not None:
        out += bias
    return out


def _on_blas_threads(threads: int, a, b):
    """a @ b with OpenBLAS on `threads` threads for this one call (then back to one)."""
    _blas_set_threads(threads)  # found by take_over_blas (gemm_threads() > 1 means it was)
    try:
        return a @ b
    finally:
        _blas_set_threads(1)
