"""Answer grading: extraction, math-verify comparison, robustness, and the real benchmark rows."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import threading
import time

import pytest
from sympy import Basic, Interval, MatrixBase, Tuple

from circuitry.data import grading
from circuitry.data.benchmarks import normalise_rows
from circuitry.data.grading import answers_match, extract_answer, grade
from circuitry.io import read_jsonl
from conftest import fixture_path

FIXTURES = {
    "gsm8k": "gsm8k_test.jsonl",
    "math": "math500_test.jsonl",
    "college_math": "college_math_test.jsonl",
}
# College Math rows parse slowly (complex LaTeX: ~20-40 ms a row), so the tests that must
# parse them (not just extract) take every 20th row.
COLLEGE_SAMPLE_STEP = 20


@functools.cache
def rows(fmt: str) -> tuple[dict, ...]:
    """The normalised rows of a real benchmark fixture (skips where the fixtures are absent)."""
    normalised, _ = normalise_rows(read_jsonl(fixture_path(FIXTURES[fmt])), fmt)
    return tuple(normalised)


def college_sample() -> tuple[dict, ...]:
    return rows("college_math")[::COLLEGE_SAMPLE_STEP]


def failures(pairs) -> list:
    """The idx of (row, completion) pairs that do not grade correct."""
    return [row["idx"] for row, completion in pairs if not grade(completion, row["answer"])[1]]


# --- the fixtures' own reference answers grade correct --------------------------------


def test_gsm8k_reference_solutions_grade_correct():
    data = rows("gsm8k")
    assert len(data) == 1319
    assert failures((row, row["solution"]) for row in data) == []
    # the extracted answer is the gold itself: "#### 2,125" gives 2125, as the normaliser does
    assert all(extract_answer(row["solution"]) == row["answer"] for row in data)


def test_math500_reference_solutions_grade_correct():
    data = rows("math")
    assert len(data) == 500
    assert failures((row, row["solution"]) for row in data) == []


def test_college_math_answers_written_by_a_model_grade_correct():
    data = rows("college_math")
    assert len(data) == 2818
    completions = (
        (row, f"Putting it together, so the answer is $\\boxed{{{row['answer']}}}$.")
        for row in data
    )
    # Rows 1130 and 1253 are piecewise functions, `\left\{ ... \right.`: `last_boxed`
    # must not count the escaped `\{` as a group brace.
    assert failures(completions) == []


def test_college_math_raw_answers_stated_without_a_box_grade_correct():
    """The raw `$...$` answer stated as "The answer is $x$": the "answer is" fallback."""
    sample = [row for row in college_sample() if "\n" not in row["answer"]]
    raw = read_jsonl(fixture_path(FIXTURES["college_math"]))
    pairs = [(row, f"So the answer is {raw[row['idx']]['answer']}") for row in sample]
    # Prose answers of several sentences: the fallback keeps the first sentence only
    # ("local min. $(0,0)$" -> "local min").
    assert failures(pairs) == [1440, 2020, 2240, 2340]


# --- gold answers that math-verify can read as mathematics -----------------------------


def _parses_as_math(answer: str) -> bool:
    return any(isinstance(p, (Basic, MatrixBase)) for p in grading._parsed(answer))


@pytest.mark.parametrize("fmt", ["gsm8k", "math"])
def test_every_gold_answer_parses_as_math(fmt):
    assert [row["idx"] for row in rows(fmt) if not _parses_as_math(row["answer"])] == []


# Gold answers that are not one mathematical object, in the sample: prose around formulas
# ("Solution is: $[x=-1, y=-5, z=4]$", "$\min$ at $x=1$", "local min. $(0,0)$"),
# set-builder notation (`\{x \mid x \geq 0$ and $x \neq 1\}`), unions over k
# (`\bigcup_{k=-\infty}^{\infty}`), worked matrix derivations and eigenvector lists,
# and series ending in `\cdots`.
UNPARSED_COLLEGE_SAMPLE = [
    1280, 1440, 1740, 1820, 1980, 2020, 2220, 2240, 2260,
    2280, 2300, 2320, 2340, 2380, 2420, 2440, 2500, 2740,
]  # fmt: skip


def test_college_math_gold_answers_that_do_not_parse_as_math():
    """Such golds can only be matched by the same text (the exact-match shortcut)."""
    unparsed = [row["idx"] for row in college_sample() if not _parses_as_math(row["answer"])]
    assert unparsed == UNPARSED_COLLEGE_SAMPLE


# --- perturbed gold answers grade wrong ------------------------------------------------

_LAST_INTEGER = re.compile(r"(?<![\d.])\d+")


def bump_last_integer(answer: str) -> str | None:
    """The answer with its last integer literal one larger (`\\frac{1}{2}` -> `\\frac{1}{3}`)."""
    matches = list(_LAST_INTEGER.finditer(answer))
    if not matches:
        return None
    m = matches[-1]
    return answer[: m.start()] + str(int(m.group()) + 1) + answer[m.end() :]


def test_gsm8k_perturbed_answers_grade_wrong():
    for row in rows("gsm8k"):
        gold = int(row["answer"])
        assert not answers_match(str(gold + 1), row["answer"]), row["idx"]
        if gold != 0:
            assert not answers_match(str(-gold), row["answer"]), row["idx"]
        assert answers_match(f"{gold:,}", row["answer"]), row["idx"]  # 1,000 is 1000


def test_math500_perturbed_answers_grade_wrong():
    wrongly_right = [
        row["idx"]
        for row in rows("math")
        if (bumped := bump_last_integer(row["answer"])) and answers_match(bumped, row["answer"])
    ]
    # Units are ignored by design: `864 \mbox{ inches}^3` is 864 as much as `...^2` is.
    assert wrongly_right == [257, 467]


_SIMPLE_FRACTION = re.compile(r"\\d?frac\{(\d+)\}\{(\d+)\}")
_PAIR = re.compile(r"\\left\(\s*([^,]+?),\s*([^,]+?)\s*\\right\)|\(([^,()]+),([^,()]+)\)")


def test_math500_reciprocal_fractions_and_swapped_pairs_grade_wrong():
    fractions = pairs = 0
    for row in rows("math"):
        gold = row["answer"]
        if (m := _SIMPLE_FRACTION.fullmatch(gold)) and m.group(1) != m.group(2):
            fractions += 1
            assert not answers_match(f"\\frac{{{m.group(2)}}}{{{m.group(1)}}}", gold), gold
        if (m := _PAIR.fullmatch(gold)) and isinstance(grading._parsed(gold)[0], (Tuple, Interval)):
            first, second = (g for g in m.groups() if g is not None)
            if first.strip() != second.strip():
                pairs += 1
                assert not answers_match(f"({second}, {first})", gold), gold
    assert (fractions, pairs) == (47, 10)


def test_math500_sign_flipped_numbers_grade_wrong():
    numbers = [row for row in rows("math") if re.fullmatch(r"-?\d+(\.\d+)?", row["answer"])]
    for row in numbers:
        gold = row["answer"]
        if float(gold) != 0:
            flipped = gold[1:] if gold.startswith("-") else "-" + gold
            assert not answers_match(flipped, gold), gold
    assert len(numbers) > 300


def test_college_math_perturbed_answers_grade_wrong():
    wrongly_right = [
        row["idx"]
        for row in college_sample()
        if (bumped := bump_last_integer(row["answer"])) and answers_match(bumped, row["answer"])
    ]
    # 840 gives its answer twice, `$n \leqslant-9$ or $n \geqslant 2:(-\infty,-9] \cup[2, \infty)$`,
    # and the bump changes only the interval; the untouched inequality still matches.
    assert wrongly_right == [840]


# --- hand-written equivalences and differences ------------------------------------------

SAME = [
    # fractions and decimals
    (r"\frac{1}{2}", "1/2"),
    (r"\frac{1}{2}", "0.5"),
    ("0.5", r"\frac12"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (".5", "0.5"),
    (r"\frac{2}{4}", r"\frac{1}{2}"),
    ("0.333333", r"\frac{1}{3}"),
    ("3.50", "3.5"),
    ("18.0", "18"),
    # thousands separators
    ("1,000", "1000"),
    ("1000", "1,000"),
    ("1,000,000", "1000000"),
    (r"\$1,000", "1000"),
    ("1{,}000", "1000"),
    ("58,500", "58500"),
    # College Math writes pairs as `110,880`: both readings count
    ("110, 880", "110,880"),
    ("110 and 880", "110,880"),
    # units
    ("18 dollars", "18"),
    (r"\$18", "18"),
    ("$18", "18"),
    (r"18\text{ cm}", "18"),
    (r"18 \text{ cm}^2", "18"),
    ("5 m/s", "5"),
    (r"5\text{ m/s}", "5"),
    ("5 km", "5"),
    (r"30, 40", r"30 \mathrm{mph}, 40 \mathrm{mph}"),
    (r"90^\circ", "90"),
    ("17.1", r"\approx 17.10 \mathrm{ft}"),
    # percentages: math-verify accepts a percent both for the number and for the fraction
    (r"25\%", "25"),
    ("25%", "25"),
    ("25 percent", "25"),
    (r"25\%", "0.25"),
    # sets, tuples, intervals
    ("(1, 2)", "(1,2)"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"),
    (r"\{2, 1\}", r"\{1, 2\}"),
    ("2, 1", "1, 2"),
    ("[1, 2)", "[1, 2)"),
    ("(-10,-9),(45,2)", "(45,2),(-10,-9)"),
    (r"(-\infty, 2) \cup (3, \infty)", r"(-\infty,2)\cup(3,\infty)"),
    # negative numbers
    ("-3", "-3.0"),
    (r"-\frac{1}{2}", r"\frac{-1}{2}"),
    ("- 3", "-3"),
    # College Math LaTeX: expressions, equations, roots, pi, complex numbers
    ("-4n+10", "10-4 n"),
    ("x=2", "2"),
    ("2", "x=2"),
    (r"2\sqrt{2}", r"\sqrt{8}"),
    (r"\sqrt{2}", "1.41421356"),
    (r"\pi", "3.14159265"),
    (r"\frac{-56+48i}{85}", r"\frac{48 i-56}{85}"),
    ("-5i+6", "6 - 5i"),
    ("2x^2-8x-4=0", "x^{2}-4 x-2=0"),
    ("y = 2x + 1", "2x+1=y"),
    ("2>x", "x<2"),
    ("x=1, x=0, x=-1", "x=-1, x=0, x=1"),
    ("-1, 0, 1", "x=-1, x=0, x=1"),
    (r"\frac{3}{2}", r"\log _{4}(8)=\frac{3}{2}"),
    ("e^{x}+C", "e^x + C"),
    # words
    ("Evelyn", r"\text{Evelyn}"),
    (r"\text{evelyn}", r"\text{Evelyn}"),
    ("C", r"\text{(C)}"),
    ("(C)", r"\text{(C)}"),
    ("No.", "No"),
    # numbers in a base
    ("52_8", "52_8"),
    ("52", "52_8"),
]

DIFFERENT = [
    (r"\frac{1}{3}", r"\frac{1}{2}"),
    (r"\frac{2}{1}", r"\frac{1}{2}"),
    ("0.33", r"\frac{1}{3}"),
    ("3.51", "3.5"),
    # "1,000" is one thousand, never the pair (1, 0) nor 1
    ("1", "1,000"),
    ("1, 0", "1,000"),
    ("1,001", "1000"),
    ("19 dollars", "18"),
    ("2 pi", "2"),
    ("2 i", "2"),
    (r"30 \text{ mph}, 41 \text{ mph}", r"30 \mathrm{mph}, 40 \mathrm{mph}"),
    (r"5 \text{ or } 7 \text{ apples}", "5"),
    ("0.25", "25"),
    (r"26\%", "25"),
    ("(2, 1)", "(1, 2)"),
    (r"\left( \frac{\pi}{2}, 3 \right)", r"\left( 3, \frac{\pi}{2} \right)"),
    ("1, 3", "1, 2"),
    ("1", "1, 2"),
    ("1, 2, 3", "1, 2"),
    ("[1, 2]", "[1, 2)"),
    (r"(-\infty, 0]", r"(-\infty, 0)"),
    (r"(-\infty, 3) \cup (2, \infty)", r"(-\infty, 2) \cup (3, \infty)"),
    ("(45,2),(-9,-10)", "(-10,-9),(45,2)"),
    ("-3", "3"),
    ("3", "-3"),
    (r"-\frac{1}{2}", r"\frac{1}{2}"),
    ("10+4n", "10-4 n"),
    ("x=3", "x=2"),
    ("y=2", "x=2"),
    (r"\sqrt{3}", r"\sqrt{2}"),
    ("3.14", r"\pi"),
    (r"2\pi", r"\pi"),
    (r"\frac{56+48i}{85}", r"\frac{48 i-56}{85}"),
    ("6+5i", "6 - 5i"),
    ("x^2-4x+2=0", "x^{2}-4 x-2=0"),
    ("y=2x+2", "y=2x+1"),
    (r"x \leq 2", "x<2"),
    ("x>2", "x<2"),
    ("x=1, x=0", "x=-1, x=0, x=1"),
    (r"\frac{5}{2}", r"\log _{4}(8)=\frac{3}{2}"),
    ("e^{2x}+C", "e^x + C"),
    # math-verify alone calls these equal: sympy solves neither equation, and it reads
    # the empty solution lists as agreeing
    (r"I=e^{-21 t}(2 \cos 40 t-101 \sin 40 t)", r"I=e^{-20 t}(2 \cos 40 t-101 \sin 40 t)"),
    (r"\cos (\pi)=-2, \sin (\pi)=0", r"\cos (\pi)=-1, \sin (\pi)=0"),
    ("Navin", r"\text{Evelyn}"),
    ("D", r"\text{(C)}"),
    ("Yes", "No."),
    # math-verify drops the base subscript
    ("52_9", "52_8"),
    ("53_8", "52_8"),
]


@pytest.mark.parametrize("pred, gold", SAME)
def test_equivalent_answers_match(pred, gold):
    assert answers_match(pred, gold)


@pytest.mark.parametrize("pred, gold", DIFFERENT)
def test_different_answers_do_not_match(pred, gold):
    assert not answers_match(pred, gold)


# --- extraction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        (r"so the total is $\boxed{18}$ dollars.", "18"),
        (r"first \boxed{3}, then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (
            r"\boxed{f(x)=\left\{\begin{array}{l} 1 \\ 2\end{array}\right.}",
            r"f(x)=\left\{\begin{array}{l} 1 \\ 2\end{array}\right.",
        ),
        ("She pays 3 * 6 = <<3*6=18>>18 dollars.\n#### 18", "18"),
        ("#### 1,234\nand some trailing text 7", "1234"),
        (r"the box wins: \boxed{5}" + "\n#### 6", "5"),
        ("The answer is: 18.", "18"),
        ("Thus, the answer is $\\frac{1}{2}$. I hope it is correct.", r"\frac{1}{2}"),
        ("Final Answer: 42", "42"),
        ("I computed 12 and then 7 + 3 = 10.", "10"),
        ("The total is 1,250 apples.", "1250"),
        ("It drops to -4 degrees.", "-4"),
        (r"an empty \boxed{} then 3", "3"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_grade_returns_the_extracted_answer_and_the_verdict():
    assert grade(r"... so $x = \boxed{\frac{1}{2}}$", "0.5") == (r"\frac{1}{2}", True)
    assert grade("The answer is 19", "18") == ("19", False)
    assert grade("I cannot solve this.", "18") == (None, False)


# --- robustness ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("9" * 5000, "5"),
        (r"\boxed{" + "9" * 5000 + "}", "9"),
        (r"\boxed{" + "{" * 3000 + "}", "5"),
        ("}" * 100 + r"\boxed{", "1"),
        (r"\boxed{\frac{1}{2}", r"\frac{1}{2}"),
        ("<script>alert('x')</script>", "x"),
        ("x" * 1_000_000, "7"),
        ("\x00\ue000" + r"\boxed{" + "\ue001}", "1"),
        (r"\boxed{\frac{1}{0}}", "1"),
        (r"\boxed{1e999999}", "1"),
        (r"\boxed{2^{2^{2^{2^{2}}}}}", "2"),
        (r"\boxed{\begin{pmatrix}1\end{pmatrix}}", "x=1"),
        (r"\boxed{y=\left[\begin{array}{l}1\\2\end{array}\right]e^{t}}", "y=e^{2t}"),
        (r"\boxed{x^{x^{x^{x}}}=1}", "x=1"),
        ("The answer is $$$", "1"),
        ("#### ####", "1"),
        (r"\boxed{5}", ""),
        ("", ""),
    ],
)
def test_grade_never_raises_on_garbage(completion, gold):
    pred, correct = grade(completion, gold)
    assert pred is None or isinstance(pred, str)
    assert correct is False


def test_grade_tolerates_values_that_are_not_text():
    assert grade(None, "1") == (None, False)
    assert grade(r"\boxed{5}", None) == ("5", False)


def test_a_comparison_that_runs_out_of_time_counts_as_wrong(monkeypatch):
    monkeypatch.setattr(grading, "TIMEOUT_S", 1)
    start = time.monotonic()
    assert grade(r"\boxed{10^{10^{10}}}", "5") == ("10^{10^{10}}", False)
    assert time.monotonic() - start < 10


def test_grading_works_off_the_main_thread():
    """math-verify's signal timeouts only work in the main thread; grading skips them there."""
    results = []
    worker = threading.Thread(target=lambda: results.append(grade(r"\boxed{0.5}", r"\frac12")))
    worker.start()
    worker.join()
    assert results == [("0.5", True)]


def test_grading_works_in_a_plain_script():
    script = "from circuitry.data.grading import grade; print(grade('#### 1,000', '1000'))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('1000', True)"
