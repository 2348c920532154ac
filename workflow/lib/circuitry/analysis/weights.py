"""Weight-space diff of a pair: which parameters tuning changed, by how much, and along
which directions.

Both models' safetensors are read tensor by tensor (`safe_open`, each file closed after
its read, so no mapping keeps earlier tensors resident), so a pair of any size is compared
holding one tensor of each side at a time, with float32 chunks for the elementwise
figures and one float32 copy at a time for the spectra. Every tensor
goes through `tensor_diff`; one row per tensor, with dW = tuned - base and W = base:

- `unchanged_exact`: fraction of elements bit-identical in the stored dtype (value-equal
  when the two sides store different dtypes, which a note reports);
- `unchanged_tol`: fraction with |tuned - base| <= `TOLERANCE` (1e-5), the difference
  taken in float32 from the stored values. This is the tolerance rule of "RL fine-tunes
  small subnetworks" (arXiv 2505.11711), under which RL leaves ~70-95% of parameters
  unchanged and SFT ~6-15%;
- `rel_update_norm`: ||dW||_F / ||W||_F (0 when both are zero, inf when only W is), with
  the two norms in `update_norm` and `base_norm`.

Matrices (2-D tensors) also get, all 0 when dW = 0:

- `stable_rank` = ||dW||_F^2 / sigma_max(dW)^2;
- `rank90`, `rank99`: the smallest k whose top-k singular values of dW hold 90% / 99% of
  ||dW||_F^2 (2505.11711 finds RL updates nearly full-rank);
- `principal_angle_deg`: the largest principal angle between the top-k left singular
  subspaces of W and W + dW, k = min(`TOP_K`, rank W, rank(W + dW)) ("The Path Not
  Taken", arXiv 2511.08567: RLVR moves weights off the principal directions);
- `top_sv_change`: sigma_max(W + dW) / sigma_max(W) - 1.

The angle is only as stable as W's gap sigma_k - sigma_(k+1) (Wedin's sin-theta bound:
roughly ||dW||_2 / gap): on a flat top spectrum, such as a random initialisation's, a
small update already turns the top-k subspace by degrees.

SVD rule. A matrix whose smaller side is at most `EXACT_SVD_MAX` gets an exact float32 SVD
(`torch.linalg.svdvals` / `svd`). A larger one gets `torch.svd_lowrank` with q =
`LOWRANK_Q` components and `LOWRANK_NITER` power iterations; the ranks are read from those
q values against the exact total ||dW||_F^2 and reported as q + 1, meaning "more than q",
where q components do not reach the threshold. Error: the q values are the singular
values of Q^T A for an orthonormal Q, so none exceeds its exact counterpart; the energy
they hold is never overestimated, so rank90, rank99 and stable_rank are upper bounds of
the exact ones, and equal them when rank(dW) <= q (the range finder then spans the whole
range). The top-k subspaces and sigma_max behind `principal_angle_deg` and
`top_sv_change` are approximate there, more accurate the larger the gap
sigma_k / sigma_(q+1) and niter (Halko, Martinsson & Tropp 2011).

`layer` and `kind` come from the tensor name (`layer_of`, `kind_of`). `diff_models` notes
what it cannot compare as is: a tensor on one side only, a resized vocabulary (the common
rows are compared), other shape changes (skipped), dtype changes. The table's columns,
names and summaries are `circuitry.analysis.weight_table`'s, which needs no torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open

from circuitry.analysis.weight_table import (
    COLUMNS,
    TOLERANCE,
    TOP_K,
    kind_of,
    layer_of,
    ratio,
    table_order,
)
from circuitry.models.sources import corrupt_weights_message

EXACT_SVD_MAX = 2048
LOWRANK_Q = 128
LOWRANK_NITER = 4
CHUNK = 1 << 22  # elements per float32 chunk of the elementwise figures (16 MiB)
ENERGY_SHARES = {"rank90": 0.90, "rank99": 0.99}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def weight_files(model_dir: str | Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (one file or an index of shards)."""
    model_dir = Path(model_dir)
    if (model_dir / INDEX_FILE).is_file():
        weight_map = json.loads((model_dir / INDEX_FILE).read_text())["weight_map"]
        files = {name: model_dir / file for name, file in weight_map.items()}
        missing = sorted({f.name for f in files.values() if not f.is_file()})
        if missing:
            raise ValueError(f"{model_dir / INDEX_FILE} lists missing shards: {', '.join(missing)}")
        return files
    if (model_dir / SINGLE_FILE).is_file():
        with open_weights(model_dir / SINGLE_FILE, model_dir) as handle:
            return dict.fromkeys(handle.keys(), model_dir / SINGLE_FILE)
    raise ValueError(f"{model_dir} holds no {SINGLE_FILE} or {INDEX_FILE}")


def open_weights(path: Path, model_dir: Path):
    """`safe_open` of one weight file; a corrupt one is reported as generation reports it."""
    try:
        return safe_open(path, framework="pt")
    except SafetensorError as e:
        raise ValueError(corrupt_weights_message(str(model_dir), e)) from e


def tensor_reader(model_dir: str | Path) -> tuple[list[str], Callable[[str], torch.Tensor]]:
    """The model's tensor names, and a function reading one tensor by name. Each read opens
    its file and closes it again: an open safetensors file stays memory-mapped, and the
    pages of every tensor read through it would stay resident until it is closed (a 7B
    pair would hold both models' bytes by the end)."""
    model_dir = Path(model_dir)
    files = weight_files(model_dir)

    def read(name: str) -> torch.Tensor:
        with open_weights(files[name], model_dir) as handle:
            return handle.get_tensor(name)

    return list(files), read


def tensor_diff(name: str, base: torch.Tensor, tuned: torch.Tensor) -> dict:
    """One row of the table: how `tuned` differs from `base` (same shape). The float32
    copies live one step at a time, so the peak is a few copies of this tensor."""
    row = {
        "name": name,
        "layer": layer_of(name),
        "kind": kind_of(name),
        "shape": tuple(base.shape),
        "dtype": dtype_name(base, tuned),
        "numel": base.numel(),
        "unchanged_exact": fraction(same_bits(base, tuned)),
        **elementwise_change(base, tuned),
    }
    if base.ndim == 2:
        row |= spectral_change(base, tuned, row["update_norm"] ** 2)
    return row


def elementwise_change(base: torch.Tensor, tuned: torch.Tensor) -> dict:
    """`unchanged_tol` and the norms, in float32 `CHUNK` elements at a time, so the float32
    copies stay small whatever the tensor (an 8B model's 128k-token embedding is 2 GB in
    float32)."""
    within, base_square, update_square = 0, 0.0, 0.0
    chunks = zip(base.reshape(-1).split(CHUNK), tuned.reshape(-1).split(CHUNK), strict=True)
    for before, after in chunks:
        weight = before.float()
        update = after.float() - weight
        within += int((update.abs() <= TOLERANCE).sum())
        base_square += torch.linalg.vector_norm(weight).item() ** 2
        update_square += torch.linalg.vector_norm(update).item() ** 2
    base_norm, update_norm = math.sqrt(base_square), math.sqrt(update_square)
    return {
        "unchanged_tol": within / base.numel() if base.numel() else 1.0,
        "rel_update_norm": ratio(update_norm, base_norm),
        "base_norm": base_norm,
        "update_norm": update_norm,
    }


def dtype_name(base: torch.Tensor, tuned: torch.Tensor) -> str:
    names = [str(t.dtype).removeprefix("torch.") for t in (base, tuned)]
    return names[0] if names[0] == names[1] else "->".join(names)


def same_bits(base: torch.Tensor, tuned: torch.Tensor) -> torch.Tensor:
    """Elementwise: bit-identical (value-equal across different dtypes)."""
    if base.dtype != tuned.dtype:
        return base == tuned
    as_int = SAME_WIDTH_INT[base.element_size()]
    return base.view(as_int) == tuned.view(as_int)


def fraction(mask: torch.Tensor) -> float:
    """The share of True in `mask` (1 for an empty tensor: nothing changed)."""
    return mask.sum().item() / mask.numel() if mask.numel() else 1.0


def spectral_change(base: torch.Tensor, tuned: torch.Tensor, energy: float) -> dict:
    """The matrix columns of a row; `energy` is ||tuned - base||_F^2."""
    if energy == 0:
        zeros = ("stable_rank", "rank90", "rank99", "principal_angle_deg", "top_sv_change")
        return {column: 0 for column in zeros}
    update_values, _ = singular(tuned.to(torch.float32, copy=True).sub_(base), vectors=False)
    held = update_values.double().square().cumsum(0)
    before_values, before = singular(base.float(), vectors=True)
    after_values, after = singular(tuned.float(), vectors=True)
    k = min(TOP_K, rank(before_values, base.shape), rank(after_values, base.shape))
    return {
        "stable_rank": energy / update_values[0].item() ** 2,
        **{column: rank_at(held, share * energy) for column, share in ENERGY_SHARES.items()},
        "principal_angle_deg": largest_angle_deg(before[:, :k], after[:, :k]),
        "top_sv_change": ratio(
            (after_values[0] - before_values[0]).item(), before_values[0].item()
        ),
    }


def singular(matrix: torch.Tensor, vectors: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Singular values, largest first, and (with `vectors`) the top `TOP_K` left singular
    vectors: exact up to `EXACT_SVD_MAX`, else the top `LOWRANK_Q` of `svd_lowrank`.
    LAPACK works on the tall orientation (much faster for a wide row-major matrix)."""
    tall = matrix.shape[0] >= matrix.shape[1]
    oriented = matrix if tall else matrix.T
    if min(matrix.shape) > EXACT_SVD_MAX:
        q = min(LOWRANK_Q, *matrix.shape)
        u, values, v = torch.svd_lowrank(oriented, q=q, niter=LOWRANK_NITER)
    elif vectors:
        u, values, vh = torch.linalg.svd(oriented, full_matrices=False)
        v = vh.mT
    else:
        return torch.linalg.svdvals(oriented), None
    return values, (u if tall else v)[:, :TOP_K].contiguous()  # a copy: frees the rest


def rank(values: torch.Tensor, shape: torch.Size) -> int:
    """Numerical rank: singular values above sigma_max * max(m, n) * float32 epsilon."""
    cutoff = values[0] * max(shape) * torch.finfo(torch.float32).eps
    return int((values > cutoff).sum())


def rank_at(held: torch.Tensor, threshold: float) -> int:
    """The smallest k with held[k - 1] >= threshold; len(held) + 1 where none reaches it."""
    return int(torch.searchsorted(held, threshold)) + 1


def largest_angle_deg(before: torch.Tensor, after: torch.Tensor) -> float:
    """The largest principal angle between the spans of two orthonormal bases, in degrees,
    from its sine and cosine together (accurate near 0 and near 90 degrees alike)."""
    if before.shape[1] == 0:
        return 0.0
    before, after = before.double(), after.double()
    overlap = before.T @ after
    cosine = torch.linalg.svdvals(overlap)[-1].item()
    sine = torch.linalg.matrix_norm(after - before @ overlap, ord=2).item()
    return math.degrees(math.atan2(sine, cosine))


def diff_models(base_dir: str | Path, tuned_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """One `tensor_diff` row per tensor the two models share, and notes on what could not
    be compared as is. Names that mostly do not match raise ValueError."""
    base_names, base = tensor_reader(base_dir)
    tuned_names, tuned = tensor_reader(tuned_dir)
    common = common_names(base_names, tuned_names)
    notes = [f"{name}: only in base" for name in sorted(set(base_names) - set(common))]
    notes += [f"{name}: only in tuned" for name in sorted(set(tuned_names) - set(common))]
    rows = []
    for name in sorted(common, key=table_order):
        before, after, note = aligned(name, base(name), tuned(name))
        notes += [note] if note else []
        if before.dtype != after.dtype:
            notes.append(f"{name}: stored as {dtype_name(before, after)}; exact compares values")
        if before.shape == after.shape:
            rows.append(tensor_diff(name, before, after))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.astype({"layer": "Int64", "rank90": "Int64", "rank99": "Int64"}), notes


def common_names(base: list[str], tuned: list[str]) -> list[str]:
    """The names on both sides; ValueError when fewer than half of either side's are."""
    common = set(base) & set(tuned)
    if 2 * len(common) < max(len(base), len(tuned)):

        def first(names: set[str]) -> str:
            listed = ", ".join(sorted(names)[:5])
            return listed + (f", ... ({len(names)} in all)" if len(names) > 5 else "")

        raise ValueError(
            f"the two models' tensor names do not match ({len(common)} in common of "
            f"{len(base)} and {len(tuned)}): only in base: {first(set(base) - common)}; "
            f"only in tuned: {first(set(tuned) - common)}"
        )
    return sorted(common)


def aligned(name: str, base: torch.Tensor, tuned: torch.Tensor):
    """`(base, tuned, note)`: a resized vocabulary cut to its common rows; shapes that
    differ otherwise are returned as they are, with a note that they are skipped."""
    if base.shape == tuned.shape:
        return base, tuned, None
    if base.ndim == tuned.ndim >= 1 and base.shape[1:] == tuned.shape[1:]:
        rows = min(len(base), len(tuned))
        note = (
            f"{name}: resized vocabulary ({len(base)} -> {len(tuned)} rows); "
            f"compared the {rows} common rows"
        )
        return base[:rows], tuned[:rows], note
    note = f"{name}: shapes {tuple(base.shape)} and {tuple(tuned.shape)} differ; skipped"
    return base, tuned, note
