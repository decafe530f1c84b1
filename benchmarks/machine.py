"""The machine a benchmark ran on, printed next to its ratios (shared by every benchmark).

A ratio against a peer means little without the machine: the CPU model, its vector ISA
(AVX2 only or AVX-512), the vector kernels NumPy, OpenBLAS and torch actually chose (fewer
than the CPU has when `benchmarks/avx2_kernels.sh` turned AVX-512 off), the BLAS NumPy uses
and how many threads it runs, the number of cores and the load on them when the figures
were taken (these machines are shared).

    from machine import describe_machine
    print(describe_machine())          # a few lines, each starting with "machine:"
"""

from __future__ import annotations

import ctypes
import os
import platform

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_isa() -> str:
    """'avx512' when the CPU has AVX-512F, else 'avx2' / 'avx' / 'none' (x86 Linux flags)."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
            else:
                return "unknown"
    except OSError:
        return "unknown"
    for name in ("avx512f", "avx2", "avx"):
        if name in flags:
            return name.replace("avx512f", "avx512")
    return "none"


def _openblas_call(name: str, restype):
    """Call the loaded OpenBLAS's `openblas_<name>()` (found as minilm.parallel finds its
    set_num_threads, no threadpoolctl needed); None without OpenBLAS."""
    from minilm.parallel import _openblas_function

    function = _openblas_function(name)
    if function is None:
        return None
    function.restype = restype
    return function()


def _openblas_threads() -> int | None:
    threads = _openblas_call("get_num_threads", ctypes.c_int)
    return None if threads is None else int(threads)


def kernels() -> str:
    """The vector kernels in use: NumPy's highest enabled dispatch target (X86_V3 is AVX2,
    X86_V4 and AVX512_* are AVX-512; NPY_DISABLE_CPU_FEATURES turns targets off) and the core
    type OpenBLAS chose (OPENBLAS_CORETYPE overrides it: Haswell is AVX2, SkylakeX AVX-512)."""
    try:  # private to NumPy, so read defensively
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

        enabled = [target for target in __cpu_dispatch__ if __cpu_features__.get(target)]
        numpy_kernels = enabled[-1] if enabled else "baseline"
    except ImportError:
        numpy_kernels = "unknown"
    core = _openblas_call("get_corename", ctypes.c_char_p)
    return f"kernels: numpy {numpy_kernels}, OpenBLAS {core.decode() if core else 'unknown'}"


def blas() -> str:
    """NumPy's BLAS library, its version and thread count."""
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            return ", ".join(f"{p['internal_api']} {p.get('version')} threads={p['num_threads']}" for p in pools)
    except ImportError:
        pass
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        name = f"{info.get('name')} {info.get('version')}"
    except (TypeError, KeyError, AttributeError):  # older NumPy without mode="dicts"
        name = "unknown BLAS"
    threads = _openblas_threads()
    return f"{name} threads={threads if threads is not None else '?'}"


def minilm_threads() -> str:
    """How many threads minilm's own kernels use, and whether it splits the GEMMs itself."""
    from minilm import parallel

    blas_state = parallel.take_over_blas()
    gemms = (f"GEMMs split by minilm over {parallel.gemm_threads()} threads" if blas_state["applied"]
             else f"GEMMs left to the BLAS ({blas_state['reason']})")
    return f"minilm threads={parallel.num_threads()}, {gemms}"


def load() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"load {one:.2f} (1 min) {five:.2f} (5 min)"
    except OSError:
        return "load unknown"


def describe_machine(peer: str | None = None) -> str:
    """Lines describing the machine; `peer` adds the peer's own line (e.g. torch's threads)."""
    lines = [
        (f"machine: {cpu_model()}, {os.cpu_count()} cores, ISA {vector_isa()}, "
         f"{platform.python_implementation()} {platform.python_version()}"),
        f"machine: numpy {np.__version__} with {blas()}; {kernels()}; {load()}",
        f"machine: {minilm_threads()}",
    ]
    if peer:
        lines.append(f"machine: {peer}")
    return "\n".join(lines)


def torch_line(torch) -> str:
    """torch's version, BLAS backend and intra-op threads, for `describe_machine(peer=...)`."""
    mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
    return f"torch {torch.__version__} ({mkl}, CPU capability {torch.backends.cpu.get_cpu_capability()}) " \
           f"threads={torch.get_num_threads()}"


if __name__ == "__main__":
    print(describe_machine())
