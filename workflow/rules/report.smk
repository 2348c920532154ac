# Figures of every pair and the single-file HTML report of the study.


localrules:
    report,


rule figures:
    input:
        lambda wildcards: LAYOUT.figure_inputs(config, wildcards.pair),
    output:
        [
            report(
                path,
                caption=f"../report/{name.split('/')[0]}.rst",
                category="Pairs",
                subcategory="{pair}",
                labels={"pair": "{pair}", "figure": name},
            )
            for name, path in LAYOUT.pair_figures("{pair}", DATASETS).items()
        ],
    log:
        "logs/figures/{pair}.log",
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
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
        conda:
            "../../envs/circuitry.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            models=list(TRAINING_FIGURES),
            train=[config["models"][m]["train"] for m in TRAINING_FIGURES],
        script:
            "../scripts/training_figures.py"


rule report:
    input:
        **{f"dynamics_{name}": path for name, path in dynamics_report_inputs().items()},
        files=LAYOUT.report_inputs(config),
        template=REPORT_TEMPLATE,
    output:
        REPORT,
    log:
        "logs/report.log",
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
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
