"""Generation: load a model, then answer every problem greedily in resumable batches.

Which tokens are the completion, and the two backends that write them (`static`,
`continuous`), are `circuitry.generation.decoding`'s.

Resuming. Each finished row is appended to a partial file next to the output, and a
restart keeps those rows. Under `static`, batches are a deterministic function of the
problems and the batch size (longest prompts first, fixed chunks) and greedy results
depend on batch composition through padding, so a restart rebuilds the same batches,
generates only those with missing rows, and the final file is byte-identical to an
uninterrupted run. Under `continuous`, a restart generates exactly the missing rows.

Teacher forcing. EAP later re-reads each answer with one forward pass. `teacher_forcing`
checks that this forward would itself have written the answer: the share of completion
tokens that are its argmax given their prefix, and where each disagreeing row first
departs. Batch composition and kernels (bf16 on a GPU) can make the two differ, and then
the study attributes text the scored model would not have written. Non-finite logits
fail it (`decoding.NonFiniteLogitsError`) rather than agree with garbage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from circuitry.data.prompts import Prompt, PromptTemplate, build_prompt
from circuitry.generation.decoding import (
    BACKENDS,
    Completion,
    fail_on_non_finite,
    finite_rows,
    generate_batch,
    generate_continuous,
)
from circuitry.io import atomic_path, dumps_row, write_jsonl
from circuitry.models.loading import LoadedModel

log = logging.getLogger(__name__)

FINISH_REASONS = ("eos", "stop", "length")
# Logit elements per chunk of the teacher-forced predictions, whatever the vocabulary.
PREDICTION_CHUNK = 1 << 22


def plan_batches(prompt_lengths: dict[int, int], batch_size: int) -> list[list[int]]:
    """Batches of idx: longest prompts first (memory errors show early), ties by idx."""
    order = sorted(prompt_lengths, key=lambda idx: (-prompt_lengths[idx], idx))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def build_prompts(template: PromptTemplate, problems: Sequence[dict], tokenizer) -> dict:
    """Prompt of every problem, by idx."""
    prompts: dict[int, Prompt] = {}
    for problem in problems:
        idx = problem["idx"]
        if idx in prompts:
            raise ValueError(f"problem idx {idx} occurs twice")
        prompts[idx] = build_prompt(template, problem["question"], tokenizer)
    return prompts


def run_fingerprint(
    lm: LoadedModel,
    prompts: dict[int, Prompt],
    batches: list[list[int]],
    max_new_tokens: int,
    stop: Sequence[str],
    backend: str,
) -> str:
    """A hash of everything the rows depend on; a partial file from another run is not reused."""
    settings = {
        "backend": backend,
        "model": lm.identity,
        "provenance": lm.provenance(),
        "pad_token_id": lm.pad_token_id,
        "max_new_tokens": max_new_tokens,
        "stop": list(stop),
        "batches": [[[idx, prompts[idx].token_ids] for idx in batch] for batch in batches],
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def partial_path_for(output: str | os.PathLike) -> Path:
    """Where the rows of an unfinished run of `output` are kept."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def read_partial(path: Path, fingerprint: str) -> dict[int, dict]:
    """Rows of an interrupted run with the same fingerprint; a torn last line is dropped."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("fingerprint") != fingerprint:
        log.warning("%s was written by a run with other settings; starting over", path)
        return {}
    rows = {}
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: dropping a line cut short by the interruption", path)
            continue
        rows[row["idx"]] = row
    return rows


def start_partial(path: Path, fingerprint: str, rows: dict[int, dict]) -> None:
    """(Re)write the partial file with its header and the rows kept so far."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"fingerprint": fingerprint}) + "\n")
        for row in rows.values():
            f.write(dumps_row(row) + "\n")


def append_rows(f, rows: Sequence[dict]) -> None:
    """Append rows and push them to disk, so a killed job keeps them."""
    f.write("".join(dumps_row(row) + "\n" for row in rows))
    f.flush()
    os.fsync(f.fileno())


def generation_row(idx: int, prompt: Prompt, completion: Completion) -> dict:
    return {
        "idx": idx,
        "prompt": prompt.text,
        "prompt_token_ids": prompt.token_ids,
        "completion": completion.text,
        "completion_token_ids": completion.token_ids,
        "finish_reason": completion.finish_reason,
    }


def completion_groups(
    lm: LoadedModel,
    prompts: dict[int, Prompt],
    todo: list[list[int]],
    backend: str,
    max_new_tokens: int,
    stop: Sequence[str],
    batch_size: int,
) -> Iterator[list[tuple[int, Completion]]]:
    """Completions of the rows of the `todo` batches, `(idx, completion)` in the groups the
    backend finishes them in: whole batches (`static`) or rows as they end (`continuous`)."""
    if backend == "static":
        for batch in todo:
            ids = {idx: prompts[idx].token_ids for idx in batch}
            yield list(zip(batch, generate_batch(lm, ids, max_new_tokens, stop), strict=True))
    else:
        rows = {idx: prompts[idx].token_ids for batch in todo for idx in batch}
        yield from generate_continuous(lm, rows, max_new_tokens, stop, batch_size)


def generate_rows(
    lm: LoadedModel,
    template: PromptTemplate,
    problems: Sequence[dict],
    *,
    max_new_tokens: int,
    batch_size: int,
    partial_path: str | os.PathLike,
    backend: str = "static",
    progress: bool = True,
) -> list[dict]:
    """Generation rows of all `problems` (dicts with `idx`, `question`), sorted by idx.

    Rows of an interrupted run are read back from `partial_path` and only the missing ones
    are generated (under `static`, the batches that hold them); each new row is appended
    there as soon as its group is done.
    """
    if backend not in BACKENDS:
        raise ValueError(f"generation backend {backend!r} is not one of {', '.join(BACKENDS)}")
    partial_path = Path(partial_path)
    prompts = build_prompts(template, problems, lm.tokenizer)
    if backend == "static":
        batches = plan_batches({idx: len(p.token_ids) for idx, p in prompts.items()}, batch_size)
    else:
        batches = [sorted(prompts)]
    fingerprint = run_fingerprint(lm, prompts, batches, max_new_tokens, template.stop, backend)
    done = read_partial(partial_path, fingerprint)
    start_partial(partial_path, fingerprint, done)
    todo = [
        batch if backend == "static" else [idx for idx in batch if idx not in done]
        for batch in batches
        if any(idx not in done for idx in batch)
    ]
    n_todo = sum(len(batch) for batch in todo)
    log.info(
        "%d problems, %s backend (batch size %d): %d rows restored, %d rows to generate",
        *(len(prompts), backend, batch_size, len(done), n_todo),
    )
    start, n_rows, n_tokens = time.perf_counter(), 0, 0
    groups = completion_groups(
        lm, prompts, todo, backend, max_new_tokens, template.stop, batch_size
    )
    with (
        open(partial_path, "a", encoding="utf-8") as f,
        tqdm(total=n_todo, unit="row", disable=not progress, desc="generate") as bar,
    ):
        for group in groups:
            new = [
                generation_row(idx, prompts[idx], completion)
                for idx, completion in group
                if idx not in done
            ]
            append_rows(f, new)
            done.update((row["idx"], row) for row in new)
            n_rows += len(group)
            n_tokens += sum(len(completion.token_ids) for _, completion in group)
            rate = n_tokens / (time.perf_counter() - start)
            log.info(
                "%d/%d rows, %d completion tokens, %.1f tokens/s",
                *(n_rows, n_todo, n_tokens, rate),
            )
            bar.update(len(group))
            bar.set_postfix(tokens_per_s=f"{rate:.1f}")
    reasons = Counter(row["finish_reason"] for row in done.values())
    log.info("finish reasons: %s", ", ".join(f"{r} {reasons[r]}" for r in FINISH_REASONS))
    return [done[idx] for idx in sorted(done)]


def write_generations(
    path: str | os.PathLike, rows: Sequence[dict], partial_path: str | os.PathLike
) -> int:
    """Write the final rows (sorted by idx) atomically, then drop the partial file."""
    n = write_jsonl(path, sorted(rows, key=lambda row: row["idx"]))
    Path(partial_path).unlink(missing_ok=True)
    return n


@dataclass(frozen=True)
class TeacherForcing:
    """How far a model's forward reproduces a generation file: `n_agreeing` of `n_tokens`
    completion tokens are its argmax given their prefix; `first_disagreement` maps each
    row that departs (idx) to the completion position where it first does."""

    n_tokens: int
    n_agreeing: int
    first_disagreement: dict[int, int]

    @property
    def agreement(self) -> float:
        return self.n_agreeing / self.n_tokens if self.n_tokens else 1.0

    def shortfall(self, threshold: float) -> str | None:
        """Why the agreement is below `threshold` (None when it is not)."""
        if self.agreement >= threshold:
            return None
        return (
            f"its own forward reproduces only {self.agreement:.2%} of the completion tokens "
            f"({len(self.first_disagreement)} rows depart; generation.agreement_threshold "
            f"{threshold}): EAP would attribute text this forward would not have written"
        )

    def as_dict(self) -> dict:
        return {
            "agreement": self.agreement,
            "n_tokens": self.n_tokens,
            "n_rows_disagreeing": len(self.first_disagreement),
            "first_disagreement": {str(i): p for i, p in self.first_disagreement.items()},
        }


def head_argmax(
    head: torch.nn.Module, states: torch.Tensor, positions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The argmax of `head`'s logits at each of `states`, computed `positions` states at a
    time, and whether all those logits are finite (a 0-d tensor, left on the device)."""
    predicted, finite = [], []
    for chunk in states.split(positions):
        logits = head(chunk)
        predicted.append(logits.argmax(-1))
        finite.append(finite_rows(logits).all())
    return torch.cat(predicted), torch.stack(finite).all()


@torch.no_grad()
def greedy_predictions(lm: LoadedModel, rows: Sequence[dict]) -> list[torch.Tensor]:
    """Per row, the model's argmax at each completion position given the prefix before it.

    One right-padded forward: a causal model's real tokens never see the padding after
    them. The output head runs over chunks of positions, so no `[tokens, vocab]` logits
    tensor is held at once. Fails on the lowest idx whose logits are non-finite at a
    completion position or at the one after it (which predicts the end), so even a row
    without completion tokens is checked.
    """
    sequences = [row["prompt_token_ids"] + row["completion_token_ids"] for row in rows]
    ids = torch.full((len(rows), max(map(len, sequences))), lm.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, sequence in enumerate(sequences):
        ids[i, : len(sequence)] = torch.tensor(sequence)
        mask[i, : len(sequence)] = 1
    hidden = lm.model.base_model(
        input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)
    ).last_hidden_state
    head = lm.model.get_output_embeddings()
    positions = max(1, PREDICTION_CHUNK // head.weight.shape[0])
    predictions, finite = [], []
    for i, row in enumerate(rows):
        start, n = len(row["prompt_token_ids"]) - 1, len(row["completion_token_ids"])
        predicted, all_finite = head_argmax(head, hidden[i, start : start + n + 1], positions)
        predictions.append(predicted[:n].cpu())
        finite.append(all_finite)
    idxs = [row["idx"] for row in rows]
    fail_on_non_finite(lm.source, idxs, (~torch.stack(finite)).tolist(), "teacher forcing")
    return predictions


def teacher_forcing(lm: LoadedModel, rows: Sequence[dict], batch_size: int) -> TeacherForcing:
    """Teacher-forced agreement of `lm` with the completions of `rows` (see the module
    docstring); rows of similar length share a batch."""
    ordered = sorted(
        rows, key=lambda r: len(r["prompt_token_ids"]) + len(r["completion_token_ids"])
    )
    n_tokens = n_agreeing = 0
    first_disagreement = {}
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start : start + batch_size]
        for row, predicted in zip(batch, greedy_predictions(lm, batch), strict=True):
            agrees = predicted == torch.tensor(row["completion_token_ids"], dtype=torch.long)
            n_tokens += len(agrees)
            n_agreeing += int(agrees.sum())
            if not agrees.all():
                first_disagreement[row["idx"]] = int((~agrees).nonzero()[0, 0])
    return TeacherForcing(n_tokens, n_agreeing, dict(sorted(first_disagreement.items())))
