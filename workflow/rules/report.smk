# Figures of every pair and the single-file HTML report of the study. Each script gets its
# files as named inputs (kind -> paths) and their keys as params, in the same order.


include: "report_helpers.smk"


localrules:
    report,


FIGURE_FILES = LAYOUT.figure_files("{pair}", DATASETS, config["eap"]["alphas"])
PAIR_FIGURES = LAYOUT.pair_figures("{pair}", DATASETS)
REPORT_FILES = LAYOUT.report_files(report_scope(config))


rule figures:
    input:
        **named_inputs(FIGURE_FILES),
    output:
        [
            report(
                path,
                caption=f"../report/{name.split('/')[0]}.rst",
                category="Pairs",
                subcategory="{pair}",
                labels={"pair": "{pair}", "figure": name},
            )
            for name, path in PAIR_FIGURES.items()
        ],
    log:
        "logs/figures/{pair}.log",
    benchmark:
        "benchmarks/figures/{pair}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        code=code_of("figures.py"),
        file_keys=input_keys(FIGURE_FILES),
        figures=list(PAIR_FIGURES),
        pair=lambda wildcards: wildcards.pair,
        method=lambda wildcards: config["pairs"][wildcards.pair]["method"],
    script:
        "../scripts/figures.py"


if TRAINING_FIGURES:

    # One job draws every trained model's curves: a job's start-up costs more than a figure.
    rule training_figures:
        input:
            [TRAINED_MODEL_DIR.format(model=m) for m in TRAINING_FIGURES],
        output:
            [
                report(
                    path,
                    caption="../report/training.rst",
                    category="Training",
                    labels={"model": model},
                )
                for model, path in TRAINING_FIGURES.items()
            ],
        log:
            "logs/training_figures.log",
        benchmark:
            "benchmarks/training_figures.tsv"
        conda:
            "../../envs/circuitry.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            code=code_of("training_figures.py"),
            models=list(TRAINING_FIGURES),
            train=[config["models"][m]["train"] for m in TRAINING_FIGURES],
            # each trained model's log, inside the directory its training job writes
            logs=[TRAINING_LOG.format(model=m) for m in TRAINING_FIGURES],
        script:
            "../scripts/training_figures.py"


rule report:
    input:
        **named_inputs(REPORT_FILES),
        **{f"dynamics_{name}": path for name, path in dynamics_report_inputs().items()},
        **{
            f"faithfulness_{name}": path
            for name, path in faithfulness_report_inputs().items()
        },
        **{f"weights_{name}": path for name, path in weights_report_inputs().items()},
        template=REPORT_TEMPLATE,
    output:
        REPORT,
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        code=code_of("report.py"),
        file_keys=input_keys(REPORT_FILES),
        weight_figures=list(WEIGHT_FIGURES),
        # the validated config: the report describes it (methods, provenance)
        config=config,
        command=reproduce_command(
            cores=None,
            configfiles=workflow.overwrite_configfiles,
            config_args=workflow.config_settings.config_args or (),
            project_dir=PROJECT_DIR,
        ),
        # the checkout the template lives in (workflow/report/report.html.j2)
        project_dir=lambda wildcards, input: str(Path(input.template).parents[2]),
    script:
        "../scripts/report.py"
