"""The benchmarks' machine report, and `benchmarks/avx2_kernels.sh`, which runs a benchmark with
AVX2 kernels only on an AVX-512 CPU (the closest these machines get to the project's AVX2
machine kind): the report must show the kernels that were really used, or an AVX2 figure
could come from AVX-512 code without anyone seeing it."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = ROOT / "benchmarks" / "avx2_kernels.sh"

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64") or shutil.which("bash") is None,
    reason="the kernel switches are for x86-64 Linux (NumPy's dispatch targets, OpenBLAS's core types)")


def _kernels_line(*wrapper: str) -> str:
    done = subprocess.run([*wrapper, sys.executable, str(ROOT / "benchmarks" / "machine.py")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "kernels:" in line]
    assert len(lines) == 1, done.stdout
    return lines[0]


def _has_avx2() -> bool:
    from numpy._core._multiarray_umath import __cpu_features__

    return bool(__cpu_features__.get("AVX2")) and bool(__cpu_features__.get("FMA3"))


def _numpy_blas_is_openblas() -> bool:
    try:
        return "openblas" in np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].lower()
    except (TypeError, KeyError, AttributeError):
        return False


def test_machine_report_names_the_kernels_in_use():
    line = _kernels_line()
    assert "kernels: numpy " in line and ", OpenBLAS " in line


@pytest.mark.skipif(not _has_avx2(), reason="this CPU has no AVX2: there is no AVX2 kernel to choose")
def test_avx2_wrapper_turns_avx512_kernels_off():
    line = _kernels_line("bash", str(WRAPPER))
    assert "kernels: numpy X86_V3," in line, line  # NumPy's AVX2 (x86-64-v3) dispatch target
    if _numpy_blas_is_openblas():
        assert "OpenBLAS Haswell" in line, line


def test_avx2_wrapper_without_a_command_says_how_to_use_it():
    done = subprocess.run(["bash", str(WRAPPER)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "usage: bash benchmarks/avx2_kernels.sh COMMAND" in done.stderr
