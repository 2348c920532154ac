"""Fidelity to the paper's code: where circuitry differs from it, and by how much.

The paper's code (holimario/llm_rl_probing_analysis: `run_tests.py`, its EAP fork under
`src/eap`, its vLLM `evaluation/`) makes choices the project makes otherwise.
`DEVIATIONS` lists each as pure data: the choice, what the paper's code does, the setting
that reproduces it (if one does) and what measures its effect. `measure_pair` measures,
from one pair x dataset's own files, what the deviations change there (rule `fidelity`:
a tidy table `deviation, measure, alpha, role, value`); `effects` reads the study's
tables into the "measured effect" column of the report's table.

Numerics. The paper's EAP runs in bf16 and gets each sample's scores as the difference of
successive values of a bf16 running sum over the samples, in the order they were drawn
(`get_scores_test1` in `src/eap/my_attribute_non_heads.py`: `all_scores[i] = scores -
temp_score`, batch size 1). `bf16_read_back` emulates that accumulation on the project's
float32 scores. It adds each sample once, where the paper's hooks add it layer by layer,
and leaves out the bf16 forward and backward passes, so its error is a lower bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from circuitry.analysis.metrics import ROLES
from circuitry.analysis.sample_metrics import mass_entropy
from circuitry.attribution.scorefile import EdgeScores, load_edge_scores
from circuitry.generation.pairing import (
    MODES,
    PAPER_CONTEXT_CAPS,
    FilterSettings,
    PairingError,
    cut_length,
    pair_samples,
)

COLUMNS = ("pair", "dataset", "deviation", "measure", "alpha", "role", "value")
# The drawn sample whose bf16 read-back error the table quotes besides the last one.
ERROR_AT_SAMPLE = 10


@dataclass(frozen=True)
class Deviation:
    """One choice the paper's code makes otherwise; `setting` the config key that
    reproduces it (`*` for every model), `effect` how its effect is measured."""

    key: str
    choice: str
    paper: str
    setting: str | None
    effect: str


DEVIATIONS = (
    Deviation(
        key="selection",
        choice="length bounds",
        paper=(
            "float T, bounds int(coeff * T), a row out when m > high or m < low, "
            "unbalanced when diff / m > balance (run_tests.py)"
        ),
        setting="filter.mode",
        effect="problems the other mode selects too, from the same generations",
    ),
    Deviation(
        key="window",
        choice="answer windows",
        paper="cut_len = max(int(T * alpha), 1) in floats",
        setting="filter.mode",
        effect="windows the other mode cuts to another length",
    ),
    Deviation(
        key="eos",
        choice="answer lengths",
        paper=(
            "vLLM's CompletionOutput.token_ids, which keep the EOS or stop token id a "
            "sequence ends on (StopChecker.maybe_stop_sequence, "
            "vllm/engine/output_processor/stop_checker.py)"
        ),
        setting="filter.count_eos",
        effect="problems the other EOS setting selects too",
    ),
    Deviation(
        key="prompts",
        choice="prompts",
        paper=(
            "each family's Qwen2.5-Math prompt; the distill pair with the raw deepseek-math "
            "template, no chat template"
        ),
        setting="models.*.template",
        effect=(
            "not measured: another prompt means other generations, which needs the models "
            "(the toy's have one template)"
        ),
    ),
    Deviation(
        key="context",
        choice="context",
        paper="TransformerLens holds 2048 tokens for Mistral and Qwen2 (n_ctx)",
        setting=None,
        effect="scored windows whose prompt + window the paper could not have read",
    ),
    Deviation(
        key="numerics",
        choice="numerics",
        paper=(
            "bf16 throughout; each sample's scores the difference of a bf16 running sum "
            "(src/eap/my_attribute_non_heads.py, get_scores_test1)"
        ),
        setting=None,
        effect="the bf16 running sum emulated on this study's own-text scores",
    ),
    Deviation(
        key="grader",
        choice="grader",
        paper="the Qwen2.5-Math grader (evaluation/parser.py, evaluation/grader.py)",
        setting=None,
        effect=(
            "measured outside the workflow, on every GSM8K, MATH-500 and College Math row of "
            "the test fixtures (benchmarks/grader_agreement.py: 12,289 gold-shaped cases, "
            "each row's solution, another row's answer, equivalent rewrites): the graders "
            "agree on 99.6%; the project's matches the known truth on all, the paper's "
            "misses 46 (41 on College Math, mostly a backslash its gold keeps where its "
            "prediction loses it), never the other way round"
        ),
    ),
    Deviation(
        key="readings",
        choice="metric readings",
        paper=(
            "full [n_forward, n_backward] matrices, zeros at non-edges; the text's entropy "
            "of all |w|"
        ),
        setting=None,
        effect="the variants table: whether each variant agrees with its headline metric",
    ),
)


def configured(config: Mapping, key: str) -> str:
    """The study's value of a dotted config key, `*` standing for every entry there."""
    head, _, rest = key.partition(".")
    if head == "*":
        return ", ".join(sorted({configured(entry, rest) for entry in config.values()}))
    node = config.get(head)
    if not rest or node is None:
        return str(node).lower() if isinstance(node, bool) else str(node)
    return configured(node, rest)


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """`values` rounded to the nearest bfloat16 (ties to even), held in float32."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def bf16_read_back(samples: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Each sample's scores as the paper's code reads them back: added in bf16 to a bf16
    running sum (`scores += ...`) and recovered as the bf16 difference from the sum before."""
    total = None
    for sample in samples:
        if total is None:
            total = np.zeros(np.shape(sample), dtype=np.float32)
        updated = to_bfloat16(total + to_bfloat16(sample))
        yield to_bfloat16(updated - total)
        total = updated


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """`sum |approx - exact| / sum |exact|`."""
    return float(np.abs(approx - exact).sum() / np.abs(exact).sum())


def other_mode(mode: str) -> str:
    (other,) = (m for m in MODES if m != mode)
    return other


def selection_measures(
    generations: Mapping[str, Sequence[dict]],
    summary: Mapping,
    *,
    pair: str,
    dataset: str,
) -> list[dict]:
    """How many of the selected problems the other mode, and the other EOS setting,
    select from the same generations (0 where that setting leaves none)."""
    settings = FilterSettings.from_config(summary["settings"])
    selected = set(summary["draw_order"])
    alternatives = {
        "selection": dataclasses.replace(settings, mode=other_mode(settings.mode)),
        "eos": dataclasses.replace(settings, count_eos=not settings.count_eos),
    }
    rows = [{"deviation": "selection", "measure": "n_selected", "value": len(selected)}]
    for deviation, alternative in alternatives.items():
        try:
            _, other = pair_samples(
                generations["base"], generations["tuned"], alternative, pair=pair, dataset=dataset
            )
            drawn = set(other["draw_order"])
        except PairingError:
            drawn = set()
        rows += [
            {"deviation": deviation, "measure": "other_n_selected", "value": len(drawn)},
            {"deviation": deviation, "measure": "shared", "value": len(selected & drawn)},
        ]
    return rows


def window_measures(summary: Mapping, alphas: Sequence[float]) -> list[dict]:
    """Each alpha's window in this study's mode and in the other."""
    settings = dict(summary["settings"])
    other = {**summary, "settings": {**settings, "mode": other_mode(settings["mode"])}}
    return [
        {"deviation": "window", "measure": measure, "alpha": alpha, "value": length}
        for alpha in alphas
        for measure, length in (
            ("cut_len", cut_length(alpha, summary)),
            ("other_cut_len", cut_length(alpha, other)),
        )
    ]


def context_measures(
    pair_rows: Sequence[dict], scores: EdgeScores, model_type: str, alpha: float, role: str
) -> list[dict]:
    """The longest prompt + window one role read, and how many exceed the paper's cap for
    its family (NaN cap and 0 beyond where the family had none)."""
    prompt_len = {row["idx"]: row[role]["prompt_len"] for row in pair_rows}
    read = np.array([prompt_len[i] for i in scores.idx.tolist()]) + scores.diagnostics["window_len"]
    cap = PAPER_CONTEXT_CAPS.get(model_type)
    where = {"deviation": "context", "alpha": alpha, "role": role}
    return [
        {**where, "measure": "windows", "value": len(read)},
        {**where, "measure": "longest", "value": int(read.max())},
        {**where, "measure": "cap", "value": np.nan if cap is None else cap},
        {**where, "measure": "beyond_cap", "value": 0 if cap is None else int((read > cap).sum())},
    ]


def drawn_rows(idx: np.ndarray, draw_order: Sequence[int]) -> list[int]:
    """The rows of a score file (ordered by idx) in the order the samples were drawn."""
    row_of = {int(i): row for row, i in enumerate(idx)}
    return [row_of[int(i)] for i in draw_order]


def bf16_scores(exact: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Scores `[n, n_edges]` as the paper's bf16 running sum reads them back, the rows
    added in `order`."""
    read_back = np.empty_like(exact)
    for row, values in zip(order, bf16_read_back(exact[r] for r in order), strict=True):
        read_back[row] = values
    return read_back


def numerics_measures(
    exact: np.ndarray, read_back: np.ndarray, draw_order_rows: Sequence[int], alpha, role
) -> list[dict]:
    """The read-back error at the `ERROR_AT_SAMPLE`-th and the last drawn sample, its mean
    over samples, and the share of non-zero entries read back as exactly 0."""
    errors = [relative_error(read_back[r], exact[r]) for r in draw_order_rows]
    nonzero = exact != 0
    where = {"deviation": "numerics", "alpha": alpha, "role": role}
    values = {
        "error_at_sample": errors[min(ERROR_AT_SAMPLE, len(errors)) - 1],
        "error_last": errors[-1],
        "error_mean": float(np.mean(errors)),
        "zeroed": float((read_back[nonzero] == 0).mean()),
    }
    return [{**where, "measure": m, "value": v} for m, v in values.items()]


def headline_changes(by_role: Mapping[str, np.ndarray], label: str, alpha) -> list[dict]:
    """Tuned minus base of the mean per-sample intensity (in %) and mass entropy."""
    intensity = {role: np.abs(w).mean() for role, w in by_role.items()}
    entropy = {role: np.nanmean(mass_entropy(np.abs(w))) for role, w in by_role.items()}
    changes = {
        f"intensity_change_pct_{label}": 100 * (intensity["tuned"] / intensity["base"] - 1),
        f"entropy_change_{label}": entropy["tuned"] - entropy["base"],
    }
    return [
        {"deviation": "numerics", "measure": m, "alpha": alpha, "value": float(v)}
        for m, v in changes.items()
    ]


def score_measures(
    pair_rows: Sequence[dict],
    summary: Mapping,
    score_files: Mapping[tuple[float, str], str],
) -> list[dict]:
    """Context and numerics measures of the paper's condition (`ce` loss, own text) at
    every alpha; `score_files` maps (alpha, role) to the score file."""
    rows = []
    for alpha in sorted({alpha for alpha, _ in score_files}):
        exact, read_back = {}, {}
        for role in ROLES:
            scores = load_edge_scores(score_files[alpha, role], role=role, text="own")
            model_type = scores.condition["model_type"]
            rows += context_measures(pair_rows, scores, model_type, alpha, role)
            order = drawn_rows(scores.idx, summary["draw_order"])
            exact[role] = scores.edge_values.astype(np.float32)
            read_back[role] = bf16_scores(exact[role], order)
            rows += numerics_measures(exact[role], read_back[role], order, alpha, role)
        rows += headline_changes(exact, "exact", alpha)
        rows += headline_changes(read_back, "bf16", alpha)
    return rows


def measure_pair(
    generations: Mapping[str, Sequence[dict]],
    pair_rows: Sequence[dict],
    summary: Mapping,
    score_files: Mapping[tuple[float, str], str],
    *,
    pair: str,
    dataset: str,
) -> pd.DataFrame:
    """Every measure of one pair x dataset as a tidy table (`COLUMNS`)."""
    if "draw_order" not in summary:
        raise ValueError(
            f"pair {pair}, dataset {dataset}: the pairing summary has no draw_order (written "
            "by an older circuitry); rerun it with --forcerun pair_samples"
        )
    alphas = sorted({alpha for alpha, _ in score_files})
    rows = selection_measures(generations, summary, pair=pair, dataset=dataset)
    rows += window_measures(summary, alphas)
    rows += score_measures(pair_rows, summary, score_files)
    table = pd.DataFrame(rows).assign(pair=pair, dataset=dataset)
    return table.reindex(columns=list(COLUMNS)).fillna({"role": ""})


def effects(table: pd.DataFrame, config: Mapping) -> dict[str, str]:
    """The measured effect of each deviation over the study's pairs x datasets, in words
    (`Deviation.effect` where the workflow measures nothing)."""
    mode, count_eos = config["filter"]["mode"], config["filter"]["count_eos"]
    eos_label = "leaving the EOS out of" if count_eos else "counting the EOS in"
    measured = {
        "selection": selection_effect(table, "selection", f"the {other_mode(mode)} mode"),
        "eos": selection_effect(table, "eos", f"{eos_label} answer lengths"),
        "window": window_effect(table, other_mode(mode)),
        "context": context_effect(table),
        "numerics": numerics_effect(table),
    }
    return {d.key: measured.get(d.key, d.effect) for d in DEVIATIONS}


def measures(table: pd.DataFrame, deviation: str, measure: str) -> pd.DataFrame:
    rows = table[(table["deviation"] == deviation) & (table["measure"] == measure)]
    return rows.set_index(["pair", "dataset", "alpha", "role"])["value"]


def selection_effect(table: pd.DataFrame, deviation: str, label: str) -> str:
    selected = measures(table, "selection", "n_selected").droplevel(["alpha", "role"])
    shared = measures(table, deviation, "shared").droplevel(["alpha", "role"])
    share = shared / selected
    return (
        f"{label} would select {share.median():.0%} of the same problems from the same "
        f"generations (median of {len(share)} pair x dataset; {share.min():.0%} at fewest)"
    )


def window_effect(table: pd.DataFrame, other: str) -> str:
    ours = measures(table, "window", "cut_len")
    theirs = measures(table, "window", "other_cut_len")
    differ = int((ours != theirs).sum())
    return (
        f"the {other} mode cuts {differ} of {len(ours)} windows (pair x dataset x alpha) "
        "to another length"
    )


def context_effect(table: pd.DataFrame) -> str:
    caps = measures(table, "context", "cap")
    capped = caps.dropna().index
    if capped.empty:
        families = ", ".join(sorted(PAPER_CONTEXT_CAPS))
        return f"no scored model is of a family the paper capped ({families})"
    beyond = measures(table, "context", "beyond_cap")[capped]
    windows = measures(table, "context", "windows")[capped]
    return (
        f"{int(beyond.sum())} of {int(windows.sum())} scored windows of capped families read "
        "more than the paper's context holds"
    )


def numerics_effect(table: pd.DataFrame) -> str:
    at_sample = measures(table, "numerics", "error_at_sample")
    last = measures(table, "numerics", "error_last")
    zeroed = measures(table, "numerics", "zeroed")
    exact = measures(table, "numerics", "intensity_change_pct_exact")
    bf16 = measures(table, "numerics", "intensity_change_pct_bf16")
    entropy_flips = np.sign(measures(table, "numerics", "entropy_change_exact")) != np.sign(
        measures(table, "numerics", "entropy_change_bf16")
    )
    return (
        f"emulated accumulation (a lower bound): each sample's scores read back with a "
        f"relative error of {at_sample.median():.1%} at the {ERROR_AT_SAMPLE}th drawn sample "
        f"and {last.median():.1%} at the last, {zeroed.median():.1%} of non-zero entries read "
        f"back as 0 (medians over {len(last)} score files); the intensity change moves by "
        f"{(bf16 - exact).abs().median():.2f} points (median) and changes sign in "
        f"{int((np.sign(bf16) != np.sign(exact)).sum())} of {len(exact)} conditions, the "
        f"entropy change in {int(entropy_flips.sum())}"
    )
