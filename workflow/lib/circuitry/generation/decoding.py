"""Decoding: how a model turns prompts into greedy completions, and which tokens are a
completion.

A row's generation ends at the first of:

- an EOS token (the tokenizer's EOS or any EOS of the checkpoint's generation config):
  finish reason `eos`; the EOS itself is not part of the completion;
- a token after which the decoded completion contains one of the template's stop
  strings: finish reason `stop`; that token is the completion's last;
- `max_new_tokens` tokens: finish reason `length`.

An EOS that also completes a stop string counts as `eos`. A completion's token ids are
exactly those generated ids (never padding, never the terminating EOS), and its text is
their decode, special tokens kept and spaces not cleaned up.

Two backends (`generation.backend`) produce them:

- `static`: `model.generate` on left-padded batches of fixed composition. A batch runs
  until its longest row ends, so with chain-of-thought length spreads most rows idle.
  Greedy results depend on the batch composition through padding, so fixed batches make
  a rerun reproduce them.
- `continuous`: transformers' continuous batching (`ContinuousBatchingManager`, paged
  attention). A row leaves the running batch as soon as it ends and a waiting prompt
  takes its place. Stop strings are checked on the streamed tokens and the row is
  cancelled once one appears. Which rows share a forward depends on timing, so in bf16
  on a GPU a rerun may give other completions for a few rows (ties and near-ties of the
  argmax move with batch shapes and kernels); the teacher-forcing agreement in the
  provenance says how far the scored forward reproduces each file either way.

Broken logits. A model whose logits hold NaN or inf (broken weights, fp16 overflow)
would greedily write garbage: argmax takes a NaN for the maximum, so all-NaN logits
write token 0 (`<pad>`) again and again. Either backend fails instead
(`NonFiniteLogitsError`, naming the lowest idx affected) before any row of the affected
group is returned. `static` marks the rows whose raw logits are non-finite at any step
(`NonFiniteRows`). `continuous` offers no hook on the logits, so it asks for the log
probability of each generated token, computed from the very logits that chose it: a
softmax over logits holding NaN or +inf (or only -inf) is NaN everywhere, so a NaN log
probability gives them away (a -inf beside finite logits, which moves no argmax, goes
unnoticed there). Its argmax is then taken over the probabilities instead of the logits,
which differs only where two logits round to one probability.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import (
    ContinuousBatchingConfig,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from circuitry.models.loading import LoadedModel

BACKENDS = ("static", "continuous")
# A character is at most 4 byte-level tokens, so this many trailing tokens hold the
# last `len(stop)` characters of a completion.
TOKENS_PER_CHARACTER = 4
# Seconds to wait for the next finished row before checking the manager is still alive.
POLL_S = 1.0


class NonFiniteLogitsError(ValueError):
    """A model's logits hold NaN or inf, so its greedy tokens (and any agreement with them)
    are garbage."""

    def __init__(self, source: str, idx: int, activity: str = "generating"):
        super().__init__(
            f"{source}: non-finite logits (NaN or inf) while {activity} idx {idx}; "
            "the weights or the dtype (fp16 overflow?) are broken"
        )


def fail_on_non_finite(
    source: str, idxs: Iterable[int], non_finite: Iterable[bool], activity: str = "generating"
) -> None:
    """Raise NonFiniteLogitsError for the lowest of the `idxs` flagged `non_finite`, if any."""
    flagged = [idx for idx, bad in zip(idxs, non_finite, strict=True) if bad]
    if flagged:
        raise NonFiniteLogitsError(source, min(flagged), activity)


def finite_rows(logits: torch.Tensor) -> torch.Tensor:
    """Whether each row of `logits` (over the last dimension) is free of NaN and inf, in one
    reduction, many times cheaper than `isfinite` on every logit: a row's float32 sum is
    non-finite iff one of its logits is (or they reach magnitudes near 1e33, as broken)."""
    return logits.sum(-1, dtype=torch.float32).isfinite()


def decode(tokenizer, token_ids: Sequence[int]) -> str:
    """Text of `token_ids`, special tokens kept and spaces not cleaned up."""
    return tokenizer.decode(
        list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


class StopStrings:
    """Tells whether the last token of a completion makes a stop string appear in its text."""

    def __init__(self, tokenizer, strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.strings = tuple(strings)
        self.window = TOKENS_PER_CHARACTER * (max(map(len, self.strings)) + 1)

    def completed_at(self, token_ids: Sequence[int], end: int) -> bool:
        """Whether the decoded tail of `token_ids[:end]` contains a stop string."""
        text = decode(self.tokenizer, token_ids[max(0, end - self.window) : end])
        return any(s in text for s in self.strings)


class StopStringCriterion(StoppingCriteria):
    """Stops a row once its completion contains a stop string (see StopStrings)."""

    def __init__(self, stops: StopStrings, prompt_width: int):
        self.stops = stops
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, self.prompt_width :][:, -self.stops.window :].tolist()
        done = [self.stops.completed_at(tail, len(tail)) for tail in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class NonFiniteRows(LogitsProcessor):
    """Marks, on the device, the rows whose logits hold NaN or inf at any step, so checking
    costs no host sync per step. Greedy decoding asks `generate` for no other logits
    processor, so the logits it sees are the model's raw ones."""

    def __init__(self, n_rows: int, device: torch.device):
        self.marked = torch.zeros(n_rows, dtype=torch.bool, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        self.marked |= ~finite_rows(scores)
        return scores


class MarkedRowsCriterion(StoppingCriteria):
    """Stops the rows a NonFiniteRows marked: their batch fails, so what they would generate
    next is waste (a model broken throughout stops after one step)."""

    def __init__(self, rows: NonFiniteRows):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return self.rows.marked


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: str


def first_end(
    generated: Sequence[int],
    eos_ids: Sequence[int],
    stops: StopStrings | None,
    start: int = 0,
) -> tuple[int, str] | None:
    """Where the completion in `generated` ends and why (`eos` or `stop`), looking from
    position `start` on; None while neither has happened."""
    eos = set(eos_ids)
    for position in range(start, len(generated)):
        if generated[position] in eos:
            return position, "eos"
        if stops is not None and stops.completed_at(generated, position + 1):
            return position + 1, "stop"
    return None


def completion_end(
    generated: Sequence[int],
    eos_ids: Sequence[int],
    stops: StopStrings | None,
    max_new_tokens: int,
) -> tuple[int, str]:
    """How many of a row's generated ids form its completion, and why it ended."""
    end = first_end(generated, eos_ids, stops)
    if end is not None:
        return end
    if len(generated) >= max_new_tokens:
        return max_new_tokens, "length"
    raise RuntimeError(
        f"generation ended after {len(generated)} of {max_new_tokens} tokens "
        "without EOS or stop string"
    )


def completion_of(tokenizer, generated: Sequence[int], end: tuple[int, str]) -> Completion:
    n, reason = end
    ids = list(generated[:n])
    return Completion(ids, decode(tokenizer, ids), reason)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids padded on the left to the longest prompt, and the attention mask."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


def greedy_config(lm: LoadedModel, max_new_tokens: int) -> GenerationConfig:
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=list(lm.eos_token_ids) or None,
        pad_token_id=lm.pad_token_id,
    )


def generate_batch(
    lm: LoadedModel,
    prompts: Mapping[int, Sequence[int]],
    max_new_tokens: int,
    stop: Sequence[str] = (),
) -> list[Completion]:
    """Greedy completions of a batch of prompts (token ids by idx, left padded together in
    this order); fails on the lowest idx whose logits were non-finite."""
    input_ids, attention_mask = left_pad(list(prompts.values()), lm.pad_token_id)
    width = input_ids.shape[1]
    stops = StopStrings(lm.tokenizer, stop) if stop else None
    non_finite = NonFiniteRows(len(prompts), lm.device)
    criteria = StoppingCriteriaList([MarkedRowsCriterion(non_finite)])
    if stops:
        criteria.append(StopStringCriterion(stops, width))
    output = lm.model.generate(
        input_ids=input_ids.to(lm.device),
        attention_mask=attention_mask.to(lm.device),
        generation_config=greedy_config(lm, max_new_tokens),
        logits_processor=LogitsProcessorList([non_finite]),
        stopping_criteria=criteria,
    )
    fail_on_non_finite(lm.source, prompts, non_finite.marked.tolist())
    return [
        completion_of(
            lm.tokenizer,
            generated,
            completion_end(generated, lm.eos_token_ids, stops, max_new_tokens),
        )
        for generated in output[:, width:].tolist()
    ]


def continuous_config(
    lm: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int
) -> ContinuousBatchingConfig:
    """The settings of a continuous run: log probabilities returned (they show non-finite
    logits, see the module docstring), and the paged cache.

    On a GPU the concurrency is used: transformers sizes the cache from free memory and
    runs as many rows at once as fit, the point of the backend. On CPU it would size the
    cache from the host's RAM (gigabytes zeroed even for a toy model), so there the cache
    holds `batch_size` rows of the longest prompt plus `max_new_tokens`, and at most
    `batch_size` rows run per step: short rows take one page each, so without the cap the
    scheduler would run many more rows than `batch_size` in that cache."""
    if lm.device.type == "cuda":
        return ContinuousBatchingConfig(return_logprobs=True)
    page = ContinuousBatchingConfig().page_size
    longest = max(map(len, prompts)) + max_new_tokens
    return ContinuousBatchingConfig(
        return_logprobs=True,
        num_blocks=batch_size * math.ceil(longest / page),
        max_requests_per_batch=batch_size,
    )


def generate_continuous(
    lm: LoadedModel,
    prompts: Mapping[int, Sequence[int]],
    max_new_tokens: int,
    stop: Sequence[str] = (),
    batch_size: int = 16,
) -> Iterator[list[tuple[int, Completion]]]:
    """Greedy completions of `prompts` (token ids by idx) under continuous batching; yields
    the rows finished since the last yield as `(idx, completion)`, as they finish, and fails
    on the lowest idx of them with non-finite logits (a NaN log probability)."""
    if not prompts:
        return
    stops = StopStrings(lm.tokenizer, stop) if stop else None
    eos = list(lm.eos_token_ids) or -1
    pending = {f"idx-{idx}": idx for idx in prompts}
    scanned: dict[str, int] = {}
    with lm.model.continuous_batching_context_manager(
        generation_config=greedy_config(lm, max_new_tokens),
        continuous_batching_config=continuous_config(
            lm, list(prompts.values()), max_new_tokens, batch_size
        ),
        warmup=lm.device.type == "cuda",
    ) as manager:
        for request_id, idx in pending.items():
            manager.add_request(
                list(prompts[idx]),
                request_id=request_id,
                max_new_tokens=max_new_tokens,
                streaming=stops is not None,
                eos_token_id=eos,
            )
        while pending:
            finished, non_finite = [], []
            output = manager.get_result(timeout=POLL_S)
            while output is not None:
                if output.request_id in pending:
                    end = settled_end(output, scanned, lm.eos_token_ids, stops, max_new_tokens)
                    if end is not None:
                        idx = pending.pop(output.request_id)
                        if not output.is_finished():
                            manager.cancel_request(output.request_id)
                        finished.append(
                            (idx, completion_of(lm.tokenizer, output.generated_tokens, end))
                        )
                        non_finite.append(any(map(math.isnan, output.logprobs)))
                output = manager.get_result(timeout=0)
            fail_on_non_finite(lm.source, (idx for idx, _ in finished), non_finite)
            if finished:
                yield finished
            elif not manager.is_running():
                raise RuntimeError(
                    f"continuous batching stopped with {len(pending)} rows unfinished "
                    "(the transformers error is logged above)"
                )


def settled_end(
    output, scanned: dict[str, int], eos_ids, stops, max_new_tokens
) -> tuple[int, str] | None:
    """The end of a streamed or finished request's completion, or None while it runs on;
    `scanned` remembers how far each request's tokens were already searched."""
    if output.error is not None:
        raise RuntimeError(
            f"continuous batching failed on request {output.request_id}: {output.error}"
        )
    generated = output.generated_tokens
    end = first_end(generated, eos_ids, stops, scanned.get(output.request_id, 0))
    scanned[output.request_id] = len(generated)
    if end is not None or not output.is_finished():
        return end
    if len(generated) >= max_new_tokens:
        return max_new_tokens, "length"
    raise RuntimeError(
        f"request {output.request_id} finished after {len(generated)} of {max_new_tokens} "
        "tokens without EOS or stop string"
    )
