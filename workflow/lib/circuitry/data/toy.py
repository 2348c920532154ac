"""Synthetic arithmetic word problems: the offline stand-ins for GSM8K, MATH and College Math.

Three tasks of increasing difficulty, each a seeded generator of problems with a
worked solution ending in `\\boxed{answer}`:

- `add`: one addition of two numbers (GSM8K stand-in);
- `chain`: a chain of additions and subtractions (MATH stand-in);
- `mixed`: a product followed by additions/subtractions (College Math stand-in).

A problem belongs to the train or the test split by a hash of its arithmetic (task and
operands), so the splits are disjoint even across differently worded questions, and a
split's content does not depend on how many problems the other split asks for.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TASKS = ("add", "chain", "mixed")
SPLITS = ("train", "test")
TEST_FRACTION = 0.2

NAMES = ("Ann", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gia", "Hal")
ITEMS = ("apples", "coins", "books", "stamps", "shells", "pens", "cards", "beads")


@dataclass(frozen=True)
class Problem:
    task: str
    operands: tuple[int, ...]
    question: str
    solution: str
    answer: str

    def as_row(self, idx: int) -> dict:
        """The normalised dataset row (`circuitry.data.benchmarks`' schema)."""
        return {
            "idx": idx,
            "question": self.question,
            "answer": self.answer,
            "solution": self.solution,
            "meta": {"task": self.task, "operands": list(self.operands)},
        }


def _steps_text(steps: list[tuple[int, str, int, int]], answer: int) -> str:
    lines = [f"{a}{op}{b}={c}" for a, op, b, c in steps]
    return "\n".join(lines) + f"\n\\boxed{{{answer}}}"


def _add(rng: random.Random, max_operand: int = 99) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
    question = f"{name} has {a} {item} and gets {b} more. How many {item} now?"
    return Problem("add", (a, b), question, _steps_text([(a, "+", b, a + b)], a + b), str(a + b))


def _chain(rng: random.Random, max_operand: int = 99, n_steps: int = 3) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    total = rng.randint(max(1, max_operand // 4), max_operand)
    start, steps, clauses = total, [], []
    for _ in range(n_steps):
        if total > 1 and rng.random() < 0.5:
            b = rng.randint(1, min(total - 1, max_operand))
            steps.append((total, "-", b, total - b))
            clauses.append(f"gives away {b}")
            total -= b
        else:
            b = rng.randint(1, max_operand)
            steps.append((total, "+", b, total + b))
            clauses.append(f"gets {b} more")
            total += b
    question = f"{name} has {start} {item}, {', '.join(clauses)}. How many {item} now?"
    operands = (start, *(b if op == "+" else -b for _, op, b, _ in steps))
    return Problem("chain", operands, question, _steps_text(steps, total), str(total))


def _mixed(rng: random.Random, max_operand: int = 99, max_factor: int = 12) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    boxes, per_box = rng.randint(2, max_factor), rng.randint(2, max_factor)
    product = boxes * per_box
    steps = [(boxes, "*", per_box, product)]
    if rng.random() < 0.5:
        c = rng.randint(1, max_operand)
        steps.append((product, "+", c, product + c))
        clause, total = f"gets {c} more", product + c
    else:
        c = rng.randint(1, product - 1)
        steps.append((product, "-", c, product - c))
        clause, total = f"gives away {c}", product - c
    question = f"{name} has {boxes} boxes of {per_box} {item} and {clause}. How many {item} now?"
    operands = (boxes, per_box, c if steps[1][1] == "+" else -c)
    return Problem("mixed", operands, question, _steps_text(steps, total), str(total))


_GENERATORS: dict[str, Callable[..., Problem]] = {"add": _add, "chain": _chain, "mixed": _mixed}


def split_of(problem: Problem) -> str:
    """'test' or 'train', fixed by the problem's arithmetic alone."""
    key = f"{problem.task}:{problem.operands}".encode()
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    return "test" if bucket < TEST_FRACTION else "train"


def _draw(task: str, split: str, seed: int, **params) -> Iterator[Problem]:
    """Endless stream of distinct problems of one split, in a seeded order."""
    if task not in _GENERATORS:
        raise ValueError(f"unknown toy task {task!r}; choose one of {', '.join(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    rng = random.Random(f"{seed}:{task}:{split}")
    seen: set[tuple[int, ...]] = set()
    misses = 0
    while misses < 100_000:
        problem = _GENERATORS[task](rng, **params)
        if problem.operands in seen or split_of(problem) != split:
            misses += 1
            continue
        misses = 0
        seen.add(problem.operands)
        yield problem
    raise ValueError(
        f"toy task {task!r} ran out of distinct {split} problems after {len(seen)}; "
        "raise max_operand or ask for fewer problems"
    )


def problems(task: str, split: str, n: int, seed: int = 0, **params) -> list[Problem]:
    """The first `n` distinct problems of `task`'s `split` for `seed`."""
    stream = _draw(task, split, seed, **params)
    return [next(stream) for _ in range(n)]


def dataset_rows(spec: dict) -> list[dict]:
    """Rows of a `source: toy` dataset; its `toy` block names task, split, n, seed, params."""
    settings = dict(spec)
    task, n = settings.pop("task"), settings.pop("n")
    split, seed = settings.pop("split", "test"), settings.pop("seed", 0)
    return [p.as_row(i) for i, p in enumerate(problems(task, split, n, seed, **settings))]
