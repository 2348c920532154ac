"""The record beside every generation file, whether the workflow generated its answers or
imported them: grades, the model's teacher-forced agreement with them, provenance."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from circuitry.data.grading import grade_rows
from circuitry.generation.resumable import teacher_forcing
from circuitry.models.loading import LoadedModel

log = logging.getLogger(__name__)


def generation_record(
    lm: LoadedModel,
    rows: list[dict],
    problems: Sequence[dict],
    *,
    batch_size: int,
    agreement_threshold: float,
    label: str,
) -> dict:
    """Grade `rows` in place against `problems`, read them back with the model's own
    forward (a warning below `agreement_threshold`: EAP would attribute text that forward
    would not have written), and return the provenance record of their file. `label`
    (model on dataset) starts the log lines."""
    accuracy = grade_rows(rows, problems)
    log.info("%s: accuracy %.3f over %d problems", label, accuracy, len(rows))
    forced = teacher_forcing(lm, rows, batch_size)
    if shortfall := forced.shortfall(agreement_threshold):
        log.warning("%s: %s", label, shortfall)
    return {
        **lm.provenance(),
        "accuracy": accuracy,
        "n": len(rows),
        "teacher_forcing": forced.as_dict(),
    }
