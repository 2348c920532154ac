# Training dynamics: GRPO runs with checkpoints; each checkpoint goes through the
# study's own generation, pairing, EAP and metrics rules as a pair with the initial model.


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
        threads: lambda wildcards: model_threads(config["dynamics"]["init"])
        resources:
            mem_mb=lambda wildcards: model_mem_mb(config["dynamics"]["init"]),
            runtime=lambda wildcards: model_runtime(
                config["dynamics"]["init"], per_billion=480
            ),
            gpu=lambda wildcards: model_gpus(config["dynamics"]["init"]),
        params:
            settings=lambda wildcards: dynamics.grpo_settings(
                config["dynamics"], wildcards.temperature
            ),
            template=lambda wildcards: template_of(config["dynamics"]["init"]),
        script:
            "../scripts/train_dynamics.py"

    localrules:
        dynamics,

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
        script:
            "../scripts/dynamics.py"
