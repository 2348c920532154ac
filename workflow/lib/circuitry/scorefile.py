"""The EAP score file: what `eap_score` writes and the later stages read.

One uncompressed `.npz` of plain arrays (no pickles) per pair x dataset x alpha x loss x
model x text (`circuitry.paths.EAP_FILE`):

- `scores`: float32 `[n_samples, n_forward, n_backward]`, 0 on non-edges;
- `idx`: the problems, in the order of the pair file;
- `forward_nodes`, `backward_nodes`, `edge_mask`: the graph (`circuitry.graph`);
- per sample, `DIAGNOSTICS`: `window_ce` (mean cross-entropy of the window),
  `window_entropy` (mean predictive entropy over the window positions),
  `grad_logits_norm` (mean over window positions of ||dL/dz_t||_2 under the file's loss),
  `grad_final_norm_input` (Frobenius norm of dL/d(final-norm input) under the file's
  loss) and `window_len` (the window length used: `cut_len`, or the answer's length where
  that is shorter);
- the condition: `alpha`, `cut_len`, `reference_length`, `loss`, `role` (the scored
  model), `text` (`own` or `crossed`; the training dynamics' `initial` or `own`),
  `text_role` (whose answer was read) and `model_type` (the scored model's
  `config.model_type`, which says what context the paper's TransformerLens gave it).

Torch-free, so the stages that only read scores never load torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from circuitry.io import write_npz

# The EAP losses and the texts a model is scored on; the paper's condition is its loss,
# each model on its own answer.
LOSSES = ("ce", "ce_unit")
TEXTS = ("own", "crossed")
DIAGNOSTICS = (
    "window_ce",
    "window_entropy",
    "grad_logits_norm",
    "grad_final_norm_input",
    "window_len",
)


def write_score_file(
    path: str | os.PathLike,
    *,
    scores: np.ndarray,
    diagnostics: Mapping[str, np.ndarray],
    idx: np.ndarray,
    graph: Mapping[str, np.ndarray],
    condition: Mapping[str, object],
) -> None:
    """Write one score file atomically; `graph` is `Graph.as_arrays()`, `condition` the
    scalars that say what was scored (alpha, cut_len, reference_length, loss, role, text,
    text_role, model_type)."""
    missing = [name for name in DIAGNOSTICS if name not in diagnostics]
    if missing:
        raise ValueError(f"{path}: diagnostics {missing} missing")
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
    to its scores (`circuitry.eap.ScoredWindows`); `condition` is shared but for the loss."""
    for loss, result in scored.items():
        write_score_file(
            paths[loss],
            scores=result.scores,
            diagnostics=result.diagnostics,
            idx=idx,
            graph=graph,
            condition={**condition, "loss": loss},
        )
