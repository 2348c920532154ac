"""The EAP score file: its writer (`eap_score`) and its reader (every later stage).

One uncompressed `.npz` of plain arrays (no pickles) per pair x dataset x alpha x loss x
model x text (`circuitry.paths.EAP_FILE`):

- `GRAPH`: `scores`, float32 `[n_samples, n_forward, n_backward]`, 0 on non-edges;
  `idx`, the problems, in the order of the pair file; `forward_nodes`, `backward_nodes`,
  `edge_mask`, the graph (`circuitry.attribution.graph`);
- per sample, `DIAGNOSTICS`: `window_ce` (mean cross-entropy of the window),
  `window_entropy` (mean predictive entropy over the window positions),
  `grad_logits_norm` (mean over window positions of ||dL/dz_t||_2 under the file's loss),
  `grad_final_norm_input` (Frobenius norm of dL/d(final-norm input) under the file's
  loss) and `window_len` (the window length used: `cut_len`, or the answer's length where
  that is shorter);
- `CONDITION`, what was scored: `alpha`, `cut_len`, `reference_length`, `loss`, `role`
  (the scored model), `text` (`own` or `crossed`; the training dynamics' `initial` or
  `own`), `text_role` (whose answer was read) and `model_type` (the scored model's
  `config.model_type`, which says what context the paper's TransformerLens gave it).

The reader reads every key the writer writes (a test holds them to it) and checks the
file against itself, so a later stage fails on a bad file with a message naming it.
Torch-free, so the stages that only read scores never load torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from circuitry.io import write_npz

# The EAP losses; the paper's condition is its loss, each model on its own answer.
LOSSES = ("ce", "ce_unit", "target_unit")
GRAPH = ("scores", "idx", "edge_mask", "forward_nodes", "backward_nodes")
DIAGNOSTICS = (
    "window_ce",
    "window_entropy",
    "grad_logits_norm",
    "grad_final_norm_input",
    "window_len",
)
# each condition key and the type it reads back as
CONDITION: dict[str, type] = {
    "alpha": float,
    "cut_len": int,
    "reference_length": float,
    "loss": str,
    "role": str,
    "text": str,
    "text_role": str,
    "model_type": str,
}
SCORE_FILE_KEYS = (*GRAPH, *DIAGNOSTICS, *CONDITION)


@dataclass(frozen=True)
class EdgeScores:
    """The EAP output of one model: scores `[n_samples, n_forward, n_backward]`, its graph,
    the per-sample `DIAGNOSTICS` of the windows and the `CONDITION` scored (both empty for
    scores that come from no file)."""

    scores: np.ndarray
    idx: np.ndarray
    edge_mask: np.ndarray
    forward_nodes: tuple[str, ...]
    backward_nodes: tuple[str, ...]
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)
    condition: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_npz(cls, source: str | os.PathLike | Mapping) -> EdgeScores:
        """Read a score file (a path or its loaded contents), checking its own consistency."""
        if isinstance(source, Mapping):
            return cls._from_arrays(source, "npz contents")
        with np.load(source, allow_pickle=False) as npz:
            return cls._from_arrays(npz, str(source))

    @classmethod
    def _from_arrays(cls, arrays: Mapping, where: str) -> EdgeScores:
        missing = [key for key in SCORE_FILE_KEYS if key not in arrays]
        if missing:
            raise ValueError(f"{where}: missing arrays {missing} (rerun the EAP job that wrote it)")
        edge_scores = cls(
            scores=np.asarray(arrays["scores"]),
            idx=np.asarray(arrays["idx"]),
            edge_mask=np.asarray(arrays["edge_mask"], dtype=bool),
            forward_nodes=tuple(str(name) for name in arrays["forward_nodes"]),
            backward_nodes=tuple(str(name) for name in arrays["backward_nodes"]),
            diagnostics={name: np.asarray(arrays[name], dtype=np.float64) for name in DIAGNOSTICS},
            condition={key: kind(arrays[key]) for key, kind in CONDITION.items()},
        )
        edge_scores.check(where)
        return edge_scores

    def check(self, where: str = "edge scores") -> None:
        """Raise ValueError unless shapes, mask, idx and values agree with each other."""
        if self.scores.ndim != 3:
            raise ValueError(
                f"{where}: scores must be [n_samples, n_forward, n_backward], "
                f"got shape {self.scores.shape}"
            )
        n_samples, n_forward, n_backward = self.scores.shape
        if n_samples == 0:
            raise ValueError(f"{where}: no samples")
        if self.edge_mask.shape != (n_forward, n_backward):
            raise ValueError(
                f"{where}: edge_mask shape {self.edge_mask.shape} does not match scores "
                f"[{n_forward}, {n_backward}]"
            )
        if (len(self.forward_nodes), len(self.backward_nodes)) != (n_forward, n_backward):
            raise ValueError(
                f"{where}: {len(self.forward_nodes)} forward / {len(self.backward_nodes)} "
                f"backward node names for scores of shape {self.scores.shape}"
            )
        if not self.edge_mask.any():
            raise ValueError(f"{where}: edge_mask has no real edge")
        if self.idx.shape != (n_samples,):
            raise ValueError(f"{where}: idx shape {self.idx.shape}, expected ({n_samples},)")
        if len(np.unique(self.idx)) != n_samples:
            raise ValueError(f"{where}: idx has duplicates")
        if not np.isfinite(self.scores).all():
            raise ValueError(f"{where}: scores contain NaN or infinite values")
        if np.any(self.scores[:, ~self.edge_mask]):
            raise ValueError(f"{where}: non-zero scores on non-edges (edge_mask does not match)")
        for name, values in self.diagnostics.items():
            if values.shape != (n_samples,):
                raise ValueError(f"{where}: {name} shape {values.shape}, expected ({n_samples},)")
            if not np.isfinite(values).all():
                bad = self.idx[~np.isfinite(values)].tolist()
                raise ValueError(f"{where}: {name} is NaN or infinite for idx {bad}")

    @property
    def edge_values(self) -> np.ndarray:
        """Real-edge scores `[n_samples, n_edges]` in float64, edges in row-major mask order."""
        return self.scores[:, self.edge_mask].astype(np.float64)


def load_edge_scores(path: str | os.PathLike, **expected) -> EdgeScores:
    """One score file, checked (ValueError naming the file if it is inconsistent, or if
    its condition differs from the `expected` values, e.g. `role="base"`)."""
    edge_scores = EdgeScores.from_npz(path)
    wrong = {
        key: edge_scores.condition[key]
        for key, value in expected.items()
        if edge_scores.condition[key] != value
    }
    if wrong:
        raise ValueError(f"{path}: holds {wrong}, expected {expected}")
    return edge_scores


def write_score_file(
    path: str | os.PathLike,
    *,
    scores: np.ndarray,
    diagnostics: Mapping[str, np.ndarray],
    idx: np.ndarray,
    graph: Mapping[str, np.ndarray],
    condition: Mapping[str, object],
) -> None:
    """Write one score file atomically; `graph` is `Graph.as_arrays()`, `condition` holds
    every `CONDITION` key and nothing else."""
    missing = [name for name in DIAGNOSTICS if name not in diagnostics]
    if missing:
        raise ValueError(f"{path}: diagnostics {missing} missing")
    if set(condition) != set(CONDITION):
        raise ValueError(
            f"{path}: condition keys {sorted(condition)}, expected {sorted(CONDITION)}"
        )
    write_npz(
        path,
        scores=scores,
        idx=np.asarray(idx),
        **{name: np.asarray(diagnostics[name]) for name in DIAGNOSTICS},
        **{key: np.asarray(value) for key, value in condition.items()},
        **graph,
    )


def write_score_files(
    paths: Mapping[str, str | os.PathLike],
    scored: Mapping[str, object],
    *,
    idx: np.ndarray,
    graph: Mapping[str, np.ndarray],
    condition: Mapping[str, object],
) -> None:
    """Write one score file per loss: `paths` and `scored` map each loss to its file and
    to its scores (`circuitry.attribution.eap.ScoredWindows`); `condition` is shared but
    for the loss."""
    for loss, result in scored.items():
        write_score_file(
            paths[loss],
            scores=result.scores,
            diagnostics=result.diagnostics,
            idx=idx,
            graph=graph,
            condition={**condition, "loss": loss},
        )
