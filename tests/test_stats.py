"""Paired statistics: known effects are found, the null holds its level, BH and seeds are exact."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from circuitry.analysis.circuit_metrics import (
    compute_circuit_metrics,
    load_condition,
    per_sample_table,
)
from circuitry.analysis.metrics import CONFIDENCE_METRICS, PER_SAMPLE_METRICS, POOLED_METRICS
from circuitry.analysis.paired_tests import (
    GEOMETRIC_MEAN,
    MIN_PAIRS,
    loss_correlation,
    paired_sample_test,
    percent_change,
    pooled_permutation_test,
    rank_biserial,
    row_rng,
)
from circuitry.analysis.pooled_metrics import PairedEdgeStack
from circuitry.analysis.stats import (
    COLUMNS,
    assemble_tests_table,
    compare_roles,
    duplicate_alphas,
    family,
    mark_duplicates,
    pair_dataset_tests,
    with_fdr,
)
from circuitry.attribution.scorefile import DIAGNOSTICS, EdgeScores, write_score_file
from circuitry.io import write_csv

N_NULL = 400
OTHER_ROLE = {"base": "tuned", "tuned": "base"}


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
    few = paired_sample_test(
        np.arange(5.0), np.arange(5.0) + 1, rng=np.random.default_rng(0), n_resamples=99
    )
    assert few["n"] == 5 < MIN_PAIRS and np.isnan(few["p"]) and "not tested" in few["note"]
    assert few["change"] == pytest.approx(1.0)
    same = paired_sample_test(
        np.arange(8.0), np.arange(8.0), rng=np.random.default_rng(0), n_resamples=99
    )
    assert same["p"] == 1.0 and "all paired differences are zero" in same["note"]
    assert (same["ci_low"], same["ci_high"]) == (0.0, 0.0) and np.isnan(same["effect_size"])
    # every resample has the same change: BCa is undefined, the percentile CI is exact
    shift = paired_sample_test(
        np.ones(8), np.full(8, 2.0), rng=np.random.default_rng(0), n_resamples=99
    )
    assert (shift["ci_low"], shift["ci_high"]) == (1.0, 1.0)
    assert (shift["ci_pct_low"], shift["ci_pct_high"]) == (100.0, 100.0)
    assert "percentile CI" in shift["note"]
    empty = paired_sample_test(
        np.array([]), np.array([]), rng=np.random.default_rng(0), n_resamples=99
    )
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
    same = pooled_permutation_test(
        PairedEdgeStack(rows, rows), "diversity", rng=rng, n_resamples=99
    )
    assert same["p"] == 1.0 and "identical" in same["note"]
    few = pooled_permutation_test(
        PairedEdgeStack(rows[:3], rows[3:6]), "diversity", rng=rng, n_resamples=99
    )
    assert np.isnan(few["p"]) and "pairs" in few["note"]
    zero = rows.copy()
    zero[0] = 0
    undefined = pooled_permutation_test(
        PairedEdgeStack(zero, rows), "diversity", rng=rng, n_resamples=99
    )
    assert np.isnan(undefined["p"]) and "undefined" in undefined["note"]


def fdr_table(p, family="primary", duplicate_of=np.nan, pair="p") -> pd.DataFrame:
    return pd.DataFrame({"pair": pair, "p": p, "family": family, "duplicate_of": duplicate_of})


def test_benjamini_hochberg_by_hand_and_nan_safe():
    table = fdr_table([0.001, 0.04, 0.041, 0.9, np.nan])
    # m = 4 tested: p*m/rank = 0.004, 0.08, 0.05467, 0.9; step-up minimum from the top
    q = with_fdr(table)["q"].to_numpy()
    np.testing.assert_allclose(q, [0.004, 0.041 * 4 / 3, 0.041 * 4 / 3, 0.9, np.nan])
    assert with_fdr(fdr_table([np.nan, np.nan]))["q"].isna().all()


def test_each_family_has_its_own_correction():
    p = [0.01, 0.02, 0.03, 0.04]
    table = fdr_table(p, family=["primary", "primary", "secondary", "confidence"])
    q = with_fdr(table)["q"].to_numpy()
    np.testing.assert_allclose(q, [0.02, 0.02, 0.03, 0.04])
    assert family("intensity", "ce", "own") == "primary"
    assert family("entropy_hist", "ce", "own") == "secondary"
    assert family("intensity", "ce_unit", "own") == "secondary"
    assert family("intensity", "ce", "weights") == "secondary"
    assert family("window_ce", "ce", "own") == "confidence"


def test_each_pair_is_corrected_on_its_own():
    """A control's tests leave a study pair's q-values as they were without it."""
    study = fdr_table([0.01, 0.02, 0.03], pair="study")
    control = fdr_table([1.0, 1.0, 0.5, 0.9], pair="control")
    alone = with_fdr(study)["q"].to_numpy()
    together = with_fdr(pd.concat([study, control], ignore_index=True))["q"].to_numpy()
    np.testing.assert_allclose(together[:3], alone)
    np.testing.assert_allclose(alone, [0.03, 0.03, 0.03])
    np.testing.assert_allclose(together[3:], sps.false_discovery_control([1.0, 1.0, 0.5, 0.9]))


def test_duplicate_window_conditions_leave_the_fdr_family():
    # alphas 0.03 and 0.1 both give 1-token windows: 0.1 repeats 0.03
    windows = {"0.03": np.ones(6), "0.1": np.ones(6), "0.3": np.full(6, 4.0)}
    assert duplicate_alphas(windows) == {"0.1": "0.03"}
    assert duplicate_alphas({"0.1": None, "0.3": None}) == {}
    table = pd.DataFrame(
        {
            "pair": "p",
            "alpha": ["0.03", "0.1", "0.3", "0.3"],
            "p": [0.01, 0.01, 0.04, 0.5],
            "family": "primary",
            "duplicate_of": np.nan,
            "note": ["", "", "", ""],
        }
    )
    marked = with_fdr(mark_duplicates(table, duplicate_alphas(windows)))
    assert marked["duplicate_of"].isna().tolist() == [True, False, True, True]
    assert float(marked["duplicate_of"].iloc[1]) == 0.03
    assert "same window as alpha = 0.03" in marked["note"].iloc[1]
    # BH over the three rows that are not duplicates: 0.01, 0.04, 0.5
    expected = sps.false_discovery_control([0.01, 0.04, 0.5])
    np.testing.assert_allclose(marked["q"].to_numpy()[[0, 2, 3]], expected)
    assert np.isnan(marked["q"].iloc[1])


def test_intensity_is_tested_on_log_ratios_with_a_geometric_mean_ci():
    """A few loud samples fall while most rise: the ratio of means says down, the
    geometric mean of per-sample ratios (and the log-ratio test) say up."""
    rng = np.random.default_rng(11)
    base = np.concatenate([np.full(4, 100.0), np.ones(36)]) * np.exp(rng.normal(0, 0.1, 40))
    ratio = np.concatenate([np.full(4, 0.5), np.full(36, 1.3)])
    tuned = base * ratio * np.exp(rng.normal(0, 0.05, 40))
    result = paired_sample_test(
        base, tuned, rng=np.random.default_rng(12), n_resamples=1999, log_scale=True
    )
    log_ratio = np.log(tuned / base)
    assert result["change_measure"] == GEOMETRIC_MEAN
    # change is the mean log ratio, so its sign is the tested effect's, not the means'
    assert result["change"] == pytest.approx(log_ratio.mean()) and result["change"] > 0
    assert result["ci_low"] < result["change"] < result["ci_high"]
    assert result["change_pct"] == pytest.approx(100 * np.expm1(log_ratio.mean()))
    assert 15 < result["change_pct"] < 21  # exp((4 log 0.5 + 36 log 1.3) / 40) - 1 = 18.2%
    assert result["ratio_of_means_pct"] == pytest.approx(100 * (tuned.mean() / base.mean() - 1))
    assert result["ratio_of_means_pct"] < -35  # (200 + 46.8) / (400 + 36) - 1 = -43%
    assert result["p"] == pytest.approx(sps.wilcoxon(log_ratio).pvalue)
    assert result["p"] < 0.001
    assert 0 < result["ci_pct_low"] < result["change_pct"] < result["ci_pct_high"]
    # the ratio-of-means reading would have said the opposite: a difference-scale test
    difference = paired_sample_test(base, tuned, rng=np.random.default_rng(12), n_resamples=999)
    assert difference["change_pct"] < -35


def test_log_scale_drops_non_positive_values():
    base, tuned = np.array([1.0, 0.0, 2, 3, 4, 5, 6, 7]), np.arange(1.0, 9.0) * 2
    result = paired_sample_test(
        base, tuned, rng=np.random.default_rng(0), n_resamples=99, log_scale=True
    )
    assert result["n"] == 7 and "non-positive" in result["note"]


def test_loss_correlation():
    effect = np.arange(10.0)
    assert loss_correlation(effect, effect**3)[0] == pytest.approx(1.0)
    assert loss_correlation(effect, -effect)[0] == pytest.approx(-1.0)
    assert np.isnan(loss_correlation(effect, np.ones(10))[0])
    assert np.isnan(loss_correlation(effect[:4], effect[:4])[0])


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
    assert (rows["comparison"] == "own").all() and (rows["loss"] == "ce").all()
    assert rows.loc["intensity", "family"] == "primary"
    assert rows.loc["entropy_hist", "family"] == "secondary"
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
    stream = row_rng(0, "toy-grpo", "toy-gsm8k", "0.1", "ce", "own", "intensity").random(3)
    np.testing.assert_array_equal(
        stream, row_rng(0, "toy-grpo", "toy-gsm8k", 0.1, "ce", "own", "intensity").random(3)
    )


def test_tests_table_applies_fdr_across_conditions(condition):
    table = assemble_tests_table([compare(condition), compare(condition, alpha="0.3")])
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 2 * (len(PER_SAMPLE_METRICS) + len(POOLED_METRICS))
    for name in ("primary", "secondary"):
        tested = table["p"].notna() & (table["family"] == name)
        assert tested.sum() >= 8  # both conditions' rows are in one correction
        np.testing.assert_allclose(
            table.loc[tested, "q"], sps.false_discovery_control(table.loc[tested, "p"])
        )
    assert (table["q"] >= table["p"]).all()


def save_scores(
    path, edges: EdgeScores, window_len: int, window_ce: np.ndarray, role: str, text: str
) -> None:
    """A score file as the EAP rule writes it, of `role` on `text`, with made-up diagnostics."""
    n = len(edges.idx)
    diagnostics = {name: np.ones(n) for name in DIAGNOSTICS}
    diagnostics |= {"window_ce": window_ce, "window_len": np.full(n, window_len)}
    graph = {
        "edge_mask": edges.edge_mask,
        "forward_nodes": np.array(edges.forward_nodes),
        "backward_nodes": np.array(edges.backward_nodes),
    }
    write_score_file(
        path,
        scores=edges.scores,
        diagnostics=diagnostics,
        idx=edges.idx,
        graph=graph,
        condition={
            "alpha": 0.1,
            "cut_len": window_len,
            "reference_length": 10.0,
            "loss": "ce",
            "role": role,
            "text": text,
            "text_role": role if text == "own" else OTHER_ROLE[role],
            "model_type": "llama",
        },
    )


def scaled(edges: EdgeScores, factor: np.ndarray) -> EdgeScores:
    scores = (edges.scores * factor[:, None, None]).astype(np.float32)
    return EdgeScores(scores, edges.idx, edges.edge_mask, edges.forward_nodes, edges.backward_nodes)


def crossed_study(tmp_path, tuned_gain, text_gain, rng, n=12):
    """Score files of one alpha where the tuned weights scale |w| by `tuned_gain` and the
    tuned text by `text_gain`; window loss falls with the tuned weights."""
    base = synthetic_scores(rng, n, scale=1.0, noise=0.4)
    noise = np.exp(rng.normal(0, 0.05, size=(2, 2, n)))
    paths = {}
    for i, role in enumerate(("base", "tuned")):
        for j, text in enumerate(("own", "crossed")):
            author = role if text == "own" else OTHER_ROLE[role]
            gain = (tuned_gain if role == "tuned" else 1.0) * (
                text_gain if author == "tuned" else 1.0
            )
            path = tmp_path / f"{role}_on_{text}.npz"
            window_ce = (0.5 if role == "tuned" else 1.0) * noise[i, j]
            save_scores(path, scaled(base, gain * noise[i, j]), 3, window_ce, role, text)
            paths[role, text] = path
    return paths


def test_metrics_and_stats_rules_from_score_files(tmp_path):
    """What the `metrics` and `stats` rule scripts do, on files: the per-sample CSV holds
    every loss, role and text; the crossed decomposition adds up to the own change."""
    rng = np.random.default_rng(10)
    paths = crossed_study(tmp_path, tuned_gain=2.0, text_gain=1.5, rng=rng)
    metrics = {("0.1", "ce"): load_condition(paths), ("0.3", "ce"): load_condition(paths)}
    table = per_sample_table({"ce": metrics["0.1", "ce"]})
    write_csv(tmp_path / "alpha0.1.csv", table)
    written = pd.read_csv(tmp_path / "alpha0.1.csv")
    assert list(written.columns) == ["loss", "text", "role", "idx", "metric", "value"]
    assert set(written["text"]) == {"own", "crossed"}
    assert {"intensity", "window_ce", "window_len"} <= set(written["metric"])
    metrics["0.1", "ce"].write_summary(tmp_path / "alpha0.1.json")
    summary = json.loads((tmp_path / "alpha0.1.json").read_text())
    assert summary["pooled"]["diversity"]["base"] == pytest.approx(
        metrics["0.1", "ce"].pooled["diversity"]["base"]
    )
    tests = pair_dataset_tests(metrics, pair="p", dataset="d", seed=0, n_resamples=199)
    table = assemble_tests_table([tests])
    write_csv(tmp_path / "tests.csv", table)
    written = pd.read_csv(tmp_path / "tests.csv")
    assert list(written.columns) == list(COLUMNS)
    # the same windows at both alphas: 0.3 repeats 0.1 and stays out of BH
    assert (table.loc[table["alpha"] == "0.3", "duplicate_of"] == 0.1).all()
    assert table.loc[table["alpha"] == "0.3", "q"].isna().all()
    numbers = ["metric", "comparison", "change", "ci_low", "ci_high", "ci_pct_low", "p"]
    pd.testing.assert_frame_equal(  # copied, not tested again with another generator
        table.loc[table["alpha"] == "0.3", numbers].reset_index(drop=True),
        table.loc[table["alpha"] == "0.1", numbers].reset_index(drop=True),
    )
    rows = table[table["alpha"] == "0.1"].set_index(["comparison", "metric"])
    assert set(rows.index.get_level_values(0)) == {"own", "weights", "text"}
    intensity = rows.xs("intensity", level="metric")
    # gains multiply: weights x2, text x1.5, own x3 (up to the per-file noise)
    growth = 1 + intensity["change_pct"] / 100
    assert growth["own"] == pytest.approx(growth["weights"] * growth["text"])
    assert growth["weights"] == pytest.approx(2.0, rel=0.05)
    assert growth["text"] == pytest.approx(1.5, rel=0.05)
    entropy = rows.xs("entropy", level="metric")["change"]
    assert entropy["own"] == pytest.approx(entropy["weights"] + entropy["text"])
    window = rows.xs("window_ce", level="metric")
    assert window.loc["weights", "change"] < 0 and window.loc["weights", "family"] == "confidence"
    assert (window["loss_spearman"].isna()).all()
    assert intensity["loss_spearman"].notna().all()
    assert set(rows.xs("diversity", level="metric").index) == {"own"}


def test_identity_pair_changes_are_exactly_zero_with_q_one(tmp_path):
    """A model compared with itself: every change 0, p = 1, q = 1, in every comparison."""
    rng = np.random.default_rng(13)
    edges = synthetic_scores(rng, 10, scale=1.0, noise=0.5)
    paths = {}
    for role in ("base", "tuned"):
        for text in ("own", "crossed"):
            paths[role, text] = tmp_path / f"{role}_{text}.npz"
            save_scores(paths[role, text], edges, 2, np.linspace(0.1, 1.0, 10), role, text)
    metrics = {("0.5", loss): load_condition(paths) for loss in ("ce", "ce_unit")}
    table = assemble_tests_table(
        [pair_dataset_tests(metrics, pair="id", dataset="d", seed=0, n_resamples=99)]
    )
    assert set(table["metric"]) == {*PER_SAMPLE_METRICS, *POOLED_METRICS, *CONFIDENCE_METRICS}
    assert (table["change"] == 0).all()
    assert (table["p"] == 1).all() and (table["q"] == 1).all()
    assert set(table["family"]) == {"primary", "secondary", "confidence"}


def test_a_score_file_under_the_wrong_key_fails(tmp_path):
    paths = crossed_study(tmp_path, tuned_gain=1.0, text_gain=1.0, rng=np.random.default_rng(3))
    swapped = paths | {("base", "own"): paths["tuned", "own"]}
    with pytest.raises(ValueError, match=r"tuned_on_own.npz: holds \{'role': 'tuned'\}"):
        load_condition(swapped)
