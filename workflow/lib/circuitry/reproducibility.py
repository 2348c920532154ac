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

A model the study ships (`train.shipped`) is rebuilt from its recipe on demand
(`snakemake rebuild_shipped`), and the rebuild must be the shipped weights, bit for bit.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path

from circuitry.io import sha256_file
from circuitry.paths import WEIGHTS_FILE

CPU_CODE_PATHS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def pin_cpu_code_paths(environ: MutableMapping[str, str]) -> None:
    """Set `CPU_CODE_PATHS` in `environ` (a job's environment, before torch loads)."""
    environ.update(CPU_CODE_PATHS)


def rebuilt_weights(model: str, shipped: str | Path, rebuilt: str | Path) -> dict:
    """The sha256 of a shipped model's weights and of their rebuild, which must be equal:
    otherwise the recipe, a library or a CPU code path no longer builds what was shipped."""
    hashes = {
        "model": model,
        "shipped_sha256": sha256_file(Path(shipped) / WEIGHTS_FILE),
        "rebuilt_sha256": sha256_file(Path(rebuilt) / WEIGHTS_FILE),
    }
    if hashes["shipped_sha256"] != hashes["rebuilt_sha256"]:
        raise ValueError(
            f"{model}: the rebuilt {Path(rebuilt) / WEIGHTS_FILE} (sha256 "
            f"{hashes['rebuilt_sha256']}) is not the shipped {Path(shipped) / WEIGHTS_FILE} "
            f"({hashes['shipped_sha256']}): the recipe, a library version or the CPU code "
            "paths build other weights now; find what changed, or ship the rebuild and "
            "update the README's toy hashes with it"
        )
    return hashes
