"""What EAP scores: one prompt and its answer, with the window of answer tokens the loss
reads, and the samples of a pair file's rows. Shared by the scoring (`eap`), its losses
(`window_loss`), the ablations and the memory planning (`memory`); no torch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from circuitry.generation.pairing import cut_length

# The texts a model is scored on: its own answer, or the other model's (crossed).
TEXTS = ("own", "crossed")


@dataclass(frozen=True)
class Sample:
    """One prompt and its answer; the loss window is the first `cut_len` answer tokens.

    `sample_id` only names the sample in error messages.
    """

    prompt_token_ids: Sequence[int]
    answer_token_ids: Sequence[int]
    cut_len: int
    sample_id: object = None

    def __post_init__(self) -> None:
        if len(self.prompt_token_ids) < 1:
            raise ValueError(f"sample {self.sample_id!r}: the prompt has no tokens")
        if not 1 <= self.cut_len <= len(self.answer_token_ids):
            raise ValueError(
                f"sample {self.sample_id!r}: cut_len={self.cut_len} is outside "
                f"[1, {len(self.answer_token_ids)}] (the answer's length)"
            )

    @property
    def tokens(self) -> list[int]:
        """What the model reads: the prompt and the answer window."""
        return [*self.prompt_token_ids, *self.answer_token_ids[: self.cut_len]]

    @property
    def loss_positions(self) -> range:
        """Positions whose logits predict the window tokens."""
        start = len(self.prompt_token_ids) - 1
        return range(start, start + self.cut_len)


def text_role(role: str, text: str) -> str:
    """Whose answer the `role` model reads: its own, or the other role's (`crossed`)."""
    if text not in TEXTS:
        raise ValueError(f"unknown text {text!r}; known: {', '.join(TEXTS)}")
    if text == "own":
        return role
    return {"base": "tuned", "tuned": "base"}[role]


def windowed_samples(
    pair_rows: Sequence[dict], role: str, cut_len: int, text: str = "own"
) -> list[Sample]:
    """The `role` model's prompt with the answer of `text_role(role, text)` for each paired
    row, its window the first `cut_len` answer tokens (the whole answer where that is
    shorter: the length filters allow answers down to 0.375 T, shorter than the window of
    alpha 0.5). Crossed text keeps the scoring model's own prompt: it reads the other
    answer as if it had written it."""
    author = text_role(role, text)
    return [
        Sample(
            prompt_token_ids=row[role]["prompt_token_ids"],
            answer_token_ids=row[author]["completion_token_ids"],
            cut_len=min(cut_len, len(row[author]["completion_token_ids"])),
            sample_id=row["idx"],
        )
        for row in pair_rows
    ]


def condition_samples(
    role: str,
    pair_rows: Mapping[str, Sequence[dict]],
    summaries: Mapping[str, Mapping],
    conditions: Iterable[tuple[str, str, str]],
) -> dict[tuple[str, str, str], tuple[int, list[Sample]]]:
    """`{(dataset, alpha, text): (cut_len, samples)}` of `role` in each condition, from
    each dataset's pair rows and pairing summary (which sets the window of an alpha)."""
    result = {}
    for dataset, alpha, text in conditions:
        if (dataset, alpha, text) not in result:
            cut_len = cut_length(float(alpha), summaries[dataset])
            samples = windowed_samples(pair_rows[dataset], role, cut_len, text)
            result[dataset, alpha, text] = cut_len, samples
    return result
