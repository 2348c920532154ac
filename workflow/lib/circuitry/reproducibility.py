"""The CPU code paths every job runs on, so the toy's models are the same bits on every
x86-64 CPU with AVX2, Intel or AMD, with or without AVX-512.

PyTorch picks its vectorised kernels (ATen), its BLAS (MKL) and oneDNN's kernels by the
CPU it finds, and each instruction set rounds sums in its own order. Measured on the
reference machine (AMD EPYC with AVX-512), toy-sft after 300 steps: ATen's AVX-512
kernels and its AVX2 kernels give different weights; MKL and oneDNN left to choose gave
the same weights as pinned there, but choose AVX-512 paths on Intel CPUs that have it.
One thread or two gave the same weights. So every job pins all three to AVX2 (about 10%
slower toy-sft training on that machine); the workflow sets them for its jobs
(`workflow/rules/common.smk`), and a job's provenance records the ATen capability it
ran with.
"""

from __future__ import annotations

from collections.abc import MutableMapping

CPU_CODE_PATHS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def pin_cpu_code_paths(environ: MutableMapping[str, str]) -> None:
    """Set `CPU_CODE_PATHS` in `environ` (a job's environment, before torch loads)."""
    environ.update(CPU_CODE_PATHS)
