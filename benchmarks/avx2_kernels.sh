#!/usr/bin/env bash
# Run a command with AVX2 kernels only, on a CPU that has AVX-512: the closest this project's
# AVX-512 machines get to its AVX2 machine kind (same instruction paths; the clock, caches and
# memory of the other kind are not reproduced). Every library involved is told:
#   NumPy      NPY_DISABLE_CPU_FEATURES  its AVX-512 dispatch targets off (X86_V3, AVX2, is then the highest)
#   OpenBLAS   OPENBLAS_CORETYPE=Haswell its AVX2 kernels
#   torch      ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2, ONEDNN_MAX_CPU_ISA=AVX2
# The benchmarks' "machine: ... kernels:" line and torch's "CPU capability" show what was used.
#
#     bash benchmarks/avx2_kernels.sh python benchmarks/train_step.py
#     bash benchmarks/avx2_kernels.sh minilm train --out-dir runs/avx2
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: bash benchmarks/avx2_kernels.sh COMMAND [ARGS...]" >&2
    exit 2
fi
export NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL"
export OPENBLAS_CORETYPE=Haswell
export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
exec "$@"
