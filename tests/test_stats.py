"""Paired statistics: known effects are found, the null holds its level, BH and seeds are exact."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from circuitry.metrics import (
    PER_SAMPLE_METRICS,
    POOLED_METRICS,
    EdgeScores,
    PairedEdgeStack,
    compute_circuit_metrics,
    load_edge_scores,
)
from circuitry.stats import (
    COLUMNS,
    MIN_PAIRS,
    assemble_tests_table,
    compare_roles,
    paired_sample_test,
    percent_change,
    pooled_permutation_test,
    rank_biserial,
    row_rng,
    with_fdr,
    write_tests_table,
)

N_NULL = 400


def null_band(n_tests: int, level: float = 0.05) -> tuple[float, float]:
    """99.9% binomial interval of the rejection rate of `n_tests` independent level tests."""
    low, high = sps.binom.interval(0.999, n_tests, level)
    return low / n_tests, high / n_tests


def synthetic_scores(rng, n_samples, scale, noise) -> EdgeScores:
    """Random scores on a 3 x 4 graph with one non-edge; `noise` varies samples apart."""
    mask = np.ones((3, 4), dtype=bool)
    mask[2, 0] = False
    profile = rng.standard_t(3, size=(3, 4))
    scores = scale * (profile + noise * rng.normal(size=(n_samples, 3, 4)))
    scores[:, ~mask] = 0
    return EdgeScores(
        scores.astype(np.float32),
        np.arange(n_samples),
        mask,
        ("input", "a0", "m0"),
        ("a0.q", "a0.k", "m0", "logits"),
    )


def test_percent_change_is_relative_to_the_absolute_base_mean():
    assert percent_change(2.0, 3.0) == pytest.approx(50.0)
    assert percent_change(-2.0, -1.0) == pytest.approx(50.0)
    assert np.isnan(percent_change(0.0, 1.0))


def test_rank_biserial_by_hand():
    # non-zero differences 1, -2, 3 -> ranks 1, 2, 3; T+ = 4, T- = 2 -> (4 - 2) / 6
    assert rank_biserial(np.array([1.0, -2.0, 3.0, 0.0])) == pytest.approx(1 / 3)
    assert rank_biserial(np.array([-1.0, -5.0])) == pytest.approx(-1.0)
    assert np.isnan(rank_biserial(np.zeros(4)))


@pytest.mark.parametrize("shift", [1.0, -1.0])
def test_paired_test_detects_a_known_shift(shift):
    rng = np.random.default_rng(1)
    base = rng.normal(10, 1, size=30)
    tuned = base + shift + rng.normal(0, 0.5, size=30)
    result = paired_sample_test(base, tuned, rng=np.random.default_rng(2), n_resamples=999)
    assert result["n"] == 30
    assert result["p"] < 1e-4
    assert result["change"] == pytest.approx((tuned - base).mean())
    assert result["change_pct"] == pytest.approx(100 * result["change"] / base.mean())
    assert np.sign(result["effect_size"]) == np.sign(shift) and abs(result["effect_size"]) > 0.8
    assert result["ci_low"] < result["change"] < result["ci_high"]
    assert (result["ci_low"] > 0) if shift > 0 else (result["ci_high"] < 0)
    assert result["ci_pct_low"] < 10 * shift < result["ci_pct_high"]
    assert result["note"] == ""


def test_paired_test_holds_its_level_under_the_null():
    rng = np.random.default_rng(3)
    rejections = 0
    for _ in range(N_NULL):
        base, tuned = rng.normal(size=(2, 20))
        result = paired_sample_test(base, tuned, rng=rng, n_resamples=99)
        rejections += result["p"] < 0.05
    low, high = null_band(N_NULL)
    assert low <= rejections / N_NULL <= high


def test_degenerate_per_sample_inputs_give_nan_and_a_reason():
    few = paired_sample_test(np.arange(5.0), np.arange(5.0) + 1, rng=np.random.default_rng(0))
    assert few["n"] == 5 < MIN_PAIRS and np.isnan(few["p"]) and "not tested" in few["note"]
    assert few["change"] == pytest.approx(1.0)
    same = paired_sample_test(np.arange(8.0), np.arange(8.0), rng=np.random.default_rng(0))
    assert np.isnan(same["p"]) and "all paired differences are zero" in same["note"]
    assert np.isnan(same["ci_low"]) and np.isnan(same["effect_size"])
    # every resample has the same change: BCa is undefined, the percentile CI is exact
    shift = paired_sample_test(np.ones(8), np.full(8, 2.0), rng=np.random.default_rng(0))
    assert (shift["ci_low"], shift["ci_high"]) == (1.0, 1.0)
    assert (shift["ci_pct_low"], shift["ci_pct_high"]) == (100.0, 100.0)
    assert "percentile CI" in shift["note"]
    empty = paired_sample_test(np.array([]), np.array([]), rng=np.random.default_rng(0))
    assert empty["n"] == 0 and np.isnan(empty["base"]) and np.isnan(empty["p"])


def test_undefined_values_drop_their_pair():
    rng = np.random.default_rng(4)
    base = rng.normal(size=12)
    tuned = base + 2
    base[0], tuned[5] = np.nan, np.nan
    result = paired_sample_test(base, tuned, rng=rng, n_resamples=99)
    assert result["n"] == 10
    assert result["change"] == pytest.approx(2.0)
    assert "dropped 2 pairs" in result["note"]


def diverse_stack(rng, n, base_noise, tuned_noise, n_edges=20) -> PairedEdgeStack:
    """Rows around one shared profile; more noise -> more diverse, flatter circuits."""
    profile = rng.standard_t(3, size=n_edges)
    return PairedEdgeStack(
        profile + base_noise * rng.normal(size=(n, n_edges)),
        profile + tuned_noise * rng.normal(size=(n, n_edges)),
    )


def test_permutation_test_detects_higher_diversity():
    stack = diverse_stack(np.random.default_rng(5), 12, base_noise=0.1, tuned_noise=2.0)
    result = pooled_permutation_test(
        stack, "diversity", rng=np.random.default_rng(6), n_resamples=999
    )
    assert result["tuned"] > result["base"]
    assert result["p"] < 0.01
    assert np.isnan(result["ci_low"]) and np.isnan(result["effect_size"])


def test_permutation_test_holds_its_level_under_the_null():
    # n = 8: 2**8 = 256 relabellings, enumerated exactly since n_resamples >= 256; a fresh
    # data set per test, so the tests of all metrics together are independent too
    rng = np.random.default_rng(7)
    per_metric = N_NULL // 2
    rejections = {}
    for metric in POOLED_METRICS:
        rejections[metric] = 0
        for _ in range(per_metric):
            stack = diverse_stack(rng, 8, base_noise=1.0, tuned_noise=1.0, n_edges=10)
            result = pooled_permutation_test(stack, metric, rng=rng, n_resamples=1000)
            rejections[metric] += result["p"] < 0.05
    for count in rejections.values():
        low, high = null_band(per_metric)
        assert low <= count / per_metric <= high
    n_tests = per_metric * len(POOLED_METRICS)
    low, high = null_band(n_tests)
    assert low <= sum(rejections.values()) / n_tests <= high


def test_degenerate_pooled_inputs_give_nan_and_a_reason():
    rng = np.random.default_rng(8)
    rows = rng.normal(size=(8, 5))
    same = pooled_permutation_test(PairedEdgeStack(rows, rows), "diversity", rng=rng)
    assert np.isnan(same["p"]) and "identical" in same["note"]
    few = pooled_permutation_test(PairedEdgeStack(rows[:3], rows[3:6]), "diversity", rng=rng)
    assert np.isnan(few["p"]) and "pairs" in few["note"]
    zero = rows.copy()
    zero[0] = 0
    undefined = pooled_permutation_test(PairedEdgeStack(zero, rows), "diversity", rng=rng)
    assert np.isnan(undefined["p"]) and "undefined" in undefined["note"]


def test_benjamini_hochberg_by_hand_and_nan_safe():
    table = pd.DataFrame({"p": [0.001, 0.04, 0.041, 0.9, np.nan]})
    # m = 4 tested: p*m/rank = 0.004, 0.08, 0.05467, 0.9; step-up minimum from the top
    q = with_fdr(table)["q"].to_numpy()
    np.testing.assert_allclose(q, [0.004, 0.041 * 4 / 3, 0.041 * 4 / 3, 0.9, np.nan])
    assert with_fdr(pd.DataFrame({"p": [np.nan, np.nan]}))["q"].isna().all()


@pytest.fixture(scope="module")
def condition():
    rng = np.random.default_rng(9)
    base = synthetic_scores(rng, 16, scale=1.0, noise=0.3)
    louder = base.scores * 1.5 + rng.normal(0, 0.05, size=base.scores.shape) * base.edge_mask
    tuned = EdgeScores(
        louder.astype(np.float32),
        base.idx,
        base.edge_mask,
        base.forward_nodes,
        base.backward_nodes,
    )
    return compute_circuit_metrics(base, tuned)


def compare(condition, seed=0, alpha="0.1"):
    return compare_roles(
        condition, pair="toy-grpo", dataset="toy-gsm8k", alpha=alpha, seed=seed, n_resamples=499
    )


def test_compare_roles_rows(condition):
    rows = compare(condition).set_index("metric")
    assert list(rows.index) == [*PER_SAMPLE_METRICS, *POOLED_METRICS]
    assert (rows["n"] == 16).all()
    assert rows.loc["intensity", "change_pct"] == pytest.approx(50, abs=2)
    assert rows.loc["intensity", "as_expected"]
    assert rows.loc["intensity", "p"] < 0.001
    assert rows.loc["intensity", "ci_pct_low"] > 40
    assert rows.loc["kurtosis", "expected"] == "down"
    assert rows.loc["diversity", "kind"] == "pooled"
    assert rows.loc["diversity", "test"].startswith("paired permutation")


def test_results_are_fixed_by_the_seed(condition):
    first, again, other = compare(condition), compare(condition), compare(condition, seed=1)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["ci_low"], other["ci_low"], equal_nan=True)
    stream = row_rng(0, "toy-grpo", "toy-gsm8k", "0.1", "intensity").random(3)
    np.testing.assert_array_equal(
        stream, row_rng(0, "toy-grpo", "toy-gsm8k", 0.1, "intensity").random(3)
    )


def test_tests_table_applies_fdr_across_conditions(condition):
    table = assemble_tests_table([compare(condition), compare(condition, alpha="0.3")])
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 2 * (len(PER_SAMPLE_METRICS) + len(POOLED_METRICS))
    tested = table["p"].notna()
    np.testing.assert_allclose(
        table.loc[tested, "q"], sps.false_discovery_control(table.loc[tested, "p"])
    )
    assert (table.loc[tested, "q"] >= table.loc[tested, "p"]).all()


def save_npz(path, edges: EdgeScores) -> None:
    np.savez(
        path,
        scores=edges.scores,
        idx=edges.idx,
        cut_len=np.ones(len(edges.idx), dtype=np.int64),
        edge_mask=edges.edge_mask,
        forward_nodes=np.array(edges.forward_nodes),
        backward_nodes=np.array(edges.backward_nodes),
    )


def test_metrics_and_stats_rules_from_npz_files(tmp_path):
    """What the `metrics` and `stats` rule scripts do, on files."""
    rng = np.random.default_rng(10)
    for role, scale in (("base", 1.0), ("tuned", 2.0)):
        save_npz(tmp_path / f"{role}.npz", synthetic_scores(rng, 10, scale=scale, noise=0.5))
    base, tuned = (load_edge_scores(tmp_path / f"{role}.npz") for role in ("base", "tuned"))
    metrics = compute_circuit_metrics(base, tuned)
    metrics.write(tmp_path / "alpha0.1.csv", tmp_path / "alpha0.1.json")
    per_sample = pd.read_csv(tmp_path / "alpha0.1.csv")
    pd.testing.assert_frame_equal(per_sample, metrics.per_sample, check_dtype=False)
    summary = json.loads((tmp_path / "alpha0.1.json").read_text())
    assert summary["pooled"]["diversity"]["base"] == pytest.approx(
        metrics.pooled["diversity"]["base"]
    )
    table = assemble_tests_table(
        [compare_roles(metrics, pair="p", dataset="d", alpha="0.1", n_resamples=199)]
    )
    write_tests_table(table, tmp_path / "tests.csv")
    written = pd.read_csv(tmp_path / "tests.csv")
    assert list(written.columns) == list(COLUMNS)
    assert written.set_index("metric").loc["intensity", "as_expected"]
