"""Final-answer extraction."""

import pytest

from circuitry.answers import gsm8k_final_answer, last_boxed, strip_math_delimiters


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
