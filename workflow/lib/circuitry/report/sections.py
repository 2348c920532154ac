"""The report's sections in order, each built from the study's outputs: the answer first
(the summary and the headline table), the detail after it, folded.

Every section shows what it found in words; its tables and figures fold (`Details`) where
they are detail, and unfold where a check failed. Optional sections (training dynamics,
faithfulness, weights) are just more `Section`s: pass them as `extra_sections` to
`build_sections`, which folds their figures and tables under their captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from markupsafe import Markup

from circuitry.analysis.results import EXAMPLE_CHARS, N_EXAMPLES, Study, pair_label
from circuitry.display import slug
from circuitry.figures.metrics import CONFIDENCE_CAPTION
from circuitry.figures.pair import pair_figure_captions
from circuitry.provenance import Provenance
from circuitry.report.blocks import (
    Code,
    Details,
    Examples,
    Figure,
    Section,
    Table,
    Text,
    figure,
    fold,
)
from circuitry.report.calibration import calibration_blocks
from circuitry.report.confidence import (
    IDENTITY_FAILED,
    IDENTITY_PASSED,
    controls_table,
    decomposition_table,
    identity_sentence,
    is_exact_null,
    pair_role,
    replicate_table,
)
from circuitry.report.findings import (
    PIPELINE_CHECK_NOTE,
    alpha_choice,
    alpha_sweep_table,
    headline_pairs,
    headline_table,
    is_pipeline_check,
    study_pairs_first,
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
from circuitry.report.summary import summary_table
from circuitry.report.variants import (
    all_tests_table,
    definitions_table,
    variant_conclusion,
    variant_table,
)

# The figures of a pair that sweep alpha: its metrics against alpha and each dataset's
# per-edge change at every alpha (`circuitry.paths.edge_change_figure_name`).
ALPHA_SWEEP_FIGURES = ("metrics_vs_alpha", "edge_change/")


def exact_nulls(study: Study) -> set[str]:
    """The identity controls that came out as the exact null they must be: one line each
    in the report, no figures."""
    return {
        pair
        for pair, kind in study.controls.items()
        if kind == "identity" and is_exact_null(study.tests, pair)
    }


def is_alpha_sweep(name: str) -> bool:
    return name.startswith(ALPHA_SWEEP_FIGURES)


def pair_blocks(study: Study, pair: str) -> list:
    """One pair's models, filtering funnel and figures, the alpha sweeps folded once more."""
    spec = study.config["pairs"][pair]
    label = pair_label(pair, spec["method"])
    summaries = {d: study.pair_summaries[pair, d] for d in study.datasets}
    captions = pair_figure_captions(label, study.datasets)
    figures = {
        name: figure(path, captions[name])
        for name, path in study.pair_figures[pair].items()
        if name != "confidence"
    }
    intro = Text(
        [
            Markup("Base <code>{base}</code> → tuned <code>{tuned}</code> ({method}).").format(
                base=spec["base"], tuned=spec["tuned"], method=spec["method"]
            )
        ]
    )
    sweeps = [block for name, block in figures.items() if is_alpha_sweep(name)]
    return [
        intro,
        funnel_table(summaries, study.alphas),
        *(block for name, block in figures.items() if not is_alpha_sweep(name)),
        Details("α sweep: the headline metrics and each edge's change at every α", sweeps),
    ]


def pair_details(study: Study, pair: str, exact_null: bool) -> Details | Text:
    """One pair folded under its name and role; an identity control that is the exact
    null it must be reads as one line, one that is not unfolds under its failure."""
    label = pair_label(pair, study.pairs[pair])
    if exact_null:
        return Text([f"{label}: {IDENTITY_PASSED}."])
    if study.controls.get(pair) == "identity":
        return Details(f"{label}: {IDENTITY_FAILED}", pair_blocks(study, pair), open=True)
    role = pair_role(study.config["pairs"][pair])
    return Details(f"{label}: {role}", pair_blocks(study, pair))


def pairs_section(study: Study) -> Section:
    intro = Text(
        [
            "Per pair, folded: its models, the filtering funnel and the figures; inside, the "
            "α sweep figures fold once more. The study pairs first, then their controls "
            "and seed replicates."
        ]
    )
    nulls = exact_nulls(study)
    folds = [
        pair_details(study, pair, pair in nulls)
        for pair in study_pairs_first(study.pairs, study.config["pairs"])
    ]
    return Section("pairs", "Pairs", [intro, *folds])


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


def summary_section(study: Study, alpha: float) -> Section:
    """The answer in one screen: each pair's verdicts, calibration and survival, then the
    headline table."""
    neutral = is_pipeline_check(study.config)
    intro = [Text([PIPELINE_CHECK_NOTE])] if neutral else []
    return Section(
        "summary",
        "Summary",
        [
            *intro,
            summary_table(
                study.verdicts,
                study.tests,
                study.pairs,
                study.config["pairs"],
                study.datasets,
                alpha,
                neutral=neutral,
            ),
            headline_table(
                study.verdicts,
                headline_pairs(study.pairs, study.config["pairs"]),
                study.datasets,
                alpha,
                neutral=neutral,
            ),
        ],
    )


def headline_section(study: Study, alpha: float) -> Section:
    """The headline results at every alpha: side by side, and one table per other alpha."""
    pairs = headline_pairs(study.pairs, study.config["pairs"])
    neutral = is_pipeline_check(study.config)
    verdicts = study.verdicts
    others = [
        headline_table(
            verdicts,
            pairs,
            study.datasets,
            other,
            neutral=neutral,
            table_id=f"headline-table-alpha-{slug(str(other))}",
        )
        for other in study.alphas
        if other != alpha
    ]
    sweep = alpha_sweep_table(verdicts, pairs, study.datasets, study.alphas, neutral=neutral)
    blocks = [Text([alpha_choice(alpha, study.alphas)]), *map(fold, [sweep, *others])]
    return Section("headline", "Headline results at every α", blocks)


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
        blocks.append(fold(decomposition_table(study.tests, study.pairs, study.datasets, alpha)))
    nulls = exact_nulls(study)
    scatters = [
        figure(
            study.pair_figures[pair]["confidence"],
            CONFIDENCE_CAPTION.format(pair=pair_label(pair, method)),
        )
        for pair, method in study.pairs.items()
        if pair not in nulls
    ]
    blocks.append(Details("Intensity change against confidence change, per pair", scatters))
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
            fold(definitions_table()),
            fold(variant_table(study.tests, study.pairs, neutral)),
            Details("Tests under the paper's loss", [all_tests_table(study.tests, neutral)]),
        ],
    )


def examples_section(study: Study) -> Section:
    """Each pair's example problems and both models' answers, folded per pair."""
    intro = Text(
        [
            f"The first {N_EXAMPLES} analysed problems (by id) of each pair and dataset, with "
            f"both models' greedy answers (the first {EXAMPLE_CHARS:,} characters; model "
            "output is shown as plain text)."
        ]
    )
    folds = [
        Details(
            pair_label(pair, method),
            [
                block
                for dataset in study.datasets
                for block in (Text([f"On {dataset}:"]), Examples(study.examples[pair, dataset]))
            ],
        )
        for pair, method in study.pairs.items()
    ]
    return Section("examples", "Example completions", [intro, *folds])


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
    curves = [
        figure(path, f"{model}: {model_source(study.config['models'][model])}")
        for model, path in study.training_figures.items()
    ]
    blocks = [
        Text(["Per-step training logs of the models this workflow trained itself."]),
        Details(f"Training curves of {len(curves)} models", curves),
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
        [
            intro,
            Details("Each choice and its effect", [fidelity_table(study.config, study.fidelity)]),
        ],
    )


def provenance_section(study: Study, provenance: Provenance) -> Section:
    """Config hash, code and package versions, model and dataset sources, the command."""
    return Section(
        "provenance",
        "Provenance and reproduction",
        [
            provenance_table(provenance),
            Code(reproduce_text(provenance), caption="Reproduce this report"),
            Details(
                "Models and datasets",
                [
                    models_table(study.config, study.generation_provenance, study.models),
                    datasets_table(study.dataset_summaries),
                ],
            ),
        ],
    )


def fold_detail(section: Section) -> Section:
    """`section` with its figures and tables folded under their captions, its words shown."""
    blocks = [
        fold(block) if isinstance(block, Figure | Table) and block.caption else block
        for block in section.blocks
    ]
    return replace(section, blocks=blocks)


def build_sections(
    study: Study,
    provenance: Provenance,
    *,
    headline_alpha: float | None = None,
    extra_sections: Sequence[Section] = (),
) -> list[Section]:
    """The report's sections in order: the summary, the calibration its verdicts rest on,
    the detail; `extra_sections` go after the results, before methods, their figures and
    tables folded."""
    alpha = headline_alpha_of(study, headline_alpha)
    sections = [
        summary_section(study, alpha),
        calibration_section(study),
        headline_section(study, alpha),
        confidence_section(study, alpha),
        pairs_section(study),
        metrics_section(study),
        accuracy_section(study),
        examples_section(study),
        training_section(study),
        *map(fold_detail, extra_sections),
        methods_section(study),
        fidelity_section(study),
        provenance_section(study, provenance),
    ]
    return [section for section in sections if section is not None]
