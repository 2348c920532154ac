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
7. sample `num_samples` rows with `seed` (all of them if fewer are left).

EAP later reads the first `cut_len = max(1, floor(alpha * T))` tokens of each answer
(`cut_length`), so T fixes every alpha's window.

Bounds are inclusive and compared exactly: lengths are integers, `T` is a fraction, and
each coefficient is taken as the decimal written in the config (0.5 is 1/2, 0.3 is
3/10), so a row exactly on a bound is kept whatever float rounding would say.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

ROLES = ("base", "tuned")
REQUIRED_KEYS = ("idx", "prompt_token_ids", "completion_token_ids", "correct")


class PairingError(RuntimeError):
    """No sample survives filtering, or the inputs are malformed."""


@dataclass(frozen=True)
class FilterSettings:
    """The config's `filter` section."""

    small_coeff: float = 0.5
    big_coeff: float = 1.5
    balance_coeff: float = 0.5
    num_samples: int = 100
    seed: int = 42

    @classmethod
    def from_config(cls, section: dict) -> FilterSettings:
        return cls(**section)


def as_written(coeff: float) -> Fraction:
    """The decimal a config value was written as, exactly (0.3 -> 3/10, not 0.2999...)."""
    return Fraction(str(coeff))


def cut_length(alpha: float, reference_length: Fraction) -> int:
    """The answer window of the study: `max(1, floor(alpha * T))`, computed exactly.

    `alpha` is taken as the decimal written in the config and `T` as the exact fraction
    the pairing stage recorded, so `floor` never lands one token off through rounding.
    """
    return max(1, math.floor(as_written(alpha) * reference_length))


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


def mean_answer_length(rows: Sequence[dict]) -> Fraction:
    return Fraction(sum(answer_length(row) for row in rows), len(rows))


def pair_mean_length(base: dict, tuned: dict) -> Fraction:
    return Fraction(answer_length(base) + answer_length(tuned), 2)


def in_length_range(base: dict, tuned: dict, low: Fraction, high: Fraction) -> bool:
    return low <= pair_mean_length(base, tuned) <= high


def is_balanced(base: dict, tuned: dict, balance_coeff: Fraction) -> bool:
    difference = abs(answer_length(base) - answer_length(tuned))
    return difference <= balance_coeff * pair_mean_length(base, tuned)


def role_fields(row: dict) -> dict:
    return {
        "prompt_token_ids": row["prompt_token_ids"],
        "completion_token_ids": row["completion_token_ids"],
        "prompt_len": prompt_length(row),
        "answer_len": answer_length(row),
    }


def paired_row(base: dict, tuned: dict) -> dict:
    return {"idx": base["idx"], "base": role_fields(base), "tuned": role_fields(tuned)}


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
    means = {role: mean_answer_length(funnel.rows(role)) for role in ROLES}
    reference = min(means.values())
    low = as_written(settings.small_coeff) * reference
    high = as_written(settings.big_coeff) * reference
    balance = as_written(settings.balance_coeff)
    funnel.apply("prompt length mismatch", same_prompt_length)
    funnel.apply("out of length range", lambda b, t: in_length_range(b, t, low, high))
    funnel.apply("imbalanced", lambda b, t: is_balanced(b, t, balance))
    n_sample = min(settings.num_samples, len(funnel.kept))
    funnel.record("not sampled", sorted(random.Random(settings.seed).sample(funnel.kept, n_sample)))
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
            role: min(answer_length(row) for row in funnel.rows(role)) for role in ROLES
        },
        "settings": asdict(settings),
        "seed": settings.seed,
        "n_selected": n_sample,
        "too_few": n_sample < settings.num_samples,
    }
    return [paired_row(base[idx], tuned[idx]) for idx in funnel.kept], summary


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
