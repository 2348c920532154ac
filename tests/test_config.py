"""Config validation: the schema and the cross-reference checks, through Snakemake."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from circuitry.config import (
    anchor_shipped,
    calibration_scope,
    control_pairs,
    enabled_pairs,
    models_in_use,
    replicate_groups,
)
from circuitry.config_checks import (
    ConfigError,
    check_config,
)
from circuitry.config_files import ConfigFileError, refuse_duplicate_keys, type_overrides
from conftest import ROOT, SCHEMA, dry_run_jobs, load_config, planned_jobs, run_snakemake


def load(name: str) -> dict:
    return load_config(name.removesuffix(".yaml"))


def dry_run_with(config: dict, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_snakemake("--dry-run", "--cores", "1", "--configfile", str(path))


def refused_at_planning(config: dict, tmp_path, names: list[str]) -> str:
    """A dry run of `config` fails as an invalid config naming each of `names`; its output."""
    result = dry_run_with(config, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "invalid config" in output
    for name in names:
        assert name in output
    return output


def test_full_config_plans_a_download_per_dataset():
    downloads = {
        job["wildcards"]["dataset"]
        for job in dry_run_jobs("--configfile", "config/config.yaml")
        if job["rule"] == "download_dataset"
    }
    assert downloads == {"gsm8k", "math", "college_math", "gsm8k-train"}


def test_toy_config_is_the_default():
    assert planned_jobs() == planned_jobs("--configfile", "config/toy.yaml")


def _typo(c):
    c["datasets"]["gsm8k"]["hub_confg"] = c["datasets"]["gsm8k"].pop("hub_config")


def _unknown_model(c):
    c["pairs"]["mistral"]["tuned"] = "mistral-7b-rl-typo"


def _alpha_above_one(c):
    c["eap"]["alphas"] = [0.1, 1.5]


def _alpha_zero(c):
    c["eap"]["alphas"] = [0]


def _no_source(c):
    del c["datasets"]["college_math"]["source"]


def _url_without_checksum(c):
    del c["datasets"]["college_math"]["sha256"]


def _unset_model_enabled(c):
    c["pairs"]["qwen"]["enabled"] = True


def _unknown_template(c):
    c["models"]["mistral-7b-sft"]["template"] = "mistrall"


def _missing_model_path(c):
    model = c["models"]["mistral-7b-sft"]
    del model["hub_id"], model["revision"]
    model["path"] = "no/such/model"


def _unknown_loss(c):
    c["eap"]["losses"] = ["ce", "kl"]


def _paper_loss_left_out(c):
    c["eap"]["losses"] = ["ce_unit"]


def _unknown_text(c):
    c["eap"]["texts"] = ["own", "swapped"]


def _calibration_on_a_tuned_model(c):
    c["calibration"]["models"] = ["deepseek-math-7b-rl"]


def _calibration_alpha_not_scored(c):
    c["calibration"]["alpha"] = 0.2


def _calibration_without_its_loss(c):
    c["eap"]["losses"] = ["ce", "ce_unit"]


def _calibration_factor_not_positive(c):
    c["calibration"]["edits"]["sharper"]["factor"] = 0


def _calibration_node_not_a_node(c):
    c["calibration"]["edits"]["planted-a14"]["node"] = "mlp14"


def _calibration_planted_without_node(c):
    del c["calibration"]["edits"]["planted-a14"]["node"]


@pytest.mark.parametrize(
    "breaks, names",
    [
        (_typo, ["datasets.gsm8k", "hub_confg"]),
        (_calibration_on_a_tuned_model, ["calibration.models", "deepseek-math-7b-rl"]),
        (_calibration_alpha_not_scored, ["calibration.alpha", "0.2", "eap.alphas"]),
        (_calibration_without_its_loss, ["eap.losses: must include target_unit"]),
        (_calibration_factor_not_positive, ["calibration.edits.sharper.factor"]),
        (_calibration_node_not_a_node, ["calibration.edits.planted-a14.node", "mlp14"]),
        (_calibration_planted_without_node, ["calibration.edits.planted-a14", "'node'"]),
        (_unknown_model, ["pairs.mistral.tuned", "mistral-7b-rl-typo"]),
        (_alpha_above_one, ["eap.alphas.1", "maximum of 1"]),
        (_alpha_zero, ["eap.alphas.0"]),
        (_no_source, ["datasets.college_math", "'source' is a required property"]),
        (_url_without_checksum, ["datasets.college_math", "'sha256'"]),
        (_unset_model_enabled, ["models.qwen25-7b-", ".hub_id is not set", "disable the pair"]),
        (_unknown_template, ["models.mistral-7b-sft.template", "mistrall"]),
        (_missing_model_path, ["models.mistral-7b-sft.path", "no/such/model", "not a directory"]),
        (_unknown_loss, ["eap.losses.1", "'kl' is not one of"]),
        (_paper_loss_left_out, ["eap.losses: must include ce"]),
        (_unknown_text, ["eap.texts.1", "'swapped' is not one of"]),
    ],
)
def test_broken_config_fails_before_any_job_naming_the_key(breaks, names, tmp_path):
    config = load("config.yaml")
    breaks(config)
    assert "download_dataset" not in refused_at_planning(config, tmp_path, names)


def test_qwen_pair_is_disabled_until_its_models_are_set():
    config = load("config.yaml")
    assert "qwen" not in enabled_pairs(config)
    assert config["models"]["qwen25-7b-sft"]["hub_id"] is None
    check_config(config)
    enabled = copy.deepcopy(config)
    enabled["pairs"]["qwen"]["enabled"] = True
    enabled["models"]["qwen25-7b-sft"]["hub_id"] = "someone/qwen2.5-7b-sft"
    enabled["models"]["qwen25-7b-dpo"]["hub_id"] = "someone/qwen2.5-7b-dpo"
    check_config(enabled)
    assert {"qwen25-7b-sft", "qwen25-7b-dpo"} <= set(models_in_use(enabled))


def test_models_in_use_follow_enabled_pairs():
    config = load("config.yaml")
    assert models_in_use(config) == [
        "deepseek-math-7b-instruct",
        "deepseek-math-7b-rl",
        "mistral-7b-sft",
        "math-shepherd-mistral-7b-rl",
        "deepseek-r1-distill-qwen-7b",
        "acereason-nemotron-7b",
    ]


def test_model_with_two_sources_is_rejected():
    config = load("config.yaml")
    config["models"]["mistral-7b-sft"]["path"] = "/models/mistral"
    with pytest.raises(ConfigError, match="models.mistral-7b-sft: give only one of"):
        check_config(config)


def test_every_pair_disabled_is_rejected():
    config = load("toy.yaml")
    for pair in config["pairs"].values():
        pair["enabled"] = False
    with pytest.raises(ConfigError, match="every pair is disabled"):
        check_config(config)


def test_paper_settings():
    config = load("config.yaml")
    assert config["filter"] == {
        "small_coeff": 0.5,
        "big_coeff": 1.5,
        "balance_coeff": 0.5,
        "num_samples": 100,
        "seed": 42,
        "mode": "paper",  # run_tests.py's reading of the bounds and windows
        "count_eos": True,  # vLLM's token ids keep the EOS
    }
    assert config["eap"]["alphas"] == [0.03, 0.1, 0.3, 0.5]
    methods = {name: pair["method"] for name, pair in config["pairs"].items()}
    assert methods == {"deepseek": "GRPO", "mistral": "PPO", "distill-qwen": "GRPO", "qwen": "DPO"}
    tokens = {m: config["models"][m]["max_new_tokens"] for m in config["models"]}
    assert tokens["deepseek-math-7b-rl"] == tokens["mistral-7b-sft"] == 4096
    assert tokens["qwen25-7b-sft"] == 8192
    assert tokens["acereason-nemotron-7b"] == 32768
    assert len(config["datasets"]["math"]["hub_config"]) == 7
    # the paper prompted the R1 distill pair with the raw deepseek-math template
    distill = config["pairs"]["distill-qwen"]
    assert {config["models"][distill[role]]["template"] for role in ("base", "tuned")} == {
        "deepseek-math"
    }
    assert config["templates"]["deepseek-math"] == {
        "format": "raw",
        "user": "User: {question}\nPlease reason step by step, and put your final answer "
        "within \\boxed{}.\n\nAssistant:",
        "system": None,
        "stop": [],
    }


def test_loss_and_text_names_of_the_schema_are_the_engines():
    from circuitry.attribution.samples import TEXTS
    from circuitry.attribution.scorefile import LOSSES

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    eap = schema["properties"]["eap"]["properties"]
    assert tuple(eap["losses"]["items"]["enum"]) == LOSSES
    assert tuple(eap["texts"]["items"]["enum"]) == TEXTS
    assert eap["losses"]["default"] == ["ce", "ce_unit", "target_unit"]
    assert eap["texts"]["default"] == ["own", "crossed"]


def test_a_pair_of_a_model_with_itself_is_only_the_identity_control():
    config = load("toy.yaml")
    check_config(config)
    del config["pairs"]["toy-identity"]["control"]
    with pytest.raises(
        ConfigError,
        match="pairs.toy-identity: base and tuned are the same .*"
        "pairs.toy-identity.control: identity",
    ):
        check_config(config)
    config["pairs"]["toy-grpo"]["control"] = "identity"
    config["pairs"]["toy-identity"]["control"] = "identity"
    with pytest.raises(ConfigError, match="pairs.toy-grpo.control: identity compares a model"):
        check_config(config)


def _replicates(original, **changes):
    def breaks(c):
        c["pairs"]["toy-grpo-seed1"] |= {"replicate_of": original, **changes}

    return breaks


@pytest.mark.parametrize(
    "breaks, message",
    [
        (_replicates("toy-grpo-typo"), "unknown pair 'toy-grpo-typo'"),
        (_replicates("toy-grpo-seed2"), "'toy-grpo-seed2' is itself a replicate"),
        (_replicates("toy-grpo", base="toy-dpo"), "base 'toy-dpo' differs from 'toy-grpo'"),
        (_replicates("toy-grpo", method="DPO"), "method 'DPO' differs from 'toy-grpo'"),
        (
            _replicates("toy-grpo", tuned="toy-grpo"),
            "tuned 'toy-grpo' is the tuned model of 'toy-grpo' itself",
        ),
    ],
)
def test_a_replicate_repeats_an_original_pair(breaks, message):
    config = load("toy.yaml")
    breaks(config)
    with pytest.raises(ConfigError, match="pairs.toy-grpo-seed1.replicate_of: .*" + message):
        check_config(config)


def test_toy_study_carries_its_control_pairs():
    config = load("toy.yaml")
    assert control_pairs(config) == {"toy-identity": "identity", "toy-sft-more": "more-training"}
    assert replicate_groups(config) == {
        "toy-grpo": ["toy-grpo", "toy-grpo-seed1", "toy-grpo-seed2"]
    }
    config["pairs"]["toy-grpo-seed1"]["enabled"] = False
    assert replicate_groups(config) == {"toy-grpo": ["toy-grpo", "toy-grpo-seed2"]}
    assert replicate_groups({**config, "only_pairs": ["toy-grpo", "toy-dpo"]}) == {}


def test_toy_controls_train_like_the_models_they_control():
    from circuitry.models.sft import warmup_cosine

    models = load("toy.yaml")["models"]
    grpo = models["toy-grpo"]["train"]
    for seed in (1, 2):
        assert models[f"toy-grpo-seed{seed}"]["train"] == {**grpo, "seed": seed}
    sft, more = models["toy-sft"]["train"], models["toy-sft-more"]["train"]
    assert (more["method"], more["init"], more["data"]) == ("sft", "toy-sft", sft["data"])
    assert more["steps"] == grpo["steps"]
    # The control goes on at the learning rate toy-sft's schedule ended on.
    final = warmup_cosine(sft["steps"], sft["steps"], sft["warmup_steps"])
    assert more["learning_rate"] == pytest.approx(final * sft["learning_rate"])


def test_sft_continued_from_a_model_takes_its_architecture():
    config = load("toy.yaml")
    config["models"]["toy-sft-more"]["train"]["architecture"] = {"hidden_size": 32}
    with pytest.raises(ConfigError, match="models.toy-sft-more.train.architecture: .* init"):
        check_config(config)


def test_a_planted_node_beyond_a_known_models_layers_is_refused():
    """The toy's models state their layer count, so a node they lack fails at planning."""
    config = load_config("toy")
    config["calibration"]["edits"]["planted-a0"]["node"] = "a4"  # 4 layers: a0 .. a3
    with pytest.raises(ConfigError, match=r"calibration.edits.planted-a0.node: 'a4' does not"):
        check_config(config)


def test_calibration_scope_takes_each_study_bases_first_pair():
    config = load_config("config")
    assert calibration_scope(config) == {
        "deepseek-math-7b-instruct": "deepseek",
        "mistral-7b-sft": "mistral",
        "deepseek-r1-distill-qwen-7b": "distill-qwen",
    }
    toy = load_config("toy")
    assert calibration_scope(toy) == {"toy-sft": "toy-grpo"}
    toy["calibration"]["enabled"] = False
    assert calibration_scope(toy) == {}


def test_a_planted_node_beyond_a_cached_hub_models_layers_is_refused(tmp_path, monkeypatch):
    """A hub model whose config.json is in the local hub cache is checked at planning."""
    from huggingface_hub import constants

    snapshot = tmp_path / "models--deepseek-ai--deepseek-math-7b-instruct" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"num_hidden_layers": 12}))
    refs = snapshot.parents[1] / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    config = load_config("config")
    with pytest.raises(ConfigError, match=r"planted-a14.node: 'a14' does not exist in deepseek"):
        check_config(config)


def test_shipped_weights_stand_only_for_the_recipe_that_built_them():
    """toy-sft's shipped weights record their recipe; a changed recipe is refused, naming
    what changed, so the workflow never installs weights another recipe built."""
    config = load("toy.yaml")
    check_config(config)
    config["models"]["toy-sft"]["train"]["steps"] = 2500
    config["models"]["toy-sft"]["train"]["seed"] = 1
    with pytest.raises(ConfigError, match=r"models.toy-sft.train: .* \(seed, steps\); remove"):
        check_config(config)


def test_shipped_weights_must_exist(tmp_path):
    config = load("toy.yaml")
    config["models"]["toy-sft"]["train"]["shipped"] = str(tmp_path)
    with pytest.raises(ConfigError, match=r"models.toy-sft.train.shipped: .*model.safetensors"):
        check_config(config)


def test_shipped_weights_are_read_from_the_checkout_whatever_the_working_directory(
    tmp_path, monkeypatch
):
    config = load("toy.yaml")
    monkeypatch.chdir(tmp_path)
    anchor_shipped(config, ROOT)
    shipped = config["models"]["toy-sft"]["train"]["shipped"]
    assert Path(shipped).resolve() == ROOT / "config/shipped/toy-sft"
    assert not Path(shipped).is_absolute()  # a checkout moved with its results reruns nothing
    check_config(config)
    config["models"]["toy-sft"]["train"]["shipped"] = str(ROOT / "config/shipped/toy-sft")
    anchor_shipped(config, tmp_path)  # an absolute path stays
    assert config["models"]["toy-sft"]["train"]["shipped"] == str(ROOT / "config/shipped/toy-sft")


def _faithfulness_on_a_disabled_pair(c, _):
    c["faithfulness"]["pairs"] = ["toy-grpo", "toy-dpo"]
    c["pairs"]["toy-dpo"]["enabled"] = False


def _every_keeps_no_checkpoint(c, _):
    c["dynamics"]["runs"][0]["every"] = 3  # the run saves 2


def _model_named_as_a_checkpoint(c, _):
    c["models"]["dyn-grpo-t1-step30"] = copy.deepcopy(c["models"]["toy-dpo"])


def _empty_length_window(c, _):
    c["filter"]["small_coeff"] = 2.0


def _revision_step_not_a_number(c, _):
    run = {"name": "hub-run", "init": "toy-sft"}
    c["dynamics"]["runs"].append(
        run | {"revisions": {"hub_id": "org/run", "revisions": {"abc": "main"}}}
    )


def _step_pattern_not_a_regex(c, tmp_path):
    (tmp_path / "ckpt-10").mkdir()
    run = {"name": "dir-run", "init": "toy-sft"}
    c["dynamics"]["runs"].append(
        run | {"dirs": {"glob": str(tmp_path / "ckpt-*"), "step": r"ckpt-(\d+"}}
    )


def _model_directory_empty(c, tmp_path):
    (tmp_path / "empty-model").mkdir()
    model = c["models"]["toy-sft"]
    del model["train"]
    model["path"] = str(tmp_path / "empty-model")


def _model_directory_without_weights(c, tmp_path):
    shipped = ROOT / "config" / "shipped" / "toy-sft"
    (tmp_path / "no-weights").mkdir()
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / "no-weights" / name).write_bytes((shipped / name).read_bytes())
    model = c["models"]["toy-sft"]
    del model["train"]
    model["path"] = str(tmp_path / "no-weights")


@pytest.mark.parametrize(
    "breaks, names",
    [
        (_faithfulness_on_a_disabled_pair, ["faithfulness.pairs: toy-dpo disabled"]),
        (_every_keeps_no_checkpoint, ["dynamics.runs.grpo-t1.every: 3 keeps none", "2 check"]),
        (
            _model_named_as_a_checkpoint,
            ["models.dyn-grpo-t1-step30", "dynamics.runs.grpo-t1's checkpoint at step 30"],
        ),
        (_empty_length_window, ["filter.small_coeff: 2.0 is above filter.big_coeff 1.5"]),
        (_revision_step_not_a_number, ["dynamics.runs.hub-run.revisions: 'abc' is not a step"]),
        (
            _step_pattern_not_a_regex,
            ["dynamics.runs.dir-run.dirs.step", "not a regular expression", "missing )"],
        ),
        (_model_directory_empty, ["models.toy-sft.path", "empty-model holds no model config"]),
        (_model_directory_without_weights, ["models.toy-sft.path", "no-weights holds no weights"]),
    ],
)
def test_a_toy_config_that_would_omit_or_fail_late_fails_at_planning(breaks, names, tmp_path):
    config = load("toy.yaml")
    breaks(config, tmp_path)
    assert "Traceback" not in refused_at_planning(config, tmp_path, names)


def test_a_key_given_twice_in_a_config_file_is_refused_naming_both_lines(tmp_path):
    text = (ROOT / "config" / "toy.yaml").read_text()
    path = tmp_path / "config.yaml"
    path.write_text(text + "\nfilter:\n  num_samples: 50\n")
    first = text.splitlines().index("filter:") + 1
    second = len(text.splitlines()) + 2
    result = run_snakemake("--dry-run", "--cores", "1", "--configfile", str(path))
    assert result.returncode != 0
    assert (
        f"{path}:{second}: filter is given twice (lines {first} and {second})"
        in result.stdout + result.stderr
    )


def test_a_key_repeated_inside_a_mapping_is_named_by_its_dotted_path(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  toy-sft:\n    template: toy\n    gpu: false\n    template: other\n")
    with pytest.raises(
        ConfigFileError,
        match=r"config.yaml:5: models.toy-sft.template is given twice \(lines 3 and 5\)",
    ):
        refuse_duplicate_keys(path)


def test_merge_keys_may_be_overridden_and_lists_are_walked(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "base: &b {seed: 0, steps: 4}\n"
        "models: {x: {train: {<<: *b, seed: 1}}}\n"
        "runs:\n  - {name: a, every: 1}\n  - {name: b, every: 1, every: 2}\n"
    )
    with pytest.raises(ConfigFileError, match=r"runs.1.every is given twice \(lines 5 and 5\)"):
        refuse_duplicate_keys(path)


def test_nested_config_overrides_take_the_schemas_types():
    config = load("toy.yaml")
    overrides = {"filter": {"num_samples": "50", "small_coeff": "0.25", "mode": "paper"}}
    config["filter"] |= overrides["filter"]
    config["generation"]["batch_size"] = "8"  # from a config file: stays for the schema
    type_overrides(config, overrides, yaml.safe_load(SCHEMA.read_text()))
    filters = config["filter"]
    assert (filters["num_samples"], filters["small_coeff"], filters["mode"]) == (50, 0.25, "paper")
    assert config["generation"]["batch_size"] == "8"


def test_a_nested_config_override_plans_as_written_in_yaml():
    result = run_snakemake(
        "--dry-run", "--cores", "1", "--config", "filter={num_samples: 50, small_coeff: 1e-1}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
