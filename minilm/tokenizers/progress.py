"""A minimal text progress bar on stderr (no dependency on tqdm)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """Redraws one stderr line such as ``BPE merges  [#####.....]  512/1024  3.1s``.

    Redraws are throttled to a few per second so that drawing never costs more
    than the work it reports on.
    """

    WIDTH = 30
    MIN_REDRAW_SECONDS = 0.2

    def __init__(self, label: str, total: int):
        self.label = label
        self.total = max(total, 1)
        self.started = time.perf_counter()
        self.last_drawn = 0.0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last_drawn >= self.MIN_REDRAW_SECONDS or done >= self.total:
            self.last_drawn = now
            filled = self.WIDTH * min(done, self.total) // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            sys.stderr.write(f"\r{self.label}  [{bar}]  {done}/{self.total}  {now - self.started:.1f}s")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def progress_wanted(verbose: bool | None) -> bool:
    """`verbose=None` means: show progress only when a person watches stderr."""
    if verbose is not None:
        return verbose
    return sys.stderr.isatty()
