"""The score file: what the writer writes, the reader reads back, every key of it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from circuitry.attribution.graph import build_graph
from circuitry.attribution.scorefile import (
    CONDITION,
    DIAGNOSTICS,
    SCORE_FILE_KEYS,
    EdgeScores,
    load_edge_scores,
    write_score_file,
)

N_SAMPLES = 5
CONDITION_VALUES = {
    "alpha": 0.3,
    "cut_len": 4,
    "reference_length": 13.5,
    "loss": "ce_unit",
    "role": "tuned",
    "text": "crossed",
    "text_role": "base",
    "model_type": "qwen2",
}


class RecordingMapping(Mapping):
    """A read-only view of an npz that records which keys were read."""

    def __init__(self, arrays: Mapping):
        self.arrays = arrays
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return self.arrays[key]

    def __iter__(self):
        return iter(self.arrays)

    def __len__(self):
        return len(self.arrays)


@pytest.fixture
def written(tmp_path):
    """A score file of two layers' graph and five samples, and what was written to it."""
    rng = np.random.default_rng(0)
    graph = build_graph(2)
    scores = rng.normal(size=(N_SAMPLES, *graph.edge_mask.shape)).astype(np.float32)
    scores[:, ~graph.edge_mask] = 0
    diagnostics = {name: rng.uniform(0.1, 3.0, N_SAMPLES) for name in DIAGNOSTICS}
    diagnostics["window_len"] = np.array([4, 4, 3, 4, 2])
    idx = np.array([11, 2, 7, 40, 5])
    path = tmp_path / "ce_unit" / "tuned_on_crossed.npz"
    write_score_file(
        path,
        scores=scores,
        diagnostics=diagnostics,
        idx=idx,
        graph=graph.as_arrays(),
        condition=CONDITION_VALUES,
    )
    return path, graph, scores, diagnostics, idx


def test_what_is_written_reads_back_field_by_field(written):
    path, graph, scores, diagnostics, idx = written
    loaded = load_edge_scores(path)
    np.testing.assert_array_equal(loaded.scores, scores)
    assert loaded.scores.dtype == np.float32
    np.testing.assert_array_equal(loaded.idx, idx)
    np.testing.assert_array_equal(loaded.edge_mask, graph.edge_mask)
    assert loaded.forward_nodes == graph.forward_nodes
    assert loaded.backward_nodes == graph.backward_nodes
    assert set(loaded.diagnostics) == set(DIAGNOSTICS)
    for name, values in diagnostics.items():
        np.testing.assert_array_equal(loaded.diagnostics[name], values)
    assert loaded.condition == CONDITION_VALUES
    assert {key: type(value) for key, value in loaded.condition.items()} == CONDITION


def test_every_written_key_is_read(written):
    path = written[0]
    with np.load(path, allow_pickle=False) as npz:
        recorded = RecordingMapping(npz)
        EdgeScores.from_npz(recorded)
        assert set(npz.files) == set(SCORE_FILE_KEYS)
        assert set(npz.files) - recorded.read == set()


def test_a_file_of_another_condition_than_expected_fails(written):
    path = written[0]
    assert load_edge_scores(path, role="tuned", text="crossed").condition["role"] == "tuned"
    with pytest.raises(ValueError, match=r"holds \{'role': 'tuned'\}, expected \{'role': 'base'"):
        load_edge_scores(path, role="base", text="crossed")


def test_the_writer_refuses_an_incomplete_file(tmp_path, written):
    _, graph, scores, diagnostics, idx = written
    arguments = {"scores": scores, "idx": idx, "graph": graph.as_arrays()}
    path = tmp_path / "incomplete.npz"
    with pytest.raises(ValueError, match=r"diagnostics \['window_len'\] missing"):
        write_score_file(
            path,
            diagnostics={k: v for k, v in diagnostics.items() if k != "window_len"},
            condition=CONDITION_VALUES,
            **arguments,
        )
    without_model_type = {k: v for k, v in CONDITION_VALUES.items() if k != "model_type"}
    with pytest.raises(ValueError, match="condition keys .* expected .*'model_type'"):
        write_score_file(path, diagnostics=diagnostics, condition=without_model_type, **arguments)
    assert not path.exists()


def test_missing_array_is_named(written):
    with np.load(written[0], allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files if key != "edge_mask"}
    with pytest.raises(ValueError, match=r"missing arrays \['edge_mask'\]"):
        EdgeScores.from_npz(arrays)


def test_non_finite_diagnostic_names_the_problem(written):
    with np.load(written[0], allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["window_entropy"] = np.array([0.1, 0.2, np.nan, 0.3, 0.4])
    with pytest.raises(ValueError, match=r"window_entropy is NaN or infinite for idx \[7\]"):
        EdgeScores.from_npz(arrays)
