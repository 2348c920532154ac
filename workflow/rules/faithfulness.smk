# Faithfulness: EAP's scores against the loss change of removing each edge entirely, on
# the study's own samples under the paper's condition (loss ce, own answers). One job per
# pair x dataset x role x alpha of `faithfulness.alphas`; it reads the scores rule
# eap_score wrote for those samples and ablates edges on the role's model.


include: "faithfulness_helpers.smk"


FAITHFULNESS = config["faithfulness"]


rule faithfulness:
    input:
        model=lambda wildcards: model_dir(role_model(wildcards)),
        pairs=PAIRS_FILE,
        summary=PAIR_SUMMARY,
        scores=EAP_FILE.format(
            pair="{pair}",
            dataset="{dataset}",
            alpha="{alpha}",
            role="{role}",
            **PAPER_CONDITION,
        ),
    output:
        summary=FAITHFULNESS_SUMMARY,
        edges=FAITHFULNESS_EDGES,
    log:
        "logs/faithfulness/{pair}/{dataset}/alpha{alpha}/{role}.log",
    benchmark:
        "benchmarks/faithfulness/{pair}/{dataset}/alpha{alpha}/{role}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: role_resources(model_threads)
    resources:
        mem_mb=role_resources(model_mem_mb),
        runtime=role_resources(model_runtime, per_billion=10),
        gpu=role_resources(model_gpus),
        gpu_mem_mb=planned_gpu_mem_mb(
            lambda wildcards: {wildcards.role: role_model(wildcards)},
            lambda wildcards: [(wildcards.dataset, wildcards.alpha, "own")],
            1,
        ),
    params:
        code=code_of("faithfulness.py"),
        condition=lambda wildcards: {
            "pair": wildcards.pair,
            "dataset": wildcards.dataset,
            "alpha": float(wildcards.alpha),
            "role": wildcards.role,
        },
        model=lambda wildcards: model_spec(MODEL_SPECS, role_model(wildcards)),
        samples=FAITHFULNESS["samples"],
        settings={
            key: FAITHFULNESS[key]
            for key in (
                "top_edges",
                "random_edges",
                "random_draws",
                "curve_max",
                "seed",
                "ig_steps",
            )
        },
        edges=FAITHFULNESS["edges"],
        batch_size=FAITHFULNESS["batch_size"],
    script:
        "../scripts/faithfulness.py"


if FAITHFULNESS_SCOPE["pairs"]:

    localrules:
        faithfulness_figure,

    rule faithfulness_figure:
        input:
            faithfulness_files([FAITHFULNESS_SUMMARY]),
        output:
            report(
                FAITHFULNESS_FIGURE,
                caption="../report/faithfulness.rst",
                category="Faithfulness",
                labels={"figure": "top-k against random-k edges removed"},
            ),
        log:
            "logs/faithfulness_figure.log",
        benchmark:
            "benchmarks/faithfulness_figure.tsv"
        conda:
            "../../envs/circuitry.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            code=code_of("faithfulness_figure.py"),
        script:
            "../scripts/faithfulness_figure.py"


# Survival under exact ablation: one job per pair x dataset x alpha of `survival.alphas`
# removes each edge of a random edge sample from both models (one after the other) and
# tests the headline metrics of the true loss changes, and of the same edges' EAP scores.
rule survival:
    input:
        unpack(pair_model_dirs),
        pairs=PAIRS_FILE,
        summary=PAIR_SUMMARY,
        scores=survival_score_files(),
    output:
        tests=SURVIVAL_TESTS,
        changes=SURVIVAL_CHANGES,
    log:
        "logs/survival/{pair}/{dataset}/alpha{alpha}.log",
    benchmark:
        "benchmarks/survival/{pair}/{dataset}/alpha{alpha}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: pair_resources(model_threads)
    resources:
        mem_mb=pair_resources(model_mem_mb),
        runtime=pair_resources(model_runtime, per_billion=20),
        gpu=pair_resources(model_gpus),
    params:
        code=code_of("survival.py"),
        models=pair_model_specs,
        score_keys=SURVIVAL_SCORE_KEYS,
        settings={
            key: SURVIVAL[key] for key in ("samples", "edges", "batch_size", "seed")
        },
        stats=config["stats"],
    script:
        "../scripts/survival.py"
