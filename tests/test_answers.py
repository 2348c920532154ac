"""Final-answer extraction."""

import pytest

from circuitry.data.answers import (
    drop_thousands_separators,
    gsm8k_final_answer,
    last_boxed,
    last_number,
    marked_answer,
    stated_answer,
    strip_math_delimiters,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{5}.", "5"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"$\boxed{\left( 3, \frac{\pi}{2} \right)}$.", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\fbox{x^{2}}", "x^{2}"),
        (r"answer: $\boxed 7$", "7"),
        (r"\boxed{unclosed {", None),
        ("no box here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_gsm8k_final_answer_drops_thousands_separators():
    assert gsm8k_final_answer("... so 2,125 in all\n#### 2,125") == "2125"
    assert gsm8k_final_answer("#### -3") == "-3"
    assert gsm8k_final_answer("no marker 12") is None


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("$10-4 n$", "10-4 n"),
        (r"$\$ 3040$", r"\$ 3040"),
        ("$x=-1, x=0$ or $x=1$", "$x=-1, x=0$ or $x=1$"),
        ("$$\nx\n$$", "$$\nx\n$$"),
        ("all real numbers", "all real numbers"),
    ],
)
def test_strip_math_delimiters(answer, expected):
    assert strip_math_delimiters(answer) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (
            r"\boxed{f=\left\{\begin{array}{l} 1 \\ 2\end{array}\right.} so",
            r"f=\left\{\begin{array}{l} 1 \\ 2\end{array}\right.",
        ),
        (r"\boxed{a \\{b}}", r"a \\{b}"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{unclosed {", None),
        ("no box", None),
    ],
)
def test_last_boxed_reads_escaped_braces_as_characters(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so 2 + 3 = 5\n#### 5", "5"),
        ("#### 1,234\nthen more text 9", "1234"),
        ("#### $18.", "$18"),
        ("#### -3", "-3"),
        ("####", None),
        ("no marker 12", None),
    ],
)
def test_marked_answer(text, expected):
    assert marked_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is: 18.", "18"),
        ("The answer is 3.5. I hope it is correct.", "3.5"),
        ("The final answer is $\\frac{1}{2}$.", r"\frac{1}{2}"),
        (r"Answer: \(x = 2\)", "x = 2"),
        ("the answer is 1,000 apples", "1,000 apples"),
        ("The answer is 1,000", "1000"),
        ("The answer is:\n\n5", "5"),
        ("check the answer carefully: 7", None),
        ("nothing stated", None),
    ],
)
def test_stated_answer(text, expected):
    assert stated_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 apples and 1,250 pears", "1250"),
        ("it is 5-3", "3"),
        ("it drops to -4.", "-4"),
        ("point (2,-3)", "-3"),
        ("so -.5", "-.5"),
        ("x2 and y3 only", None),
        ("no digits", None),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize(
    "number, expected",
    [("1,000", "1000"), ("-12,345.5", "-12345.5"), ("1,5", "1,5"), ("(1,000)", "(1,000)")],
)
def test_drop_thousands_separators(number, expected):
    assert drop_thousands_separators(number) == expected
