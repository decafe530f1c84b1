"""Large elementwise work split across the CPU cores with threads.

NumPy releases the GIL inside its loops (ufuncs, copies, `take`/`put` on numeric arrays), so
Python threads can run elementwise work on several cores at once: each thread takes its own
contiguous range of elements, in chunks small enough to stay in the caches. Every element is
computed by the same code whatever the thread count, so results are bit-identical to a
single-threaded run (no reductions are split here).

    in_parallel(x.size, lambda start, stop: work(x[start:stop], out[start:stop]))

Threads: `MINILM_NUM_THREADS` if set, else the cores this process may run on (at most 8).
Work smaller than two chunks runs inline, in the calling thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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


def in_parallel(size: int, work: Callable[[int, int], None], chunk: int = 65536) -> None:
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
