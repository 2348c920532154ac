# Training dynamics: RL runs followed checkpoint by checkpoint. Each checkpoint answers the
# eval dataset through the study's generation rule; its circuits are scored on its initial
# model's fixed problem set, on the initial model's answers and on its own, and compared
# with the initial model's.


include: "dynamics_helpers.smk"


if CHECKPOINTS:

    # A `train` run: GRPO from its initial model, trl saving checkpoint-<step> folders.
    rule train_dynamics:
        input:
            unpack(dynamics_train_inputs),
        output:
            directory(RUN_DIR),
        log:
            "logs/train_dynamics/{run}.log",
        benchmark:
            "benchmarks/train_dynamics/{run}.tsv"
        wildcard_constraints:
            run=one_of(TRAIN_RUNS),
        conda:
            "../../envs/circuitry.yaml"
        threads: lambda wildcards: model_threads(RUNS[wildcards.run]["init"])
        resources:
            mem_mb=lambda wildcards: model_mem_mb(RUNS[wildcards.run]["init"]),
            runtime=lambda wildcards: model_runtime(
                RUNS[wildcards.run]["init"], per_billion=480
            ),
            gpu=lambda wildcards: model_gpus(RUNS[wildcards.run]["init"]),
        params:
            code=code_of("train_dynamics.py"),
            settings=lambda wildcards: runs.grpo_settings(RUNS[wildcards.run]["train"]),
            init=lambda wildcards: model_spec(MODEL_SPECS, RUNS[wildcards.run]["init"]),
            template=lambda wildcards: template_of(RUNS[wildcards.run]["init"]),
        script:
            "../scripts/train_dynamics.py"

    # A checkpoint that is a PEFT adapter, merged onto its run's initial model.
    rule merge_adapter:
        input:
            unpack(merge_inputs),
        output:
            directory(TRAINED_MODEL_DIR),
        log:
            "logs/merge_adapter/{model}.log",
        benchmark:
            "benchmarks/merge_adapter/{model}.tsv"
        wildcard_constraints:
            model=one_of(adapter_models()),
        conda:
            "../../envs/circuitry.yaml"
        threads: lambda wildcards: model_threads(wildcards.model)
        resources:
            mem_mb=lambda wildcards: model_mem_mb(wildcards.model),
            runtime=lambda wildcards: model_runtime(wildcards.model, per_billion=5),
        params:
            code=code_of("merge_adapter.py"),
            init=lambda wildcards: model_spec(
                MODEL_SPECS, initial_model(wildcards.model)
            ),
        script:
            "../scripts/merge_adapter.py"

    localrules:
        dynamics_problems,
        dynamics,

    # An initial model's correct answers, filtered by its lengths: the problems of every
    # checkpoint of its runs, and one reference length T.
    rule dynamics_problems:
        input:
            GENERATIONS.format(model="{init}", dataset=DYNAMICS_EVAL),
        output:
            rows=DYNAMICS_PROBLEMS,
            summary=DYNAMICS_PROBLEMS_SUMMARY,
        log:
            "logs/dynamics_problems/{init}.log",
        benchmark:
            "benchmarks/dynamics_problems/{init}.tsv"
        wildcard_constraints:
            init=one_of(DYNAMICS_INITS),
        conda:
            "../../envs/circuitry.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            code=code_of("dynamics_problems.py"),
            dataset=DYNAMICS_EVAL,
            filter=config["filter"],
        script:
            "../scripts/dynamics_problems.py"

    # A checkpoint on its initial model's answers and on its own correct ones.
    rule eap_score_checkpoint:
        input:
            unpack(dynamics_score_inputs),
        output:
            dynamics_score_files(runs.TEXTS),
        log:
            "logs/eap_score_dynamics/{model}.log",
        benchmark:
            "benchmarks/eap_score_dynamics/{model}.tsv"
        wildcard_constraints:
            model=one_of(c.name for c in CHECKPOINTS),
        conda:
            "../../envs/circuitry.yaml"
        threads: lambda wildcards: model_threads(wildcards.model)
        resources:
            mem_mb=lambda wildcards: model_mem_mb(wildcards.model),
            runtime=lambda wildcards: model_runtime(wildcards.model, per_billion=60),
            gpu=lambda wildcards: model_gpus(wildcards.model),
        params:
            code=code_of("eap_score_dynamics.py"),
            model=lambda wildcards: model_spec(MODEL_SPECS, wildcards.model),
            role="tuned",
            texts=list(runs.TEXTS),
            losses=EAP_LOSSES,
            alpha=DYNAMICS_ALPHA,
            batch_size=config["eap"]["batch_size"],
        script:
            "../scripts/eap_score_dynamics.py"

    # An initial model on its own answers: the reference of every checkpoint of its runs.
    use rule eap_score_checkpoint as eap_score_initial with:
        output:
            dynamics_score_files(["initial"]),
        wildcard_constraints:
            model=one_of(DYNAMICS_INITS),
        params:
            role="base",
            texts=["initial"],

    rule dynamics:
        input:
            **dynamics_inputs(),
        output:
            summary=DYNAMICS_OUTPUTS["summary"],
            highlights=DYNAMICS_OUTPUTS["highlights"],
            training_figure=report(
                DYNAMICS_OUTPUTS["training_figure"],
                caption="../report/dynamics_training.rst",
                category="Training dynamics",
                labels={"figure": "logged series"},
            ),
            metrics_figure=report(
                DYNAMICS_OUTPUTS["metrics_figure"],
                caption="../report/dynamics_metrics.rst",
                category="Training dynamics",
                labels={"figure": "accuracy and circuit change"},
            ),
        log:
            "logs/dynamics.log",
        benchmark:
            "benchmarks/dynamics.tsv"
        conda:
            "../../envs/circuitry.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            code=code_of("dynamics.py"),
            models=dynamics_models(),
            scored=dynamics_scored(),
            runs=runs.run_steps(config, CHECKPOINTS),
            losses=EAP_LOSSES,
            stats=config["stats"],
            log_runs=list(dynamics_logs()),
        script:
            "../scripts/dynamics.py"
