"""The C allocator's policy for the process: keep freed memory for reuse (glibc only).

Why: a training step allocates and frees the same large temporaries every time (activations,
gradients, [B, T, V] logits). glibc serves any block above its mmap threshold (128 KiB at
start, raised dynamically up to 32 MiB) with a fresh `mmap`, and gives it back with `munmap`
when NumPy frees it; it also trims the top of the heap back to the OS above 128 KiB free.
So each step the kernel zero-fills the same pages again, one minor page fault per 4 KiB:
about 16,000 faults and ~100 ms of system time in a 4-layer 256-wide GPT step, where a
PyTorch step (its allocator caches) takes ~5,000 and ~17 ms.

What: at import, minilm raises glibc's mmap threshold to its maximum (32 MiB on 64-bit) and
the trim threshold to 1 GiB through `mallopt`, so temporaries up to 32 MiB come from the
heap and freed ones stay there for the next step. The price: up to ~1 GiB of freed memory
can stay with the process instead of going back to the OS (it is reused, not leaked).

The switch: `MINILM_MALLOC_POLICY=0` in the environment leaves the allocator as it is. On
other C libraries (musl, macOS, Windows) nothing is changed. `GLIBC_TUNABLES` set by the user
(glibc.malloc.mmap_threshold / trim_threshold) wins over this policy: it is not touched then.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1024 * 1024 * 1024

# What apply_policy() did, for `describe()` and the tests: None until it runs.
_applied: dict | None = None


def _policy_enabled() -> bool:
    return os.environ.get("MINILM_MALLOC_POLICY", "1").strip().lower() not in ("0", "off", "false", "no")


def _user_tunables() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "malloc.mmap_threshold" in tunables or "malloc.trim_threshold" in tunables


def apply_policy() -> dict:
    """Set the policy once for the process (idempotent); returns what was done:
    {"applied": bool, "reason": str, "mmap_threshold": int | None, "trim_threshold": int | None}."""
    global _applied
    if _applied is not None:
        return _applied
    result = {"applied": False, "reason": "", "mmap_threshold": None, "trim_threshold": None}
    if not _policy_enabled():
        result["reason"] = "turned off by MINILM_MALLOC_POLICY=0"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        result["reason"] = "the C library is not glibc"
    elif _user_tunables():
        result["reason"] = "GLIBC_TUNABLES sets the malloc thresholds"
    else:
        try:
            libc = ctypes.CDLL(None)
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            result["reason"] = "mallopt is not available"
        else:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            # mallopt returns 1 on success, 0 when glibc refuses the value.
            if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
                result["mmap_threshold"] = MMAP_THRESHOLD
            if mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
                result["trim_threshold"] = TRIM_THRESHOLD
            result["applied"] = result["mmap_threshold"] is not None or result["trim_threshold"] is not None
            result["reason"] = "glibc mallopt" if result["applied"] else "glibc refused the thresholds"
    _applied = result
    return result


def describe() -> str:
    """One line for logs and benchmarks: what the allocator policy is in this process."""
    state = apply_policy()
    if not state["applied"]:
        return f"allocator: unchanged ({state['reason']})"
    return (f"allocator: glibc keeps freed memory (mmap threshold {state['mmap_threshold']} B, "
            f"trim threshold {state['trim_threshold']} B; MINILM_MALLOC_POLICY=0 turns this off)")
