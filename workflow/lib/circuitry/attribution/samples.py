"""What EAP scores: one prompt and its answer, with the window of answer tokens the loss
reads. Shared by the scoring (`eap`), its losses (`window_loss`) and the ablations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
