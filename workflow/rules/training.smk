# Models the workflow trains itself (the toy lineage; RL checkpoints of the dynamics), and
# the shipped ones: installed as a study downloads its base model, rebuilt on demand.


include: "training_helpers.smk"


rule train_model:
    input:
        unpack(train_inputs),
    output:
        directory(TRAINED_MODEL_DIR),
    log:
        "logs/train_model/{model}.log",
    benchmark:
        "benchmarks/train_model/{model}.tsv"
    wildcard_constraints:
        model=one_of(set(TRAINED) - set(SHIPPED)),
    # A trained model starts the longest chain of jobs (generation, pairs, EAP, metrics):
    # train it before the jobs of models already done, or the last one trains at the end.
    priority: 10
    conda:
        "../../envs/circuitry.yaml"
    threads: lambda wildcards: train_threads(wildcards.model)
    resources:
        mem_mb=lambda wildcards: model_mem_mb(wildcards.model),
        runtime=lambda wildcards: model_runtime(wildcards.model, per_billion=240),
        gpu=lambda wildcards: model_gpus(wildcards.model),
    params:
        code=code_of("train_model.py"),
        train=lambda wildcards: recipe_of(config["models"][wildcards.model]["train"]),
        template=lambda wildcards: template_of(wildcards.model),
    script:
        "../scripts/train_model.py"


localrules:
    install_shipped_model,
    check_rebuilt,


# Weights shipped with the study (`train.shipped`, checked against their recipe when the
# config is read), copied where the workflow would have trained them.
rule install_shipped_model:
    input:
        lambda wildcards: SHIPPED[wildcards.model],
    output:
        directory(TRAINED_MODEL_DIR),
    log:
        "logs/install_shipped_model/{model}.log",
    benchmark:
        "benchmarks/install_shipped_model/{model}.tsv"
    wildcard_constraints:
        model=one_of(SHIPPED),
    priority: 10
    conda:
        "../../envs/circuitry.yaml"
    shell:
        "(mkdir -p {output:q} && cp -r {input:q}/. {output:q}) > {log:q} 2>&1"


# `snakemake rebuild_shipped`: every shipped model trained again from its recipe, and
# checked bit for bit against the shipped weights.
use rule train_model as rebuild_model with:
    output:
        directory(REBUILT_MODEL_DIR),
    log:
        "logs/rebuild_model/{model}.log",
    benchmark:
        "benchmarks/rebuild_model/{model}.tsv"
    wildcard_constraints:
        model=one_of(SHIPPED),


rule check_rebuilt:
    input:
        shipped=lambda wildcards: SHIPPED[wildcards.model],
        rebuilt=REBUILT_MODEL_DIR,
    output:
        REBUILT_CHECK,
    log:
        "logs/check_rebuilt/{model}.log",
    conda:
        "../../envs/circuitry.yaml"
    params:
        code=code_of("check_rebuilt.py"),
    script:
        "../scripts/check_rebuilt.py"


rule rebuild_shipped:
    input:
        expand(REBUILT_CHECK, model=SHIPPED),
