"""The report's sections in order, each built from the study's outputs.

Optional sections (training curves, training dynamics) are just more `Section`s: pass
them as `extra_sections` to `build_sections`; the template renders any block list.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup

from circuitry.analysis.results import EXAMPLE_CHARS, N_EXAMPLES, Study, pair_label
from circuitry.display import format_alpha, slug
from circuitry.figures.metrics import CONFIDENCE_CAPTION
from circuitry.figures.pair import pair_figure_captions
from circuitry.provenance import Provenance
from circuitry.report.blocks import Code, Details, Examples, Section, Text, figure
from circuitry.report.calibration import calibration_blocks
from circuitry.report.confidence import (
    controls_table,
    decomposition_table,
    identity_sentence,
    replicate_table,
)
from circuitry.report.findings import (
    PIPELINE_CHECK_NOTE,
    alpha_choice,
    alpha_sweep_table,
    headline_pairs,
    headline_table,
    is_pipeline_check,
    overview_text,
)
from circuitry.report.methods import (
    accuracy_table,
    agreement_table,
    datasets_table,
    fidelity_table,
    funnel_table,
    methods_paragraphs,
    model_source,
    models_table,
    pairs_table,
    provenance_table,
    reproduce_text,
    templates_table,
)
from circuitry.report.variants import (
    all_tests_table,
    definitions_table,
    variant_conclusion,
    variant_table,
)


def pair_section(study: Study, pair: str) -> Section:
    """One pair: its models, the filtering funnel, and its figures."""
    spec = study.config["pairs"][pair]
    label = pair_label(pair, spec["method"])
    summaries = {d: study.pair_summaries[pair, d] for d in study.datasets}
    captions = pair_figure_captions(label, study.datasets)
    figures = [
        figure(path, captions[name])
        for name, path in study.pair_figures[pair].items()
        if name != "confidence"
    ]
    intro = Text(
        [
            Markup("Base <code>{base}</code> → tuned <code>{tuned}</code> ({method}).").format(
                base=spec["base"], tuned=spec["tuned"], method=spec["method"]
            )
        ]
    )
    return Section(
        f"pair-{slug(pair)}", label, [intro, funnel_table(summaries, study.alphas), *figures]
    )


def headline_alpha_of(study: Study, alpha: float | None) -> float:
    """The alpha of the main table: `alpha` if given (must be configured), else the largest."""
    if alpha is None:
        return max(study.alphas)
    if alpha not in study.alphas:
        raise ValueError(f"headline alpha {alpha} is not one of eap.alphas {study.alphas}")
    return alpha


def calibration_section(study: Study) -> Section:
    """The known-answer pairs that prove the calibrated reading, before any verdict."""
    return Section("calibration", "Calibration", calibration_blocks(study.calibration))


def headline_section(study: Study, alpha: float) -> Section:
    pairs = headline_pairs(study.pairs, study.config["pairs"])
    neutral = is_pipeline_check(study.config)
    verdicts = study.verdicts
    others = [a for a in study.alphas if a != alpha]
    intro = [PIPELINE_CHECK_NOTE] if neutral else []
    intro += [*overview_text(verdicts, pairs, alpha), alpha_choice(alpha, study.alphas)]
    blocks = [
        Text(intro),
        headline_table(verdicts, pairs, study.datasets, alpha, neutral=neutral),
        alpha_sweep_table(verdicts, pairs, study.datasets, study.alphas, neutral=neutral),
    ]
    blocks += [
        Details(
            f"Table at {format_alpha(other)}",
            [
                headline_table(
                    verdicts,
                    pairs,
                    study.datasets,
                    other,
                    neutral=neutral,
                    table_id=f"headline-table-alpha-{slug(str(other))}",
                )
            ],
        )
        for other in others
    ]
    return Section("headline", "Headline results", blocks)


def confidence_section(study: Study, alpha: float) -> Section:
    """Confidence beside every change: controls, seed agreement, crossed design, scatters."""
    neutral = is_pipeline_check(study.config)
    verdicts = study.verdicts
    controls = study.controls
    groups = study.replicates
    intro = [
        "A change in the EAP scores can come from the circuit or from the model's "
        "confidence: under the paper's loss (mean cross-entropy of the answer window) every "
        "score is scaled by the logit gradient, which shrinks as a model grows surer of "
        "its answer. The calibrated reading (target_unit) gives the centred target logit a "
        "gradient of unit length at every final-norm input, so a pure change of the "
        "model's temperature reads exactly zero (proven on known answers: see "
        "Calibration). ce_unit, a unit-length gradient at the logits, is kept as a "
        "reading but is not confidence-free: a temperature change alone moves it. The "
        "window loss itself is reported beside every change.",
        *(
            identity_sentence(study.tests, pair, study.config)
            for pair, kind in controls.items()
            if kind == "identity"
        ),
    ]
    blocks: list = [
        Text(intro),
        controls_table(
            verdicts, study.pairs, study.config["pairs"], study.datasets, alpha, neutral
        ),
    ]
    if groups:
        blocks.append(replicate_table(verdicts, groups))
    if (study.tests["comparison"] != "own").any():
        blocks.append(decomposition_table(study.tests, study.pairs, study.datasets, alpha))
    blocks += [
        figure(
            study.pair_figures[pair]["confidence"],
            CONFIDENCE_CAPTION.format(pair=pair_label(pair, method)),
        )
        for pair, method in study.pairs.items()
    ]
    return Section("confidence", "Confidence and controls", blocks)


def metrics_section(study: Study) -> Section:
    neutral = is_pipeline_check(study.config)
    return Section(
        "metrics",
        "Metrics and variants",
        [
            Text(
                [
                    "Where the paper's definition is ambiguous, variants are computed "
                    "alongside the headline metric; the table shows whether the conclusion "
                    "depends on the variant.",
                    *variant_conclusion(study.tests),
                ]
            ),
            definitions_table(),
            variant_table(study.tests, study.pairs, neutral),
            Details("Tests under the paper's loss", [all_tests_table(study.tests, neutral)]),
        ],
    )


def examples_section(study: Study) -> Section:
    subsections = [
        Section(
            f"examples-{slug(pair)}-{slug(dataset)}",
            f"{pair_label(pair, method)} on {dataset}",
            [Examples(study.examples[pair, dataset])],
        )
        for pair, method in study.pairs.items()
        for dataset in study.datasets
    ]
    intro = Text(
        [
            f"The first {N_EXAMPLES} analysed problems (by id) of each pair and dataset, with "
            f"both models' greedy answers (the first {EXAMPLE_CHARS:,} characters; model "
            "output is shown as plain text)."
        ]
    )
    return Section("examples", "Example completions", [intro], subsections)


def accuracy_section(study: Study) -> Section:
    return Section(
        "accuracy",
        "Model accuracy",
        [
            accuracy_table(study.generation_provenance, study.models, study.datasets),
            agreement_table(
                study.generation_provenance,
                study.models,
                study.datasets,
                study.config["generation"]["agreement_threshold"],
            ),
        ],
    )


def training_section(study: Study) -> Section | None:
    """Training curves of the models the workflow trained; None when it trained none."""
    if not study.training_figures:
        return None
    blocks = [
        Text(["Per-step training logs of the models this workflow trained itself."]),
        *(
            figure(path, f"{model}: {model_source(study.config['models'][model])}")
            for model, path in study.training_figures.items()
        ),
    ]
    return Section("training", "Training curves", blocks)


def methods_section(study: Study) -> Section:
    primary = study.tests["family"] == "primary"
    n_tests = int((primary & study.tests["p"].notna() & study.tests["duplicate_of"].isna()).sum())
    return Section(
        "methods",
        "Methods",
        [
            Text(
                methods_paragraphs(
                    study.config,
                    n_tests,
                    calibrated=list(study.calibrated),
                    calibration_alpha=study.calibration_alpha,
                )
            ),
            pairs_table(study.config, study.pairs),
            templates_table(study.config, study.models),
        ],
    )


def fidelity_section(study: Study) -> Section:
    intro = Text(
        [
            "Where the paper's code (run_tests.py, its EAP fork and its vLLM evaluation) "
            "makes a choice the project makes otherwise. A listed setting reproduces the "
            "paper's choice; each effect is measured on this study's own files (rule "
            "fidelity) unless the row says otherwise."
        ]
    )
    return Section(
        "fidelity",
        "Fidelity to the paper's code",
        [intro, fidelity_table(study.config, study.fidelity)],
    )


def provenance_section(study: Study, provenance: Provenance) -> Section:
    """Config hash, code and package versions, model and dataset sources, the command."""
    return Section(
        "provenance",
        "Provenance and reproduction",
        [
            provenance_table(provenance),
            models_table(study.config, study.generation_provenance, study.models),
            datasets_table(study.dataset_summaries),
            Code(reproduce_text(provenance), caption="Reproduce this report"),
        ],
    )


def build_sections(
    study: Study,
    provenance: Provenance,
    *,
    headline_alpha: float | None = None,
    extra_sections: Sequence[Section] = (),
) -> list[Section]:
    """The report's sections in order; `extra_sections` go after the results, before methods."""
    alpha = headline_alpha_of(study, headline_alpha)
    sections = [
        calibration_section(study),
        headline_section(study, alpha),
        confidence_section(study, alpha),
        Section(
            "pairs",
            "Pairs",
            [Text(["Per pair: the filtering funnel and the figures."])],
            [pair_section(study, pair) for pair in study.pairs],
        ),
        metrics_section(study),
        accuracy_section(study),
        examples_section(study),
        training_section(study),
        *extra_sections,
        methods_section(study),
        fidelity_section(study),
        provenance_section(study, provenance),
    ]
    return [section for section in sections if section is not None]
