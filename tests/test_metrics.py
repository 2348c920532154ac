"""Circuit metrics on a graph small enough to compute every value by hand."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from circuitry.analysis.circuit_metrics import (
    check_paired,
    compute_circuit_metrics,
    edge_relative_change,
)
from circuitry.analysis.metrics import (
    HEADLINE_METRICS,
    METRICS,
    PER_SAMPLE_METRICS,
    POOLED_METRICS,
    metric_definitions,
)
from circuitry.analysis.pooled_metrics import PairedEdgeStack, cross_sample_diversity
from circuitry.analysis.sample_metrics import (
    excess_kurtosis,
    histogram_entropy,
    histogram_upper,
    mass_entropy,
    own_grid_histogram_entropy,
)
from circuitry.attribution.scorefile import EdgeScores

FORWARD = ("input", "a0")
BACKWARD = ("a0.q", "m0", "logits")
# a0 writes after a0.q reads: the only non-edge. Real edges in row-major order:
# input->a0.q, input->m0, input->logits, a0->m0, a0->logits.
MASK = np.array([[True, True, True], [False, True, True]])
BASE = np.array(
    [
        [[2, -2, 0], [0, 1, -1]],  # real-edge w = [2, -2, 0, 1, -1]
        [[1, 0, 0], [0, 0, 0]],  # real-edge w = [1, 0, 0, 0, 0]
    ],
    dtype=np.float32,
)
TUNED = np.array(
    [
        [[4, -4, 0], [0, 2, -2]],  # twice base sample 0
        [[0, 0, 0], [0, 0, 3]],  # real-edge w = [0, 0, 0, 0, 3]
    ],
    dtype=np.float32,
)
IDX = np.array([7, 3])


def edge_scores(scores, idx=IDX, mask=MASK) -> EdgeScores:
    return EdgeScores(np.asarray(scores), np.asarray(idx), mask, FORWARD, BACKWARD)


def entropy(*p) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


@pytest.fixture(scope="module")
def result():
    # Histogram grid: U = max |w| = 4 (quantile 1), 4 bins of width 1.
    return compute_circuit_metrics(
        edge_scores(BASE), edge_scores(TUNED), hist_bins=4, hist_upper_quantile=1.0
    )


def per_sample(result, metric, role) -> list[float]:
    table = result.per_sample
    rows = table[(table["metric"] == metric) & (table["role"] == role)]
    assert rows["idx"].tolist() == IDX.tolist()
    return rows["value"].tolist()


def test_tidy_table_layout(result):
    assert list(result.per_sample.columns) == ["text", "role", "idx", "metric", "value"]
    assert len(result.per_sample) == len(PER_SAMPLE_METRICS) * 2 * len(IDX)
    assert result.texts == ("own",)


def test_crossed_scores_share_the_histogram_grid():
    """Each model on the other's text joins the table, on one grid over all four files."""
    crossed = {"base": edge_scores(TUNED), "tuned": edge_scores(BASE)}
    both = compute_circuit_metrics(
        edge_scores(BASE),
        edge_scores(TUNED),
        crossed=crossed,
        hist_bins=4,
        hist_upper_quantile=1.0,
    )
    assert both.texts == ("own", "crossed")
    assert len(both.per_sample) == len(PER_SAMPLE_METRICS) * 4 * len(IDX)
    assert both.values("intensity", "base", "crossed") == pytest.approx([12 / 5, 3 / 5])
    assert both.values("entropy_hist", "tuned", "crossed") == pytest.approx(
        both.values("entropy_hist", "base", "own")
    )
    with pytest.raises(ValueError, match="both roles"):
        compute_circuit_metrics(edge_scores(BASE), edge_scores(TUNED), crossed={"base": BASE})


def test_intensity(result):
    assert per_sample(result, "intensity", "base") == pytest.approx([6 / 5, 1 / 5])
    assert per_sample(result, "intensity", "tuned") == pytest.approx([12 / 5, 3 / 5])


def test_entropy_of_normalised_mass(result):
    # base sample 0: |w| = [2, 2, 0, 1, 1] -> p = [1/3, 1/3, 0, 1/6, 1/6]; one edge -> 0
    expected = [entropy(1 / 3, 1 / 3, 1 / 6, 1 / 6), 0.0]
    assert per_sample(result, "entropy", "base") == pytest.approx(expected)
    assert per_sample(result, "entropy", "tuned") == pytest.approx(expected)
    assert expected[0] == pytest.approx(2 / 3 * math.log(3) + 1 / 3 * math.log(6))


def test_entropy_of_histogram(result):
    # bins [0,1) [1,2) [2,3) [3,4]: base 0 |w| = [2,2,0,1,1] -> counts [1,2,2,0];
    # base 1 [1,0,0,0,0] -> [4,1,0,0]; tuned 0 [4,4,0,2,2] -> [1,0,2,2] (4 in the last bin);
    # tuned 1 [0,0,0,0,3] -> [4,0,0,1].
    expected = [entropy(0.2, 0.4, 0.4), entropy(0.8, 0.2)]
    assert per_sample(result, "entropy_hist", "base") == pytest.approx(expected)
    assert per_sample(result, "entropy_hist", "tuned") == pytest.approx(expected)
    assert result.histogram == {"bins": 4, "upper": 4.0, "upper_quantile": 1.0}


def test_histogram_entropy_bin_edges():
    # upper 4, 4 bins: 0.5 -> bin 0, 1 -> bin 1 (left-closed), 3.9 -> 3, 4 and 10 -> last bin
    counts_entropy = histogram_entropy(np.array([[0.5, 1.0, 1.5, 3.9, 4.0, 10.0]]), 4.0, 4)
    assert counts_entropy == pytest.approx([entropy(1 / 6, 2 / 6, 3 / 6)])
    assert histogram_entropy(np.zeros((1, 3)), 0.0, 4) == pytest.approx([0.0])


def test_histogram_upper_is_a_quantile_of_both_roles():
    base, tuned = np.arange(0, 51.0), np.arange(51, 101.0)
    assert histogram_upper(base, tuned, quantile=0.99) == pytest.approx(99.0)


def test_kurtosis_of_w_and_of_abs_w(result):
    # base 0: w = [2,-2,0,1,-1], mean 0, m2 = 10/5, m4 = 34/5 -> 6.8/2**2 - 3 = -1.3
    # |w| = [2,2,0,1,1], mean 1.2, m2 = 2.8/5 = 0.56, m4 = 2.896/5 = 0.5792
    # sample 1: [1,0,0,0,0], mean 0.2, m2 = 0.8/5 = 0.16, m4 = 0.416/5 = 0.0832 -> 0.25
    assert per_sample(result, "kurtosis", "base") == pytest.approx([-1.3, 0.25])
    assert per_sample(result, "kurtosis_abs", "base") == pytest.approx([0.5792 / 0.56**2 - 3, 0.25])
    # scale-free: tuned 0 is 2 * base 0; tuned 1 = [0,0,0,0,3] has sample 1's shape
    assert per_sample(result, "kurtosis", "tuned") == pytest.approx([-1.3, 0.25])


def test_kurtosis_of_a_constant_row_is_nan():
    assert np.isnan(excess_kurtosis(np.ones((1, 4))))[0]


def test_node_entropy(result):
    # base 0: input [2,2,0] -> ln 2, a0 [1,1] -> ln 2; base 1: input [1,0,0] -> 0, a0 all 0
    base = result.node_entropy["base"]
    assert base.shape == (2, 2)
    assert base[0] == pytest.approx([math.log(2), math.log(2)])
    assert base[1, 0] == pytest.approx(0.0)
    assert np.isnan(base[1, 1])
    # tuned 1: input [0,0,0] -> NaN, a0 [0,3] -> 0
    assert np.isnan(result.node_entropy["tuned"][1, 0])
    # the per-sample summary averages the defined nodes
    assert per_sample(result, "node_entropy", "base") == pytest.approx([math.log(2), 0.0])
    assert per_sample(result, "node_entropy", "tuned") == pytest.approx([math.log(2), 0.0])


def test_cross_sample_diversity(result):
    # base: cos([2,2,0,1,1], [1,0,0,0,0]) = 2 / sqrt(10); tuned: 6 / (sqrt(40) * 3)
    assert result.pooled["diversity"]["base"] == pytest.approx(1 - 2 / math.sqrt(10))
    assert result.pooled["diversity"]["tuned"] == pytest.approx(1 - 1 / math.sqrt(10))
    three = np.array([[1.0, 0], [0, 1], [1, 1]])
    # pairs: (1,2) distance 1, (1,3) and (2,3) distance 1 - 1/sqrt(2)
    assert cross_sample_diversity(three) == pytest.approx((3 - 2 / math.sqrt(2)) / 3)
    assert np.isnan(cross_sample_diversity(three[:1]))


def test_profile_metrics(result):
    # base mean |w| = [1.5, 1, 0, 0.5, 0.5] (sum 3.5); mean w = [1.5, -1, 0, 0.5, -0.5]
    # (mean 0.1, m2 = 3.7/5 = 0.74, m4 = 5.461/5 = 1.0922)
    assert result.pooled["profile_entropy"]["base"] == pytest.approx(
        entropy(3 / 7, 2 / 7, 1 / 7, 1 / 7)
    )
    assert result.pooled["profile_kurtosis"]["base"] == pytest.approx(1.0922 / 0.74**2 - 3)
    # tuned mean |w| = [2, 2, 0, 1, 2.5] (sum 7.5); mean w = [2, -2, 0, 1, 0.5]
    # (mean 0.3, m2 = 8.8/5 = 1.76, m4 = 36.586/5 = 7.3172)
    assert result.pooled["profile_entropy"]["tuned"] == pytest.approx(
        entropy(4 / 15, 4 / 15, 2 / 15, 5 / 15)
    )
    assert result.pooled["profile_kurtosis"]["tuned"] == pytest.approx(7.3172 / 1.76**2 - 3)


def test_pooled_readings_of_the_paper(result):
    # every sample x edge |w| of a role as one distribution: base 2,2,0,1,1 | 1,0,0,0,0
    assert result.pooled["pooled_entropy"]["base"] == pytest.approx(
        entropy(2 / 7, 2 / 7, 1 / 7, 1 / 7, 1 / 7)
    )
    # tuned 4,4,0,2,2 | 0,0,0,0,3
    assert result.pooled["pooled_entropy"]["tuned"] == pytest.approx(
        entropy(4 / 15, 4 / 15, 2 / 15, 2 / 15, 3 / 15)
    )
    # unit bins on [0, 4]: base counts [5, 3, 2, 0]; tuned [5, 0, 2, 3] (4 >= U: last bin)
    assert result.pooled["pooled_entropy_hist"]["base"] == pytest.approx(entropy(0.5, 0.3, 0.2))
    assert result.pooled["pooled_entropy_hist"]["tuned"] == pytest.approx(entropy(0.5, 0.2, 0.3))


def test_diversity_readings(result):
    # signed: base cos = 2 / sqrt(10) as for |w|; tuned cos(w) = -6 / (sqrt(40) * 3)
    assert result.pooled["diversity_signed"]["base"] == pytest.approx(1 - 2 / math.sqrt(10))
    assert result.pooled["diversity_signed"]["tuned"] == pytest.approx(1 + 1 / math.sqrt(10))
    # per-edge std / mean of |w| over the two samples; edge input->logits is 0 in both
    # base: [2,1] -> 1/3, [2,0] [1,0] [1,0] -> 1; tuned: [4,0] [4,0] [2,0] -> 1, [2,3] -> 0.2
    assert result.pooled["diversity_cv"]["base"] == pytest.approx((1 / 3 + 3) / 4)
    assert result.pooled["diversity_cv"]["tuned"] == pytest.approx(3.2 / 4)


def test_pooled_readings_match_a_direct_computation():
    # an independent reading of each definition on the selected rows themselves
    rng = np.random.default_rng(3)
    base, tuned = rng.standard_t(3, size=(7, 40)), rng.standard_t(3, size=(7, 40))
    stack = PairedEdgeStack(base, tuned, hist_upper=2.0, hist_bins=8)
    rows = rng.integers(0, 2, size=7) * 7 + np.arange(7)
    a = np.abs(np.concatenate([base, tuned])[rows])
    counts, _ = np.histogram(np.minimum(a, 2.0), bins=8, range=(0.0, 2.0))
    direct = {
        "pooled_entropy": stats.entropy(a.ravel()),
        "pooled_entropy_hist": stats.entropy(counts),
        "diversity_cv": np.mean(a.std(axis=0) / a.mean(axis=0)),
        "profile_entropy": stats.entropy(a.mean(axis=0)),
    }
    for metric, value in direct.items():
        assert stack.pooled(metric, rows) == pytest.approx(value), metric


def test_identical_roles_give_identical_pooled_values():
    # an odd n puts the tuned rows off the SIMD lanes of the base rows; the values must
    # still be bit-identical, or an identity control reports a change of 1e-15
    w = np.random.default_rng(5).standard_t(3, size=(101, 37))
    stack = PairedEdgeStack(w, w.copy())
    for metric, value in stack.pooled_values().items():
        assert value["base"] == value["tuned"], metric


def test_edge_relative_change(result):
    # base mean |w|: [[1.5, 1, 0], [-, 0.5, 0.5]]; tuned: [[2, 2, 0], [-, 1, 2.5]]
    expected = np.array([[1 / 3, 1.0, 0.0], [np.nan, 1.0, 4.0]])
    np.testing.assert_allclose(result.edge_change, expected)


def test_relative_change_from_a_zero_base_mean():
    mask = np.array([[True, True, True, False]])
    base = np.array([[0.0, 0.0, 2.0, 0.0]])
    tuned = np.array([[0.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(
        edge_relative_change(base, tuned, mask), [[0.0, np.nan, -0.5, np.nan]]
    )


def test_mass_entropy_of_zero_mass_is_nan():
    assert np.isnan(mass_entropy(np.zeros(3)))


def test_pooled_change_matches_two_pooled_values():
    # random relabellings of 6 idx: row i (base) or 6 + i (tuned); the partner is the other
    rng = np.random.default_rng(0)
    stack = PairedEdgeStack(rng.normal(size=(6, 9)), rng.normal(size=(6, 9)))
    rows = rng.integers(0, 2, size=(5, 6)) * 6 + np.arange(6)
    for metric in POOLED_METRICS:
        np.testing.assert_allclose(
            stack.pooled_change(metric, rows),
            stack.pooled(metric, (rows + 6) % 12) - stack.pooled(metric, rows),
        )


def test_summary_is_json_safe(result):
    summary = result.summary()
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["edge_relative_change"][1][0] is None
    assert summary["node_entropy_mean"]["base"] == pytest.approx([math.log(2) / 2, math.log(2)])
    assert summary["n_samples"] == 2 and summary["n_edges"] == 5
    assert set(summary["definitions"]) == set(METRICS)


def test_metric_table_names_headlines_and_directions():
    table = metric_definitions().set_index("name")
    headline = table[table["headline"]]
    assert headline.loc["entropy", "variant"] == "normalised edge mass"
    assert headline.loc["kurtosis", "variant"] == "w"
    assert not table.loc["entropy_hist", "headline"] and not table.loc["kurtosis_abs", "headline"]
    assert table.loc["intensity", "expected"] == 1
    assert table.loc["entropy", "expected"] == 1
    assert table.loc["kurtosis", "expected"] == -1
    assert table.loc["diversity", "expected"] == 1
    assert set(table["kind"]) == {"per-sample", "pooled"}
    assert HEADLINE_METRICS == ("intensity", "entropy", "kurtosis", "diversity")


@pytest.mark.parametrize(
    ("base", "tuned", "message"),
    [
        (edge_scores(BASE), edge_scores(TUNED, idx=[3, 7]), "idx differ"),
        (edge_scores(BASE), edge_scores(TUNED[:1], idx=[7]), "idx differ"),
        (edge_scores(BASE), edge_scores(TUNED, mask=~MASK), "edge_mask differ|non-edges"),
        (edge_scores(BASE), edge_scores(TUNED, mask=MASK[:, :2]), "edge_mask shape"),
        (edge_scores(BASE), edge_scores(TUNED[:, :, :2]), "edge_mask shape"),
        (edge_scores(BASE), edge_scores(np.where(MASK, np.nan, 0)[None], idx=[7]), "NaN"),
        (edge_scores(BASE[:0], idx=[]), edge_scores(TUNED[:0], idx=[]), "no samples"),
        (edge_scores(BASE, idx=[7, 7]), edge_scores(TUNED, idx=[7, 7]), "duplicates"),
        (edge_scores(BASE + np.float32(~MASK)), edge_scores(TUNED), "non-zero scores on non"),
    ],
)
def test_invalid_inputs_fail_clearly(base, tuned, message):
    with pytest.raises(ValueError, match=message):
        check_paired(base, tuned)


def test_mask_mismatch_between_roles():
    # the same zero pattern under both masks, so each role is valid on its own
    scores = np.zeros((2, 2, 3), dtype=np.float32)
    other = MASK.copy()
    other[1, 0] = True
    with pytest.raises(ValueError, match="edge_mask differ"):
        check_paired(edge_scores(scores), edge_scores(scores, mask=other))


def test_score_files_of_different_conditions_are_not_paired():
    condition = {"alpha": 0.5, "cut_len": 3, "reference_length": 6.0, "loss": "ce"}
    base = dataclasses.replace(edge_scores(BASE), condition=condition)
    tuned = dataclasses.replace(edge_scores(TUNED), condition=condition | {"cut_len": 4})
    with pytest.raises(ValueError, match=r"different conditions.*'cut_len': \(3, 4\)"):
        check_paired(base, tuned)
    check_paired(base, dataclasses.replace(tuned, condition=condition))


def test_readings_the_paper_leaves_open_by_hand(result):
    """Base sample 0: real-edge w = [2, -2, 0, 1, -1], full matrix [2, -2, 0, 0, 1, -1];
    tuned sample 0 is twice it."""
    full = [2, -2, 0, 0, 1, -1]
    assert per_sample(result, "kurtosis_full", "base")[0] == pytest.approx(
        float(excess_kurtosis(np.array(full, dtype=float)))
    )
    assert per_sample(result, "kurtosis_pearson", "base")[0] == pytest.approx(
        per_sample(result, "kurtosis", "base")[0] + 3
    )
    # shared grid U = 4, 4 bins: real edges |w| 2, 2, 0, 1, 1 -> bins {0: 1, 1: 2, 2: 2};
    # the full matrix adds one zero -> {0: 2, 1: 2, 2: 2}
    assert per_sample(result, "entropy_hist", "base")[0] == pytest.approx(entropy(0.2, 0.4, 0.4))
    assert per_sample(result, "entropy_hist_full", "base")[0] == pytest.approx(math.log(3))
    # the own grid ends at the sample's max (quantile 1): [0, 2] in bins of 0.5 ->
    # {0: 1, 2: 2, 3: 2}; the tuned sample, twice the base, reads the same
    own = per_sample(result, "entropy_hist_sample", "base")[0]
    assert own == pytest.approx(entropy(0.2, 0.4, 0.4))
    assert per_sample(result, "entropy_hist_sample", "tuned")[0] == pytest.approx(own)
    # out-degrees: input 3 (|w| 2, 2, 0), a0 2 (|w| 1, 1): entropies log 2 and log 2
    assert per_sample(result, "node_entropy_norm", "base")[0] == pytest.approx(
        (math.log(2) / math.log(3) + math.log(2) / math.log(2)) / 2
    )


def test_own_grid_histogram_entropy_is_scale_free_and_the_shared_grid_is_not():
    a = np.array([[0.1, 0.5, 1.0, 3.0, 10.0]])
    own = own_grid_histogram_entropy(a, quantile=1.0, bins=4)
    assert own_grid_histogram_entropy(a / 7, quantile=1.0, bins=4) == pytest.approx(own)
    assert histogram_entropy(a / 7, 10.0, 4) != pytest.approx(histogram_entropy(a, 10.0, 4))
