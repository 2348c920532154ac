# Training dynamics: GRPO runs with checkpoints. Each checkpoint answers the eval dataset
# through the study's generation rule; its circuits are scored on one fixed problem set,
# on the initial model's answers and on its own, and compared with the initial model's.


if CHECKPOINTS:

    rule train_dynamics:
        input:
            unpack(dynamics_train_inputs),
        output:
            checkpoints=[directory(d) for d in checkpoint_dir_patterns()],
            log="results/dynamics/t{temperature}/training_log.csv",
        log:
            "logs/train_dynamics/t{temperature}.log",
        benchmark:
            "benchmarks/train_dynamics/t{temperature}.tsv"
        conda:
            "../../envs/circuitry.yaml"
        threads: lambda wildcards: model_threads(DYNAMICS_INIT)
        resources:
            mem_mb=lambda wildcards: model_mem_mb(DYNAMICS_INIT),
            runtime=lambda wildcards: model_runtime(DYNAMICS_INIT, per_billion=480),
            gpu=lambda wildcards: model_gpus(DYNAMICS_INIT),
        params:
            settings=lambda wildcards: dynamics.grpo_settings(
                config["dynamics"], wildcards.temperature
            ),
            template=template_of(DYNAMICS_INIT),
        script:
            "../scripts/train_dynamics.py"

    localrules:
        dynamics_problems,
        dynamics,

    # The initial model's correct answers, filtered by its lengths: every checkpoint's
    # problems, and one reference length T.
    rule dynamics_problems:
        input:
            f"results/generations/{DYNAMICS_INIT}/{config['dynamics']['eval_dataset']}.jsonl",
        output:
            rows=DYNAMICS_PROBLEMS,
            summary=DYNAMICS_PROBLEMS_SUMMARY,
        log:
            "logs/dynamics_problems.log",
        conda:
            "../../envs/circuitry.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            init=DYNAMICS_INIT,
            dataset=config["dynamics"]["eval_dataset"],
            filter=config["filter"],
        script:
            "../scripts/dynamics_problems.py"

    # A checkpoint on the initial model's answers and on its own correct ones.
    rule eap_score_checkpoint:
        input:
            unpack(dynamics_score_inputs),
        output:
            dynamics_score_files(dynamics.TEXTS),
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
            model=lambda wildcards: model_spec(config, wildcards.model),
            role="tuned",
            texts=list(dynamics.TEXTS),
            losses=EAP_LOSSES,
            alpha=DYNAMICS_ALPHA,
            batch_size=config["eap"]["batch_size"],
        script:
            "../scripts/eap_score_dynamics.py"

    # The initial model on its own answers: the reference of every checkpoint.
    use rule eap_score_checkpoint as eap_score_initial with:
        output:
            dynamics_score_files(["initial"]),
        wildcard_constraints:
            model=one_of([DYNAMICS_INIT]),
        params:
            role="base",
            texts=["initial"],

    rule dynamics:
        input:
            **dynamics_inputs(),
        output:
            **DYNAMICS_OUTPUTS,
        log:
            "logs/dynamics.log",
        conda:
            "../../envs/circuitry.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            models=dynamics_models(),
            scored=dynamics_scored(),
        script:
            "../scripts/dynamics.py"
