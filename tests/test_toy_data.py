"""The synthetic toy benchmarks: seeded, disjoint splits, correct worked solutions."""

from __future__ import annotations

import re

import pytest

from circuitry.data import toy
from circuitry.data.answers import last_boxed

SPECS = {
    "add": {"max_operand": 999},
    "chain": {"max_operand": 99},
    "mixed": {"max_operand": 99},
}


def check_solution(problem: toy.Problem) -> None:
    """Every line `a op b = c` is right, each step starts from the previous result."""
    *steps, box = problem.solution.split("\n")
    previous = None
    for step in steps:
        a, op, b, c = re.fullmatch(r"(\d+)([-+*])(\d+)=(\d+)", step).groups()
        a, b, c = int(a), int(b), int(c)
        assert c == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert previous is None or a == previous
        previous = c
    assert last_boxed(box) == problem.answer == str(previous)
    for number in re.findall(r"\d+", problem.question):
        assert int(number) >= 0


@pytest.mark.parametrize("task", toy.TASKS)
def test_problems_are_seeded_and_correct(task):
    first = toy.problems(task, "test", 500, seed=1, **SPECS[task])
    again = toy.problems(task, "test", 500, seed=1, **SPECS[task])
    other = toy.problems(task, "test", 500, seed=2, **SPECS[task])
    assert first == again
    assert first != other
    assert len({p.question for p in first}) == 500
    for problem in first:
        check_solution(problem)


@pytest.mark.parametrize("task", toy.TASKS)
def test_train_and_test_are_disjoint_in_their_arithmetic(task):
    test = toy.problems(task, "test", 500, seed=1, **SPECS[task])
    train = toy.problems(task, "train", 3000, seed=1, **SPECS[task])
    assert not {p.operands for p in test} & {p.operands for p in train}
    assert not {p.question for p in test} & {p.question for p in train}
    assert {toy.split_of(p) for p in test} == {"test"}


def test_a_split_does_not_depend_on_its_size():
    small = toy.problems("chain", "test", 50, seed=1, max_operand=99)
    large = toy.problems("chain", "test", 500, seed=1, max_operand=99)
    assert large[:50] == small


def test_difficulty_grows_with_the_number_of_steps():
    steps = {
        task: toy.problems(task, "test", 1, seed=0, **SPECS[task])[0].solution.count("=")
        for task in toy.TASKS
    }
    assert steps == {"add": 1, "chain": 3, "mixed": 2}


def test_dataset_rows_follow_the_normalised_schema():
    rows = toy.dataset_rows({"task": "mixed", "n": 20, "seed": 3, "max_operand": 99})
    assert [r["idx"] for r in rows] == list(range(20))
    train = toy.dataset_rows({"task": "mixed", "split": "train", "n": 20, "seed": 3})
    assert not {r["question"] for r in rows} & {r["question"] for r in train}
    assert set(rows[0]) == {"idx", "question", "answer", "solution", "meta"}
    assert rows[0]["meta"]["task"] == "mixed"


def test_an_exhausted_split_fails_clearly():
    with pytest.raises(ValueError, match="ran out of distinct test problems"):
        toy.problems("add", "test", 50, seed=0, max_operand=5)


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="unknown toy task 'divide'"):
        toy.problems("divide", "test", 1)
