"""How the study was run, from its config and records: the methods text, the sample
funnel, accuracy and teacher-forcing agreement, the models, templates and datasets, the
deviations from the paper's code, and the provenance that reproduces the run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

import pandas as pd
from markupsafe import Markup

from circuitry.analysis.fidelity import DEVIATIONS, configured, effects
from circuitry.analysis.metrics import ROLES
from circuitry.display import MISSING, format_alpha, format_number, format_percent_plain
from circuitry.generation.pairing import cut_length
from circuitry.provenance import Provenance
from circuitry.report.blocks import Cell, Row, Table
from circuitry.report.calibration import LOSSES_TEXT, VERDICT_RULE_TEXT, calibration_text


def funnel_table(summaries: Mapping[str, dict], alphas: Sequence) -> Table:
    """The pairing funnel per dataset: how many problems each filter removed, and the windows."""
    reasons: list[str] = []
    for summary in summaries.values():
        reasons += [f["reason"] for f in summary["filters"] if f["reason"] not in reasons]
    rows = []
    for dataset, summary in summaries.items():
        removed = {f["reason"]: f["removed"] for f in summary["filters"]}
        reference = Fraction(summary["reference_length_fraction"])
        analysed = Cell(
            format_number(summary["n_selected"]),
            "warn" if summary.get("too_few") else "",
            "fewer problems than filter.num_samples" if summary.get("too_few") else "",
        )
        rows.append(
            Row(
                [
                    Cell(dataset),
                    Cell(format_number(summary["n_joined"])),
                    *(Cell(format_number(summary["n_correct"][role])) for role in ROLES),
                    *(Cell(format_number(removed.get(reason))) for reason in reasons),
                    analysed,
                    Cell(format_number(float(reference))),
                    Cell(" / ".join(str(cut_length(a, summary)) for a in alphas)),
                ]
            )
        )
    return Table(
        columns=[
            "dataset",
            "problems (joined)",
            "base correct",
            "tuned correct",
            *(f"− {reason}" for reason in reasons),
            "analysed",
            "T (tokens)",
            "window tokens at " + " / ".join(format_alpha(a) for a in alphas),
        ],
        rows=rows,
        caption="Sample filtering: problems removed by each step, in order",
        notes=[
            "T: reference answer length, the smaller of the two models' mean answer lengths "
            "over the problems both answered correctly; window: the answer tokens EAP "
            "scores, max(1, ⌊α·T⌋)."
        ],
    )


def accuracy_table(
    provenance: Mapping[tuple[str, str], dict], models: Sequence[str], datasets: Sequence[str]
) -> Table:
    """Each model's accuracy (graded with math-verify) on each dataset."""
    rows = []
    for model in models:
        cells = [Cell(model)]
        for dataset in datasets:
            record = provenance[model, dataset]
            cells.append(
                Cell(
                    format_percent_plain(100 * record["accuracy"]),
                    title=f"n = {record['n']}, {record.get('dtype', '?')} on "
                    f"{record.get('device', '?')}",
                )
            )
        rows.append(Row(cells))
    return Table(
        columns=["model", *datasets],
        rows=rows,
        caption="Accuracy of greedy answers (all problems of each dataset)",
        id="accuracy",
    )


def agreement_table(
    provenance: Mapping[tuple[str, str], dict],
    models: Sequence[str],
    datasets: Sequence[str],
    threshold: float,
) -> Table:
    """Teacher-forcing agreement of each model with its own answers on each dataset."""
    rows = []
    for model in models:
        cells = [Cell(model)]
        for dataset in datasets:
            forced = provenance[model, dataset]["teacher_forcing"]
            cells.append(
                Cell(
                    f"{100 * forced['agreement']:.2f}%",
                    css="warn" if forced["agreement"] < threshold else "",
                    title=f"{forced['n_rows_disagreeing']} rows depart; "
                    f"{forced['n_tokens']} completion tokens",
                )
            )
        rows.append(Row(cells))
    note = (
        "The share of completion tokens that the model's own forward (the one EAP reads "
        "them with: same dtype and device) predicts as its argmax given their prefix. "
        f"Below {threshold:.0%} (generation.agreement_threshold, highlighted) EAP "
        "attributes text this forward would not have written; hover a cell for the "
        "number of rows that depart."
    )
    return Table(
        columns=["model", *datasets],
        rows=rows,
        caption="Teacher-forcing agreement with the model's own answers",
        notes=[note],
        id="agreement",
    )


def model_source(spec: Mapping) -> str:
    if spec.get("train"):
        train = spec["train"]
        start = f"from {train['init']}" if train.get("init") else "from scratch"
        return (
            f"trained by the workflow: {train['method'].upper()} {start} on "
            f"{', '.join(train['data'])} ({train['steps']} steps, seed {train['seed']})"
        )
    if spec.get("hub_id"):
        return f"hub {spec['hub_id']} @ {spec['revision']}"
    return f"local checkpoint {spec.get('path')}"


def answers_origin(records: Mapping[str, dict]) -> str:
    """Where a model's answers (its generation records by dataset) come from: generated
    by the workflow (with which backend), or imported (the format, and each file's sha256
    to 12 digits)."""
    imported = {d: r for d, r in records.items() if r.get("generated") == "imported"}
    if not imported:
        backends = sorted({r["generated"] for r in records.values() if r.get("generated")})
        if backends:
            return f"generated ({', '.join(backends)} backend)"
        return "generated" if any(records.values()) else MISSING
    file_format = next(iter(imported.values()))["format"]
    hashes = ", ".join(f"{d} {r['sha256'][:12]}" for d, r in imported.items())
    return f"imported ({file_format}; sha256 {hashes})"


def models_table(
    config: Mapping,
    provenance: Mapping[tuple[str, str], dict],
    models: Sequence[str] | None = None,
) -> Table:
    """Models in use: where they come from, the revision that ran (a local model's file
    fingerprint), template, token limit, and whether their answers were imported.

    `models`: the models in use (`Study.models`); by default every configured model with
    a generation record in `provenance`, in config order (the same models: the report
    reads the records of exactly the models in use).
    """
    datasets = list(config["datasets"])
    if models is None:
        recorded = {model for model, _ in provenance}
        models = [model for model in config["models"] if model in recorded]
    rows = []
    for model in models:
        spec = config["models"][model]
        record = provenance.get((model, datasets[0]), {})
        rows.append(
            Row(
                [
                    Cell(model),
                    Cell(model_source(spec)),
                    Cell(str(record.get("source", MISSING))),
                    Cell(str(record.get("revision") or record.get("fingerprint") or MISSING)),
                    Cell(spec["template"]),
                    Cell(format_number(spec["max_new_tokens"])),
                    Cell(f"{record.get('dtype', MISSING)} / {record.get('device', MISSING)}"),
                    Cell(answers_origin({d: provenance.get((model, d), {}) for d in datasets})),
                ]
            )
        )
    return Table(
        columns=[
            "model",
            "configured source",
            "loaded from",
            "revision or fingerprint",
            "template",
            "max_new_tokens",
            "dtype / device",
            "answers",
        ],
        rows=rows,
        caption="Models",
        id="models",
    )


def pairs_table(config: Mapping, pairs: Iterable[str]) -> Table:
    """The enabled `pairs` (`Study.pairs`) with their method and models from the config."""
    rows = [
        Row(
            [
                Cell(pair),
                Cell(config["pairs"][pair]["method"]),
                Cell(config["pairs"][pair]["base"]),
                Cell(config["pairs"][pair]["tuned"]),
            ]
        )
        for pair in pairs
    ]
    return Table(["pair", "method", "base", "tuned"], rows, caption="Model pairs")


def templates_table(config: Mapping, models: Iterable[str]) -> Table:
    """The prompt templates of the models in use (`Study.models`)."""
    used = {config["models"][m]["template"] for m in models}
    rows = [
        Row(
            [
                Cell(name),
                Cell(template["format"]),
                Cell(template["system"] or MISSING),
                Cell(template["user"] or MISSING),
                Cell(", ".join(repr(s) for s in template["stop"]) or MISSING),
            ]
        )
        for name, template in config["templates"].items()
        if name in used
    ]
    return Table(
        ["template", "format", "system", "user", "stop strings"],
        rows,
        caption="Prompt templates ({question} is replaced by the problem)",
        css="code-cells",
    )


def dataset_source(provenance: Mapping) -> str:
    """Where a dataset's rows came from, in words (and how many were read, if limited)."""
    described = describe_source(provenance)
    limit = provenance.get("limit")
    return f"{described}, first {limit} rows" if limit else described


def describe_source(provenance: Mapping) -> str:
    source = provenance.get("source")
    if source == "hub":
        config = provenance.get("hub_config")
        configs = ", ".join(config) if isinstance(config, list) else config
        return (
            f"hub {provenance.get('hub_id')} ({configs or 'default'}, split "
            f"{provenance.get('split')}) @ {provenance.get('revision')}"
        )
    if source == "url":
        return f"{provenance.get('url')} (sha256 {provenance.get('sha256')})"
    if source == "jsonl":
        return f"local file {provenance.get('path')}"
    if source == "toy":
        settings = ", ".join(f"{k} {v}" for k, v in sorted(provenance.get("toy", {}).items()))
        return f"toy generator ({settings})"
    return str(source)


def datasets_table(summaries: Mapping[str, dict]) -> Table:
    rows = []
    for dataset, summary in summaries.items():
        provenance = summary.get("provenance", {})
        dropped = summary.get("dropped") or {}
        rows.append(
            Row(
                [
                    Cell(dataset),
                    Cell(dataset_source(provenance)),
                    Cell(format_number(summary.get("n_raw"))),
                    Cell(", ".join(f"{k}: {v}" for k, v in dropped.items()) or "none"),
                    Cell(format_number(summary.get("n_kept"))),
                    Cell(summary.get("sha256", MISSING), css="hash"),
                ]
            )
        )
    return Table(
        ["dataset", "source", "rows read", "dropped", "kept", "sha256 of the normalised rows"],
        rows,
        caption="Datasets",
        id="datasets",
    )


FILTER_READINGS = {
    "exact": (
        "Bounds are inclusive and exact (T a fraction, each coefficient the decimal written "
        "in the config), and the answer window of α is cut_len = max(1, ⌊α·T⌋) tokens."
    ),
    "paper": (
        "Bounds and windows are read as the paper's code reads them (filter.mode: paper): T "
        "in floats, the bounds truncated to integers, int(coefficient·T), the balance test "
        "as difference / mean > coefficient, and the answer window of α cut_len = "
        "max(int(T·α), 1) tokens."
    ),
}


def batching_text(generation: Mapping) -> str:
    """How the answers were batched, for the methods text."""
    if generation["backend"] == "continuous":
        return (
            "with transformers' continuous batching (paged attention: a row leaves the "
            "running batch when it ends and a waiting prompt takes its place)"
        )
    return f"in fixed left-padded batches of {generation['batch_size']}"


def methods_paragraphs(
    config: Mapping, n_tests: int, *, calibrated: Sequence[str], calibration_alpha: str
) -> list[Markup]:
    """The methods text, generated from the config (values escaped): the answers, the
    filter, EAP, the statistics, the readings, the known-answer pairs (of the
    `calibrated` models at `calibration_alpha`: `Study.calibrated` and
    `Study.calibration_alpha`) and the verdicts."""
    filters = config["filter"]
    stats = config["stats"]
    alphas = ", ".join(str(a) for a in config["eap"]["alphas"])
    return [
        Markup(
            "Every model answers every problem greedily with its prompt template and its own "
            "<code>max_new_tokens</code> (tables below), {batching}; a completion "
            "ends at an EOS token, a stop string or the token limit. Answers are graded with "
            "<code>math-verify</code> (<code>parse</code> + <code>verify</code>) against the "
            "normalised gold answer."
        ).format(batching=batching_text(config["generation"])),
        Markup(
            "For each pair and dataset the two models' answers are joined by problem id and "
            "the problems both answered correctly are kept. With T the smaller of the two "
            "models' mean answer lengths (tokens) over those problems, a problem is dropped "
            "when its prompt has a different number of tokens for the two models, when the "
            "mean of its two answer lengths lies outside [{small}·T, {big}·T], or when its two "
            "answer lengths differ by more than {balance} of their mean. Then {n} problems are "
            "sampled with seed {seed} (all of them when fewer are left). {reading}{eos}"
        ).format(
            small=filters["small_coeff"],
            big=filters["big_coeff"],
            balance=filters["balance_coeff"],
            n=filters["num_samples"],
            seed=filters["seed"],
            reading=FILTER_READINGS[filters["mode"]],
            eos=(
                " An answer that ended on EOS counts it in its length, as vLLM's token ids do."
                if filters["count_eos"]
                else ""
            ),
        ),
        Markup(
            "Edge Attribution Patching on the residual graph at block granularity: forward "
            "nodes <code>input</code> (embedding), <code>a<i>l</i></code> (attention output) "
            "and <code>m<i>l</i></code> (MLP output) of each layer <i>l</i>; backward nodes "
            "<code>a<i>l</i>.q</code>, <code>a<i>l</i>.k</code>, <code>a<i>l</i>.v</code> "
            "(each projection's own copy of the residual stream), <code>m<i>l</i></code> and "
            "<code>logits</code>; an edge u → v exists when u is computed before v reads the "
            "residual stream. For each answer fraction α in {{{alphas}}} a model reads the "
            "prompt and the first cut_len tokens of its own answer (above); under the paper's "
            "loss L is its mean cross-entropy on those tokens (the other readings below), and "
            "edge u → v scores "
            "−Σ O<sub>u</sub> · ∂L/∂in<sub>v</sub> over positions and hidden dimensions "
            "(one forward and one backward pass per batch, accumulated in float32)."
        ).format(alphas=alphas),
        Markup(
            "Statistics, with problems paired by id. Per-sample metrics: the two-sided "
            "Wilcoxon signed-rank test on the per-sample differences, a paired BCa bootstrap "
            "95% CI ({n_resamples} resamples) and the matched-pairs rank-biserial correlation "
            "as effect size. Activation intensity is tested on the per-sample log ratios "
            "log(tuned/base), and its change is the geometric mean of the per-sample ratios "
            "(the ratio of means, which a few samples can dominate, is kept as a secondary "
            "reading). Pooled metrics (one value per model): a two-sided paired permutation "
            "test ({n_resamples} resamples) that swaps base and tuned within a problem. An α "
            "whose windows equal a smaller α's for every problem is a duplicate: reported as "
            "the same window, left out of the corrections. q-values: Benjamini–Hochberg "
            "within each family of each pair (so controls never change a study pair's "
            "q-values): primary, the headline tests under the paper's loss on own answers "
            "({n_tests} over all pairs); secondary, every other loss, comparison and variant; "
            "confidence, the window diagnostics. Every change is shown beside the change of "
            "the window's cross-entropy, with the Spearman correlation of the two across "
            "samples. Random seed {seed}."
        ).format(n_resamples=stats["n_resamples"], n_tests=n_tests, seed=stats["seed"]),
        LOSSES_TEXT,
        calibration_text(config, calibrated, calibration_alpha),
        VERDICT_RULE_TEXT,
    ]


def fidelity_table(config: Mapping, measured: pd.DataFrame) -> Table:
    """Every known deviation from the paper's code, this study's setting of it, and its
    measured effect (`circuitry.analysis.fidelity`)."""
    found = effects(measured, config)
    rows = [
        Row(
            [
                Cell(deviation.choice),
                Cell(deviation.paper),
                Cell(
                    f"{deviation.setting}: {configured(config, deviation.setting)}"
                    if deviation.setting
                    else MISSING
                ),
                Cell(found[deviation.key]),
            ]
        )
        for deviation in DEVIATIONS
    ]
    columns = ["choice", "paper's code", "setting in this study", "measured effect"]
    return Table(columns, rows, id="fidelity-table")


def provenance_table(provenance: Provenance) -> Table:
    git = provenance.git
    if git.commit is None:
        commit = "not a git checkout"
    else:
        commit = git.commit + (" (with uncommitted changes)" if git.dirty else "")
    items = [
        ("config hash", provenance.config_hash),
        ("git commit", commit),
        ("run date", provenance.run_date),
        ("python", provenance.python),
        ("platform", provenance.platform),
    ]
    items += [
        (f"package {name}", version or "not installed")
        for name, version in provenance.packages.items()
    ]
    return Table(
        ["", "value"],
        [Row([Cell(key), Cell(value)]) for key, value in items],
        caption="Provenance",
        id="provenance-table",
    )


def reproduce_text(provenance: Provenance) -> str:
    """The shell lines that reproduce the run: the checkout, then the snakemake command."""
    lines = []
    if provenance.git.commit:
        lines.append(f"git checkout {provenance.git.commit}")
    lines.append(provenance.command)
    return "\n".join(lines)
