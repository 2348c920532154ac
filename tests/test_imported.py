"""Imported generations: a real generation written as the Qwen2.5-Math harness or the
project would write it imports as the same rows; every invalid file fails naming its row;
the workflow takes imported answers through pairing and EAP."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from test_generation import save_tiny_model
from test_workflow import save_local_model

from circuitry.config_checks import (
    ConfigError,
    check_config,
    describe_schema_error,
)
from circuitry.data.benchmarks import build_dataset
from circuitry.data.grading import grade_rows
from circuitry.data.prompts import PromptTemplate, build_prompt
from circuitry.generation.imported import import_generations
from circuitry.generation.resumable import generate_rows
from circuitry.io import read_json, read_jsonl, sha256_file, write_jsonl
from circuitry.models.loading import load_model
from circuitry.models.tokenizer import build_char_tokenizer
from circuitry.paths import EAP_FILE
from circuitry.report.methods import models_table
from conftest import ROOT, model_entry, prompt_template, run_snakemake, validated

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBLEMS = [
    {"idx": 10 + i, "question": q, "answer": "5"}
    for i, q in enumerate(
        [
            "What is 2 + 3?",
            "Ann has 12 apples. She gets 7 more. How many now?",
            "9-4",
            "x",
            "17*3=",
            "Bob reads 4 pages a day for 6 days.",
        ]
    )
]
# The tiny model's greedy answers to PROBLEMS, with "L" as a second EOS and "q" as a stop
# string, end for every reason within 5 tokens (checked below).
EXTRA_EOS = 48  # "L"
TEMPLATE = prompt_template("raw", user="Q: {question}\nA:", stop=("q",))
MAX_NEW_TOKENS = 5
# The stop words of math_eval.py for this tokenizer (its EOS text is "</s>") and template.
HARNESS_STOP_WORDS = ("</s>", "<|im_end|>", "<|endoftext|>", "L", "q")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    loaded = load_model(
        model_entry(path=str(save_tiny_model(tmp_path_factory.mktemp("tiny"))), gpu=False)
    )
    return dataclasses.replace(loaded, eos_token_ids=(*loaded.eos_token_ids, EXTRA_EOS))


@pytest.fixture(scope="module")
def generated(lm, tmp_path_factory):
    rows = generate_rows(
        lm,
        TEMPLATE,
        PROBLEMS,
        max_new_tokens=MAX_NEW_TOKENS,
        batch_size=3,
        partial_path=tmp_path_factory.mktemp("generated") / "rows.partial",
        progress=False,
    )
    grade_rows(rows, PROBLEMS)
    assert {row["finish_reason"] for row in rows} == {"eos", "stop", "length"}
    return rows


def harness_code(completion: str) -> str:
    """math_eval.py's `code` for a completion: vLLM's text ends before a stop string;
    the harness strips it and cuts it at each of its stop words in turn."""
    text = completion
    for stop in TEMPLATE.stop:
        text = text.split(stop)[0]
    code = text.rstrip().strip()
    for word in HARNESS_STOP_WORDS:
        if word in code:
            code = code.split(word)[0].strip()
    return code


def harness_row(row: dict) -> dict:
    """The row math_eval.py (vLLM, n_sampling 1) writes for a generated row: vLLM's token ids
    keep the EOS the answer ended on; its own grades, which the import ignores, are wrong."""
    ended = [EXTRA_EOS] if row["finish_reason"] == "eos" else []
    return {
        "idx": row["idx"],
        "question": PROBLEMS[row["idx"] - 10]["question"],
        "gt": "5",
        "prompt": row["prompt"],
        "code": [harness_code(row["completion"])],
        "pred": ["5"],
        "score": [True],
        "prompt_token_ids": [list(row["prompt_token_ids"])],
        "generate_token_ids": [row["completion_token_ids"] + ended],
    }


def run_import(lm, path, file_format):
    rows = import_generations(path, file_format, lm, TEMPLATE, PROBLEMS, MAX_NEW_TOKENS)
    grade_rows(rows, PROBLEMS)
    return rows


def test_a_qwen_math_file_imports_as_the_rows_that_were_generated(lm, generated, tmp_path):
    """Completion ids cut from vLLM's ids (EOS dropped, the stop token kept), their text,
    finish reasons and grades all come back; the file's own grades are not read."""
    path = tmp_path / "qwen.jsonl"
    write_jsonl(path, [harness_row(row) for row in reversed(generated)])
    assert run_import(lm, path, "qwen-math") == generated
    assert not any(row["correct"] for row in generated)


def test_a_circuitry_file_imports_as_itself(lm, generated, tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, generated)
    assert run_import(lm, path, "circuitry") == generated


def by_reason(rows: list[dict], reason: str) -> dict:
    return next(row for row in rows if row["finish_reason"] == reason)


def change_code(rows, generated):
    rows[0]["code"] = [rows[0]["code"][0] + "!"]
    n = len(rows[0]["code"][0]) - 1
    return rows[0]["idx"], (
        "generate_token_ids, post-processed as the harness does, are not the stored code; "
        f"they part at character {n}"
    )


def change_prompt_ids(rows, generated):
    rows[1]["prompt_token_ids"][0][-1] += 1
    n = len(rows[1]["prompt_token_ids"][0])
    return rows[1]["idx"], (
        f"prompt_token_ids ({n} tokens) are not the template's tokenisation of the dataset's "
        f"question ({n} tokens; first difference at token {n - 1})"
    )


def unknown_idx(rows, generated):
    rows[2]["idx"] = 999
    return 999, "not a problem of the dataset"


def duplicate_idx(rows, generated):
    rows.append(copy.deepcopy(rows[3]))
    return rows[3]["idx"], "a second row for this problem"


def two_samples(rows, generated):
    for field in ("code", "prompt_token_ids", "generate_token_ids"):
        rows[0][field] = rows[0][field] * 2
    return rows[0]["idx"], "2 samples per problem; only greedy runs with n_sampling 1"


def no_eos(rows, generated):
    row = next(r for r in rows if r["generate_token_ids"][0][-1:] == [EXTRA_EOS])
    row["generate_token_ids"][0].pop()
    n = len(row["generate_token_ids"][0])
    return row["idx"], f"generation ended after {n} of 5 tokens without EOS or stop string"


def past_the_limit(rows, generated):
    row = next(r for r in rows if r["idx"] == by_reason(generated, "length")["idx"])
    row["generate_token_ids"][0].append(7)
    return row["idx"], "6 generated tokens, more than max_new_tokens 5"


def missing_field(rows, generated):
    del rows[4]["generate_token_ids"]
    return rows[4]["idx"], "missing field(s) generate_token_ids"


@pytest.mark.parametrize(
    "corrupt",
    [
        change_code,
        change_prompt_ids,
        unknown_idx,
        duplicate_idx,
        two_samples,
        no_eos,
        past_the_limit,
        missing_field,
    ],
)
def test_an_invalid_qwen_math_row_fails_naming_the_file_and_idx(lm, generated, tmp_path, corrupt):
    rows = [harness_row(row) for row in generated]
    idx, message = corrupt(rows, generated)
    path = tmp_path / "qwen.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(ValueError, match=re.escape(f"{path}, idx {idx}: {message}")):
        import_generations(path, "qwen-math", lm, TEMPLATE, PROBLEMS, MAX_NEW_TOKENS)


def change_completion(rows):
    rows[0]["completion"] += "!"
    n = len(rows[0]["completion"]) - 1
    return rows[0]["idx"], (
        f"completion_token_ids do not decode to the stored completion; they part at character {n}"
    )


def stop_called_eos(rows):
    row = by_reason(rows, "stop")
    row["finish_reason"] = "eos"
    n = len(row["completion_token_ids"])
    return row["idx"], (
        f"finish_reason 'eos' after {n} tokens, but the completion rules end it with 'stop' "
        f"after {n}"
    )


@pytest.mark.parametrize("corrupt", [change_completion, stop_called_eos])
def test_an_invalid_circuitry_row_fails_naming_the_file_and_idx(lm, generated, tmp_path, corrupt):
    rows = copy.deepcopy(generated)
    idx, message = corrupt(rows)
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(ValueError, match=re.escape(f"{path}, idx {idx}: {message}")):
        import_generations(path, "circuitry", lm, TEMPLATE, PROBLEMS, MAX_NEW_TOKENS)


def impossible_token_id(kind: str, vocab_size: int):
    """An id of the given kind that no token of a `vocab_size` vocabulary has."""
    kinds = {"past the vocabulary": vocab_size, "negative": -1, "float": 2.0, "bool": True}
    return (kinds | {"string": "7"})[kind]


@pytest.mark.parametrize(
    ("file_format", "field", "kind"),
    [
        ("qwen-math", "prompt_token_ids", "negative"),
        ("qwen-math", "generate_token_ids", "past the vocabulary"),
        ("qwen-math", "generate_token_ids", "float"),
        ("circuitry", "prompt_token_ids", "bool"),
        ("circuitry", "completion_token_ids", "past the vocabulary"),
        ("circuitry", "completion_token_ids", "string"),
    ],
)
def test_an_impossible_token_id_fails_naming_the_file_idx_and_field(
    lm, generated, tmp_path, file_format, field, kind
):
    """Ids outside the vocabulary or not integers are refused before anything decodes them."""
    vocab_size = len(lm.tokenizer)
    bad = impossible_token_id(kind, vocab_size)
    idx = by_reason(generated, "length")["idx"]
    if file_format == "qwen-math":
        rows = [harness_row(row) for row in generated]
        ids = next(row for row in rows if row["idx"] == idx)[field][0]
    else:
        rows = copy.deepcopy(generated)
        ids = next(row for row in rows if row["idx"] == idx)[field]
    ids[-1] = bad
    if isinstance(bad, int) and not isinstance(bad, bool):
        message = f"{field} holds {bad}, outside the vocabulary (0 .. {vocab_size - 1})"
    else:
        message = f"{field} holds {json.dumps(bad)}, not an integer"
    path = tmp_path / "gen.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(ValueError, match=re.escape(f"{path}, idx {idx}: {message}")):
        import_generations(path, file_format, lm, TEMPLATE, PROBLEMS, MAX_NEW_TOKENS)


def test_token_ids_that_are_not_a_list_fail_naming_the_field(lm, generated, tmp_path):
    rows = copy.deepcopy(generated)
    rows[0]["completion_token_ids"] = 5
    path = tmp_path / "gen.jsonl"
    write_jsonl(path, rows)
    message = f"{path}, idx {rows[0]['idx']}: completion_token_ids is 5, not a list of token ids"
    with pytest.raises(ValueError, match=re.escape(message)):
        import_generations(path, "circuitry", lm, TEMPLATE, PROBLEMS, MAX_NEW_TOKENS)


@pytest.mark.parametrize("idx", [True, 1.0, "1"])
def test_an_idx_that_is_not_an_integer_fails_naming_it(lm, generated, tmp_path, idx):
    """With a problem 1 in the dataset, none of true, 1.0 and "1" is taken for it (Python
    counts a bool as an int)."""
    problems = [{**problem, "idx": problem["idx"] - 9} for problem in PROBLEMS]
    rows = [{**row, "idx": row["idx"] - 9} for row in generated]
    next(row for row in rows if row["idx"] == 1)["idx"] = idx
    path = tmp_path / "gen.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(
        ValueError, match=re.escape(f"{path}, idx {json.dumps(idx)}: idx must be an integer")
    ):
        import_generations(path, "circuitry", lm, TEMPLATE, problems, MAX_NEW_TOKENS)


def test_problems_without_a_row_are_counted_and_named(lm, generated, tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, generated[2:])
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}: 2 of the dataset's 6 problems have no row (idx 10, 11)"),
    ):
        import_generations(path, "circuitry", lm, TEMPLATE, PROBLEMS, MAX_NEW_TOKENS)


def test_a_torn_line_fails_naming_the_file_and_line(lm, generated, tmp_path):
    path = tmp_path / "qwen.jsonl"
    write_jsonl(path, [harness_row(row) for row in generated])
    with open(path, "rb+") as f:
        f.truncate(os.path.getsize(path) - 10)
    with pytest.raises(ValueError, match=re.escape(f"{path}:6: not valid JSON")):
        import_generations(path, "qwen-math", lm, TEMPLATE, PROBLEMS, MAX_NEW_TOKENS)


# ---- config, report and workflow


def study_config(tmp_path) -> dict:
    """config/toy.yaml narrowed to one dataset of 4 problems and one pair of local models
    (no dynamics, faithfulness check or calibration; one alpha, loss and text): the base
    model's answers imported in the project's format, the tuned model's in the Qwen2.5-Math
    harness's (each a tiny random Llama with the toy tokenizer)."""
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["datasets"] = {"toy-gsm8k": config["datasets"]["toy-gsm8k"]}
    config["datasets"]["toy-gsm8k"]["toy"]["n"] = 4
    del config["dynamics"]
    config["faithfulness"]["enabled"] = False
    config["survival"]["enabled"] = False
    config["calibration"]["enabled"] = False
    config["eap"].update(alphas=[0.5], losses=["ce"], texts=["own"])
    formats = (("base-model", "circuitry"), ("tuned-model", "qwen-math"))
    for seed, (name, file_format) in enumerate(formats):
        save_local_model(tmp_path / name, seed)
        config["models"][name] = {
            "path": str(tmp_path / name),
            "template": "toy",
            "max_new_tokens": 32,
            "gpu": False,
            "size_b": 0.001,
            "generations": {
                "path": str(tmp_path / "imports" / name / "{dataset}.jsonl"),
                "format": file_format,
            },
        }
    config["pairs"] = {"local": {"base": "base-model", "tuned": "tuned-model", "method": "GRPO"}}
    return validated(config)


def test_generations_path_must_name_the_dataset(tmp_path):
    config = study_config(tmp_path)
    config["models"]["base-model"]["generations"]["path"] = "imports/base.jsonl"
    with pytest.raises(WorkflowError) as error:
        validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    message = describe_schema_error(error.value)
    assert message.startswith("models.base-model.generations.path: 'imports/base.jsonl' does not")


def test_a_missing_generations_file_fails_at_start_up_naming_its_key(tmp_path):
    missing = tmp_path / "imports" / "base-model" / "toy-gsm8k.jsonl"
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"models.base-model.generations.path: {missing} (the answers to dataset toy-gsm8k) "
            "does not exist"
        ),
    ):
        check_config(study_config(tmp_path))


def test_a_trained_model_has_no_answers_to_import(tmp_path):
    config = study_config(tmp_path)
    config["models"]["toy-sft"]["generations"] = config["models"]["base-model"]["generations"]
    with pytest.raises(
        ConfigError, match="models.toy-sft.generations: the workflow trains this model"
    ):
        check_config(validated(config))


def test_the_dynamics_cannot_start_from_a_model_outside_the_pairs_that_imports_answers(tmp_path):
    config = study_config(tmp_path)
    config["dynamics"] = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())["dynamics"]
    config["dynamics"].update(eval_dataset="toy-gsm8k", alpha=0.5)
    config["dynamics"]["runs"][0]["init"] = "spare"
    config["models"]["spare"] = config["models"]["base-model"]
    with pytest.raises(
        ConfigError, match="dynamics.runs.grpo-t1.init: 'spare' imports its answers"
    ):
        check_config(validated(config))


def test_the_models_table_says_whose_answers_were_imported(tmp_path):
    config = study_config(tmp_path)
    imported = {"generated": "imported", "format": "qwen-math", "sha256": "0123456789abcdef" * 4}
    generated = {"source": "base-model", "accuracy": 0.5, "generated": "continuous"}
    provenance = {("base-model", "toy-gsm8k"): generated, ("tuned-model", "toy-gsm8k"): imported}
    table = models_table(config, provenance)
    answers = {
        row.cells[0].text: row.cells[table.columns.index("answers")].text for row in table.rows
    }
    assert answers == {
        "base-model": "generated (continuous backend)",
        "tuned-model": "imported (qwen-math; sha256 toy-gsm8k 0123456789ab)",
    }


def write_imports(config: dict, tmp_path) -> dict[str, list[dict]]:
    """Both models' answers to the toy problems, the correct worked solution followed by
    EOS: the base model's as the project writes them, the tuned model's as the Qwen2.5-Math
    harness does. Returns the rows written, by model."""
    problems, _ = build_dataset("toy-gsm8k", config["datasets"]["toy-gsm8k"], tmp_path)
    tokenizer = build_char_tokenizer()
    template = PromptTemplate.from_config(config["templates"]["toy"])
    written = {"base-model": [], "tuned-model": []}
    for problem in problems:
        prompt = build_prompt(template, problem["question"], tokenizer)
        answer = tokenizer(problem["solution"], add_special_tokens=False)["input_ids"]
        written["base-model"].append(
            {
                "idx": problem["idx"],
                "prompt": prompt.text,
                "prompt_token_ids": prompt.token_ids,
                "completion": problem["solution"],
                "completion_token_ids": answer,
                "finish_reason": "eos",
                "pred": None,
                "correct": False,
            }
        )
        written["tuned-model"].append(
            {
                "idx": problem["idx"],
                "question": problem["question"],
                "prompt": prompt.text,
                "code": [problem["solution"]],
                "pred": [None],
                "score": [False],
                "prompt_token_ids": [prompt.token_ids],
                "generate_token_ids": [answer + [tokenizer.eos_token_id]],
            }
        )
    for model, rows in written.items():
        write_jsonl(tmp_path / "imports" / model / "toy-gsm8k.jsonl", rows)
    return written


def test_imported_answers_go_through_pairing_and_eap(tmp_path):
    """No generate job runs; the provenance records the imported file; the pair file holds
    exactly the imported token ids (the harness's EOS dropped), and EAP scores them. A
    replaced file reruns the import."""
    config = study_config(tmp_path)
    written = write_imports(config, tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    eap_file = EAP_FILE.format(
        pair="local", dataset="toy-gsm8k", alpha=0.5, loss="ce", role="tuned", text="own"
    )
    targets = ("results/pairs/local/toy-gsm8k.jsonl", eap_file)
    run = ("--configfile", str(tmp_path / "config.yaml"), "--cores", "1")
    result = run_snakemake(*targets, *run, workdir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rule generate:" not in result.stdout + result.stderr
    assert (tmp_path / eap_file).is_file()
    tuned_file = tmp_path / "imports" / "tuned-model" / "toy-gsm8k.jsonl"
    provenance = read_json(tmp_path / "results/generations/tuned-model/toy-gsm8k.provenance.json")
    assert provenance["generated"] == "imported"
    assert provenance["format"] == "qwen-math"
    assert provenance["sha256"] == sha256_file(tuned_file)
    assert provenance["accuracy"] == 1.0
    pairs = read_jsonl(tmp_path / "results/pairs/local/toy-gsm8k.jsonl")
    assert len(pairs) == 4
    for pair in pairs:
        tuned = next(r for r in written["tuned-model"] if r["idx"] == pair["idx"])
        base = next(r for r in written["base-model"] if r["idx"] == pair["idx"])
        assert pair["tuned"]["completion_token_ids"] == tuned["generate_token_ids"][0][:-1]
        assert pair["tuned"]["prompt_token_ids"] == tuned["prompt_token_ids"][0]
        assert pair["base"]["completion_token_ids"] == base["completion_token_ids"]
    rows = read_jsonl(tuned_file)
    tuned_file.write_text("".join(json.dumps(row) + "\n" for row in reversed(rows)))
    planned = run_snakemake(*targets, *run, "--dry-run", workdir=tmp_path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "rule import_generations:" in planned.stdout
