"""Pairing: join two models' graded generations and keep comparable samples.

The steps, with the defaults of the paper's code:

1. join base and tuned rows by `idx` (rows present in both);
2. keep the rows both models answered correctly;
3. reference length `T = min(mean base answer length, mean tuned answer length)` over
   those rows, where a row's answer length is its number of completion tokens;
4. drop rows whose prompts have different numbers of tokens for the two models;
5. drop rows whose mean answer length `m = (len_base + len_tuned) / 2` lies outside
   `[small_coeff * T, big_coeff * T]`;
6. drop rows whose length difference `|len_base - len_tuned|` exceeds `balance_coeff * m`;
7. sample `num_samples` rows with `seed` (all of them if fewer are left); the summary keeps
   the order they were drawn in (`draw_order`), the order the paper's code scores them in.

EAP later reads the first `cut_len` tokens of each answer (`cut_length`), so T fixes
every alpha's window.

Two modes (`filter.mode`) read the bounds and the window:

- `exact` (the project's): bounds inclusive and compared exactly. Lengths are integers,
  `T` is a fraction, and each coefficient is taken as the decimal written in the config
  (0.5 is 1/2, 0.3 is 3/10), so a row exactly on a bound is kept whatever float rounding
  would say; `cut_len = max(1, floor(alpha * T))` in exact arithmetic.
- `paper` (the paper's `run_tests.py`, `MathDataset`): `T` in floats, the bounds
  truncated to integers, `int(small_coeff * T)` and `int(big_coeff * T)`, a row dropped
  when `m > high or m < low` (`m` a float), the balance test as `diff / m >
  balance_coeff`, and `cut_len = max(int(T * alpha), 1)` in floats. Its sampling
  (`random.seed(seed); random.sample(rows, n)` over the rows in file order) is the same
  draw as the exact mode's over the rows in idx order, when the file lists the problems
  in dataset order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

ROLES = ("base", "tuned")
MODES = ("exact", "paper")
# The paper scored EAP through TransformerLens, whose configs cap these families' context
# (n_ctx) at 2048 tokens: it could not have scored a longer prompt + window.
PAPER_CONTEXT_CAPS = {"mistral": 2048, "qwen2": 2048}
REQUIRED_KEYS = ("idx", "prompt_token_ids", "completion_token_ids", "correct")


class PairingError(RuntimeError):
    """No sample survives filtering, or the inputs are malformed."""


@dataclass(frozen=True)
class FilterSettings:
    """The config's `filter` section, as validated (the schema holds the paper's defaults)."""

    small_coeff: float
    big_coeff: float
    balance_coeff: float
    num_samples: int
    seed: int
    mode: str
    count_eos: bool

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"filter.mode: {self.mode!r} is not one of {', '.join(MODES)}")

    @classmethod
    def from_config(cls, section: dict) -> FilterSettings:
        return cls(**section)

    def answer_length(self, row: dict) -> int:
        """A row's answer length: its completion tokens, and with `count_eos` the EOS that
        ended it too. vLLM's `CompletionOutput.token_ids`, which the paper's lengths count,
        keeps the EOS or stop token id a sequence ends on; only its text drops it
        (`StopChecker.maybe_stop_sequence` in `vllm/engine/output_processor/stop_checker.py`).
        The generation stage keeps the EOS out of `completion_token_ids` and records
        `finish_reason` `eos`; a stop string's last token is already in the completion."""
        return answer_length(row) + (self.count_eos and row.get("finish_reason") == "eos")


def as_written(coeff: float) -> Fraction:
    """The decimal a config value was written as, exactly (0.3 -> 3/10, not 0.2999...)."""
    return Fraction(str(coeff))


def cut_length(alpha: float, summary: Mapping) -> int:
    """The answer window of `alpha` for the pairing a summary records (`pair_samples`).

    `exact`: `max(1, floor(alpha * T))` with `alpha` the decimal written in the config and
    `T` the exact fraction, so `floor` never lands one token off through rounding.
    `paper`: `max(int(T * alpha), 1)` in floats, as the paper's code computes it (`T` is the
    fraction rounded once, as numpy's mean of the lengths is).
    """
    reference = Fraction(summary["reference_length_fraction"])
    if summary["settings"]["mode"] == "paper":
        return max(int(float(reference) * alpha), 1)
    return max(1, math.floor(as_written(alpha) * reference))


def index_by_idx(rows: Iterable[dict], role: str) -> dict[int, dict]:
    """Rows keyed by idx; a missing field or a repeated idx fails naming the role."""
    indexed: dict[int, dict] = {}
    for row in rows:
        missing = [key for key in REQUIRED_KEYS if key not in row]
        if missing:
            raise PairingError(
                f"{role} row {row.get('idx')} lacks {', '.join(missing)} "
                "(pairing needs graded generation rows)"
            )
        if row["idx"] in indexed:
            raise PairingError(f"{role} rows: idx {row['idx']} occurs twice")
        indexed[row["idx"]] = row
    return indexed


def answer_length(row: dict) -> int:
    return len(row["completion_token_ids"])


def prompt_length(row: dict) -> int:
    return len(row["prompt_token_ids"])


def mean_answer_length(rows: Sequence[dict], length: Callable[[dict], int]) -> Fraction:
    return Fraction(sum(length(row) for row in rows), len(rows))


@dataclass(frozen=True)
class LengthFilters:
    """The length bounds of one pairing and its two length tests, in one mode's reading."""

    low: Fraction
    high: Fraction
    in_range: Callable[[dict, dict], bool]
    balanced: Callable[[dict, dict], bool]


def exact_filters(settings: FilterSettings, reference: Fraction) -> LengthFilters:
    """Bounds `[small * T, big * T]` and balance `diff <= balance * m`, in exact arithmetic."""
    low = as_written(settings.small_coeff) * reference
    high = as_written(settings.big_coeff) * reference
    balance = as_written(settings.balance_coeff)
    length = settings.answer_length

    def mean(base: dict, tuned: dict) -> Fraction:
        return Fraction(length(base) + length(tuned), 2)

    def balanced(base: dict, tuned: dict) -> bool:
        return abs(length(base) - length(tuned)) <= balance * mean(base, tuned)

    return LengthFilters(low, high, lambda b, t: low <= mean(b, t) <= high, balanced)


def paper_filters(settings: FilterSettings, reference: Fraction) -> LengthFilters:
    """`run_tests.py`'s tests: integer bounds truncated from the float products, a row out
    when `m > high or m < low`, unbalanced when `diff / m > balance` (a row whose answers
    are both empty, where the paper's code would divide by zero, counts as balanced)."""
    refer = float(reference)
    low, high = int(settings.small_coeff * refer), int(settings.big_coeff * refer)
    length = settings.answer_length

    def mean(base: dict, tuned: dict) -> float:
        return (length(base) + length(tuned)) / 2

    def balanced(base: dict, tuned: dict) -> bool:
        difference = abs(length(base) - length(tuned))
        return not (mean(base, tuned) and difference / mean(base, tuned) > settings.balance_coeff)

    return LengthFilters(
        Fraction(low),
        Fraction(high),
        lambda b, t: not (mean(b, t) > high or mean(b, t) < low),
        balanced,
    )


LENGTH_FILTERS = {"exact": exact_filters, "paper": paper_filters}


def role_fields(row: dict, length: Callable[[dict], int] = answer_length) -> dict:
    """What a pair row keeps of one model's answer; `answer_len` as the filters counted it."""
    return {
        "prompt_token_ids": row["prompt_token_ids"],
        "completion_token_ids": row["completion_token_ids"],
        "prompt_len": prompt_length(row),
        "answer_len": length(row),
    }


class Funnel:
    """The idx still kept after each filter, and how many each filter removed."""

    def __init__(self, base: dict[int, dict], tuned: dict[int, dict], pair: str, dataset: str):
        self.base, self.tuned = base, tuned
        self.pair, self.dataset = pair, dataset
        self.joined = sorted(base.keys() & tuned.keys())
        self.kept = self.joined
        self.filters: list[dict] = []

    def record(self, reason: str, survivors: list[int]) -> None:
        removed = len(self.kept) - len(survivors)
        self.filters.append({"reason": reason, "removed": removed, "remaining": len(survivors)})
        self.kept = survivors

    def apply(self, reason: str, keep) -> None:
        """Keep the rows for which `keep(base_row, tuned_row)` holds; fail if none is left."""
        self.record(reason, [i for i in self.kept if keep(self.base[i], self.tuned[i])])
        if not self.kept:
            raise PairingError(
                f"pair {self.pair}, dataset {self.dataset}: no sample left after "
                f"filtering ({self.describe()})"
            )

    def describe(self) -> str:
        counts = [f"{len(self.joined)} joined"]
        counts += [f"{f['removed']} {f['reason']}" for f in self.filters]
        return ", ".join(counts) + f", {len(self.kept)} left"

    def rows(self, role: str) -> list[dict]:
        rows = self.base if role == "base" else self.tuned
        return [rows[idx] for idx in self.kept]


def both_correct(base: dict, tuned: dict) -> bool:
    return bool(base["correct"]) and bool(tuned["correct"])


def same_prompt_length(base: dict, tuned: dict) -> bool:
    return prompt_length(base) == prompt_length(tuned)


def pair_samples(
    base_rows: Iterable[dict],
    tuned_rows: Iterable[dict],
    settings: FilterSettings,
    *,
    pair: str,
    dataset: str,
) -> tuple[list[dict], dict]:
    """Selected paired rows (sorted by idx) and a JSON-able summary of every step.

    Raises PairingError, naming the pair, the dataset and the counts, when no row
    survives a filter.
    """
    base = index_by_idx(base_rows, "base")
    tuned = index_by_idx(tuned_rows, "tuned")
    funnel = Funnel(base, tuned, pair, dataset)
    funnel.apply("not both correct", both_correct)
    length = settings.answer_length
    means = {role: mean_answer_length(funnel.rows(role), length) for role in ROLES}
    reference = min(means.values())
    filters = LENGTH_FILTERS[settings.mode](settings, reference)
    low, high = filters.low, filters.high
    funnel.apply("prompt length mismatch", same_prompt_length)
    funnel.apply("out of length range", filters.in_range)
    funnel.apply("imbalanced", filters.balanced)
    n_sample = min(settings.num_samples, len(funnel.kept))
    drawn = random.Random(settings.seed).sample(funnel.kept, n_sample)
    funnel.record("not sampled", sorted(drawn))
    summary = {
        "pair": pair,
        "dataset": dataset,
        "n_base": len(base),
        "n_tuned": len(tuned),
        "n_joined": len(funnel.joined),
        "n_correct": {
            role: sum(bool(rows[idx]["correct"]) for idx in funnel.joined)
            for role, rows in zip(ROLES, (base, tuned), strict=True)
        },
        "filters": funnel.filters,
        "mean_answer_length": {role: float(mean) for role, mean in means.items()},
        "reference_length": float(reference),
        "reference_length_fraction": str(reference),
        "length_bounds": [float(low), float(high)],
        "length_bounds_fraction": [str(low), str(high)],
        "min_selected_answer_length": {
            role: min(length(row) for row in funnel.rows(role)) for role in ROLES
        },
        "settings": asdict(settings),
        "seed": settings.seed,
        "n_selected": n_sample,
        "draw_order": drawn,
        "too_few": n_sample < settings.num_samples,
    }
    rows = [
        {
            "idx": idx,
            "base": role_fields(base[idx], length),
            "tuned": role_fields(tuned[idx], length),
        }
        for idx in funnel.kept
    ]
    return rows, summary


def check_shared_vocabulary(pair: str, tokenizers: dict, rows: Iterable[dict]) -> None:
    """Raise PairingError unless both roles' tokenizers read every answer token id alike.

    Crossed scoring feeds one model's answer ids to the other model, which means the same
    text only where both vocabularies map those ids to the same tokens. `tokenizers` maps
    role -> tokenizer; the message names the pair and the first id that differs.
    """
    ids = sorted({i for row in rows for role in ROLES for i in row[role]["completion_token_ids"]})
    base, tuned = (tokenizers[role].convert_ids_to_tokens(ids) for role in ROLES)
    for token_id, base_token, tuned_token in zip(ids, base, tuned, strict=True):
        if base_token != tuned_token:
            raise PairingError(
                f"pair {pair}: crossed scoring needs one vocabulary, but token id {token_id} "
                f"is {base_token!r} for the base tokenizer and {tuned_token!r} for the tuned "
                "one; set eap.texts to [own] for this study"
            )
