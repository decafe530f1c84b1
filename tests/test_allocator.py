"""minilm.allocator: the process-wide glibc policy that keeps freed memory for reuse."""

import os
import platform
import subprocess
import sys

import pytest

from minilm import allocator


def _policy_in_subprocess(env: dict) -> str:
    code = "import minilm.allocator as a, minilm; print(a.apply_policy()['applied'], a.describe())"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's mallopt")
def test_allocator_policy_is_applied_at_import_and_can_be_turned_off():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the C library is not glibc")
    assert _policy_in_subprocess({"MINILM_MALLOC_POLICY": "1"}).startswith("True allocator: glibc keeps freed memory")
    off = _policy_in_subprocess({"MINILM_MALLOC_POLICY": "0"})
    assert off.startswith("False") and "MINILM_MALLOC_POLICY=0" in off
    assert "GLIBC_TUNABLES" in _policy_in_subprocess({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"})
    assert allocator.apply_policy() is allocator.apply_policy()  # once per process


def _faults_per_step(env: dict) -> float:
    """Minor page faults of a step-like pattern once warm: a few temporaries of 2-12 MB made
    and freed (as a training step's activations and gradients), repeated."""
    code = ("import resource, numpy as np, minilm\n"
            "def step():\n"
            "    held = [np.ones(n) for n in (1 << 20, 1 << 18, 3 << 19, 5 << 16)]\n"
            "    return sum(a[0] for a in held)\n"
            "for _ in range(3): step()\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(10): step()\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)")
    return float(subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                                text=True, check=True).stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's mallopt")
def test_freed_temporaries_are_reused_without_page_faults():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the C library is not glibc")
    assert _faults_per_step({"MINILM_MALLOC_POLICY": "1"}) < 50
    assert _faults_per_step({"MINILM_MALLOC_POLICY": "0"}) > 1000  # glibc's default: fresh zero-filled pages
