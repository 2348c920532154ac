"""Imported generations: answers produced elsewhere (vLLM, SGLang, the Qwen2.5-Math
harness) read as the project's generation rows, so pairing, EAP and the report use them
as they use generated ones.

A model entry's `generations: {path, format}` replaces its generate job. Formats:

- `circuitry`: the rows `generate` writes;
- `qwen-math`: the rows of `evaluation/math_eval.py`, the paper's Qwen2.5-Math harness
  (vLLM backend, n_sampling 1), of which `idx`, `code` (the output text, post-processed),
  `prompt_token_ids` and `generate_token_ids` are read (one entry per sample). The ids
  are vLLM's `CompletionOutput.token_ids`, which keep the EOS or stop token a sequence
  ended on, so the completion is cut from them by the project's rules
  (`decoding.completion_end`: EOS left out, a stop string's completing token kept,
  `length` at max_new_tokens).

Each row is checked against the model, the template and the dataset, so that EAP reads
exactly the tokens the answer was: its token ids must be integers of the model's
vocabulary (checked before anything decodes them); its prompt ids must be the template's
tokenisation of the dataset's question; its ids must decode to its stored text; its
completion must end by the rules above within max_new_tokens (for `circuitry` rows, where
and why the file says). Every idx must be an integer (not `true`, `1.0` or `"1"`) and a
problem of the dataset, once, and every problem must have a row. A failure is a
ValueError naming the file and the row's idx. The file's own grades are not read: rows
are graded again like generated ones (`grading.grade_rows`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from circuitry.data.prompts import Prompt, PromptTemplate
from circuitry.generation.decoding import (
    Completion,
    StopStrings,
    completion_end,
    completion_of,
    decode,
)
from circuitry.generation.resumable import build_prompts, generation_row
from circuitry.io import read_jsonl
from circuitry.models.loading import LoadedModel

CIRCUITRY_FIELDS = ("prompt_token_ids", "completion", "completion_token_ids", "finish_reason")
QWEN_MATH_FIELDS = ("code", "prompt_token_ids", "generate_token_ids")
SHOWN_MISSING = 5  # idx named when problems have no row
SHOWN_CONTEXT = 20  # characters shown on each side of where two texts differ


@dataclass(frozen=True)
class Expected:
    """What the rows of one imported file must agree with: the model's tokenizer, its
    vocabulary size and EOS ids, the template's stop strings, max_new_tokens, and the
    dataset's prompts by idx."""

    path: str
    tokenizer: object
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    stop: tuple[str, ...]
    stops: StopStrings | None
    max_new_tokens: int
    prompts: dict[int, Prompt]

    def where(self, idx) -> str:
        """The file and idx, the idx as the file spells it (`"1"` is not `1`)."""
        return f"{self.path}, idx {json.dumps(idx)}"


def first_difference(a: Sequence, b: Sequence) -> int:
    """The first position where `a` and `b` differ (the shorter length if one is a prefix)."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def text_difference(found: str, stored: str) -> str:
    """Where two texts part, with a little of each from there."""
    i = first_difference(found, stored)
    start, end = max(0, i - SHOWN_CONTEXT), i + SHOWN_CONTEXT
    return f"they part at character {i}: {found[start:end]!r} vs {stored[start:end]!r}"


def require(row: dict, fields: Sequence[str], where: str) -> None:
    """A row has every field its format needs."""
    missing = [field for field in fields if field not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")


def is_integer(value) -> bool:
    """An int, but not a bool: Python counts `true` as 1, a JSON file does not."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_token_ids(ids: Sequence, field: str, expected: Expected, where: str) -> None:
    """Every id in `ids` is a token of the vocabulary (added tokens included); checked
    before anything decodes them, since a tokenizer may crash on an impossible id or
    quietly decode it to nothing."""
    if not isinstance(ids, list):
        raise ValueError(f"{where}: {field} is {json.dumps(ids)}, not a list of token ids")
    for token in ids:
        if not is_integer(token):
            raise ValueError(f"{where}: {field} holds {json.dumps(token)}, not an integer")
        if not 0 <= token < expected.vocab_size:
            raise ValueError(
                f"{where}: {field} holds {token}, outside the vocabulary "
                f"(0 .. {expected.vocab_size - 1})"
            )


def check_prompt(token_ids: Sequence[int], prompt: Prompt, where: str) -> None:
    """The prompt ids are what the template makes of the dataset's question."""
    if list(token_ids) != prompt.token_ids:
        i = first_difference(token_ids, prompt.token_ids)
        raise ValueError(
            f"{where}: prompt_token_ids ({len(token_ids)} tokens) are not the template's "
            f"tokenisation of the dataset's question ({len(prompt.token_ids)} tokens; "
            f"first difference at token {i})"
        )


def cut_completion(generated: Sequence[int], expected: Expected, where: str) -> Completion:
    """The completion in `generated` (the model's ids after the prompt, with whatever
    ended them) by the project's rules; an EOS or stop string must end it, or
    max_new_tokens must be reached, and never exceeded."""
    limit = expected.max_new_tokens
    if len(generated) > limit:
        raise ValueError(
            f"{where}: {len(generated)} generated tokens, more than max_new_tokens {limit}; "
            "set the model's max_new_tokens to the limit the file was generated with"
        )
    try:
        end = completion_end(generated, expected.eos_token_ids, expected.stops, limit)
    except RuntimeError as e:
        last = decode(expected.tokenizer, generated[-1:])
        raise ValueError(
            f"{where}: {e} (it ends on {last!r}); the EOS ids of the model are "
            f"{list(expected.eos_token_ids)}, the template's stop strings "
            f"{list(expected.stop)}; a file generated with fewer tokens allowed needs "
            "that limit as the model's max_new_tokens"
        ) from None
    return completion_of(expected.tokenizer, generated, end)


def from_circuitry(row: dict, expected: Expected) -> dict:
    """A row in the project's own format, checked: its ids decode to its completion, and
    the rules end the completion where and why the row says."""
    where = expected.where(row["idx"])
    require(row, CIRCUITRY_FIELDS, where)
    for field in ("prompt_token_ids", "completion_token_ids"):
        check_token_ids(row[field], field, expected, where)
    prompt = expected.prompts[row["idx"]]
    check_prompt(row["prompt_token_ids"], prompt, where)
    ids, stated = list(row["completion_token_ids"]), row["finish_reason"]
    text = decode(expected.tokenizer, ids)
    if text != row["completion"]:
        raise ValueError(
            f"{where}: completion_token_ids do not decode to the stored completion; "
            + text_difference(text, row["completion"])
        )
    ended = ids + list(expected.eos_token_ids[:1]) if stated == "eos" else ids
    completion = cut_completion(ended, expected, where)
    if (completion.token_ids, completion.finish_reason) != (ids, stated):
        raise ValueError(
            f"{where}: finish_reason {stated!r} after {len(ids)} tokens, but the completion "
            f"rules end it with {completion.finish_reason!r} after "
            f"{len(completion.token_ids)}"
        )
    return generation_row(row["idx"], prompt, completion)


def harness_code(text: str, stop_words: Sequence[str]) -> str:
    """What math_eval.py stores as `code` for an output text: stripped (its `rstrip`,
    then `strip`), then cut at each stop word in turn and stripped again."""
    code = text.strip()
    for word in stop_words:
        if word in code:
            code = code.split(word)[0].strip()
    return code


def from_qwen_math(row: dict, expected: Expected) -> dict:
    """A row of the Qwen2.5-Math harness, converted: the completion cut from its
    generated ids; those ids, post-processed as the harness does, must give its `code`."""
    where = expected.where(row["idx"])
    require(row, QWEN_MATH_FIELDS, where)
    n_samples = {len(row[field]) for field in QWEN_MATH_FIELDS}
    if n_samples != {1}:
        raise ValueError(
            f"{where}: {max(n_samples)} samples per problem; only greedy runs with "
            "n_sampling 1 can be imported"
        )
    for field in ("prompt_token_ids", "generate_token_ids"):
        check_token_ids(row[field][0], field, expected, where)
    prompt = expected.prompts[row["idx"]]
    check_prompt(row["prompt_token_ids"][0], prompt, where)
    generated = list(row["generate_token_ids"][0])
    completion = cut_completion(generated, expected, where)
    tokenizer = expected.tokenizer
    stop_words = [decode(tokenizer, [i]) for i in expected.eos_token_ids] + list(expected.stop)
    code = harness_code(decode(tokenizer, generated), stop_words)
    if code != row["code"][0]:
        raise ValueError(
            f"{where}: generate_token_ids, post-processed as the harness does, are not the "
            f"stored code; {text_difference(code, row['code'][0])}"
        )
    return generation_row(row["idx"], prompt, completion)


CONVERTERS = {"circuitry": from_circuitry, "qwen-math": from_qwen_math}


def check_idx(idx, expected: Expected, rows: dict[int, dict]) -> None:
    """`idx` is an integer, a problem of the dataset, and not one already read."""
    if not is_integer(idx):
        raise ValueError(f"{expected.where(idx)}: idx must be an integer")
    if idx not in expected.prompts:
        raise ValueError(f"{expected.where(idx)}: not a problem of the dataset")
    if idx in rows:
        raise ValueError(f"{expected.where(idx)}: a second row for this problem")


def check_complete(expected: Expected, rows: dict[int, dict]) -> None:
    """Every problem of the dataset has a row: a subset would quietly shrink the study."""
    missing = sorted(expected.prompts.keys() - rows.keys())
    if missing:
        shown = ", ".join(map(str, missing[:SHOWN_MISSING]))
        more = ", ..." if len(missing) > SHOWN_MISSING else ""
        raise ValueError(
            f"{expected.path}: {len(missing)} of the dataset's {len(expected.prompts)} "
            f"problems have no row (idx {shown}{more})"
        )


def import_generations(
    path: str | os.PathLike,
    file_format: str,
    lm: LoadedModel,
    template: PromptTemplate,
    problems: Sequence[dict],
    max_new_tokens: int,
) -> list[dict]:
    """The generation rows of `problems` read from `path` (in `file_format`), checked against
    the model, the template and the problems (see the module docstring), sorted by idx and
    not yet graded."""
    expected = Expected(
        path=str(path),
        tokenizer=lm.tokenizer,
        vocab_size=len(lm.tokenizer),
        eos_token_ids=lm.eos_token_ids,
        stop=template.stop,
        stops=StopStrings(lm.tokenizer, template.stop) if template.stop else None,
        max_new_tokens=max_new_tokens,
        prompts=build_prompts(template, problems, lm.tokenizer),
    )
    convert = CONVERTERS[file_format]
    rows: dict[int, dict] = {}
    for row in read_jsonl(path):
        idx = row.get("idx")
        check_idx(idx, expected, rows)
        rows[idx] = convert(row, expected)
    check_complete(expected, rows)
    return [rows[idx] for idx in sorted(rows)]
