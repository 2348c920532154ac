# EAP: every residual edge of each model scored on its own answers. One job per pair,
# dataset and role loads the model once and writes the scores of every alpha.


rule eap_score:
    input:
        pairs="results/pairs/{pair}/{dataset}.jsonl",
        summary="results/pairs/{pair}/{dataset}.summary.json",
        model=lambda wildcards: model_dir(role_model(wildcards)),
    output:
        expand(
            "results/eap/{{pair}}/{{dataset}}/alpha{alpha}/{{role}}.npz", alpha=ALPHAS
        ),
    log:
        "logs/eap_score/{pair}/{dataset}/{role}.log",
    benchmark:
        "benchmarks/eap_score/{pair}/{dataset}/{role}.tsv"
    wildcard_constraints:
        pair=one_of(PAIRS),
    conda:
        "../../envs/circuitry.yaml"
    threads: lambda wildcards: model_threads(role_model(wildcards))
    resources:
        mem_mb=lambda wildcards: model_mem_mb(role_model(wildcards)),
        runtime=lambda wildcards: model_runtime(role_model(wildcards), per_billion=60),
        gpu=lambda wildcards: model_gpus(role_model(wildcards)),
    params:
        alphas=ALPHAS,
        model=lambda wildcards: model_spec(config, role_model(wildcards)),
        batch_size=config["eap"]["batch_size"],
    script:
        "../scripts/eap_score.py"


if CHECKPOINTS:

    # Training-dynamics checkpoints are scored at the dynamics alpha only.
    use rule eap_score as eap_score_dynamics with:
        output:
            f"results/eap/{{pair}}/{{dataset}}/alpha{DYNAMICS_ALPHA}/{{role}}.npz",
        wildcard_constraints:
            pair=one_of(DYNAMICS_PAIRS),
        params:
            alphas=[DYNAMICS_ALPHA],
            model=lambda wildcards: model_spec(config, role_model(wildcards)),
            batch_size=config["eap"]["batch_size"],
