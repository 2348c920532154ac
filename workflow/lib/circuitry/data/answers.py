"""Final-answer extraction from solutions and completions (LaTeX boxes, GSM8K markers)."""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, `\\boxed 5`) in `text`.

    Braces are matched, so nested groups such as `\\boxed{\\frac{1}{2}}` come back whole;
    escaped braces `\\{` `\\}` are characters, as in TeX, so a piecewise
    `\\left\\{ ... \\right.` inside a box does not keep it open. Returns None when
    there is no complete box.
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    rest = text[start + len(cmd) :]
    if rest.startswith(" "):
        # `\boxed 5` style: the argument runs to the next `$` or whitespace.
        match = re.match(r" +([^\s$]+)", rest)
        return match.group(1) if match else None
    if not rest.startswith("{"):
        return None
    depth, i = 0, 0
    while i < len(rest):
        ch = rest[i]
        if ch == "\\":
            i += 1  # the escaped character is not a group brace
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
        i += 1
    return None


def gsm8k_final_answer(solution: str) -> str | None:
    """The number after GSM8K's `####` marker, without thousands separators."""
    if "####" not in solution:
        return None
    answer = solution.rsplit("####", 1)[1].strip()
    return answer.replace(",", "") or None


def strip_math_delimiters(answer: str) -> str:
    """`$x+1$` -> `x+1` when the whole answer is one inline math span; else unchanged."""
    text = answer.strip()
    if (
        len(text) >= 2
        and text[0] == "$"
        and text[-1] == "$"
        and not text.startswith("$$")
        and "$" not in text[1:-1].replace("\\$", "")
    ):
        return text[1:-1].strip()
    return text


_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# A number not glued to a word or to a preceding number: `x2` and the `3` of `2.3` do not count,
# and a minus sign counts only where it cannot be a subtraction (`5-3` ends in 3, not -3).
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}.])-)?(?<![\w.])(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
)
_MATH_SPAN = re.compile(r"^(?:\$(.+)\$|\\\((.+)\\\)|\\\[(.+)\\\])$", flags=re.S)
_STATED = re.compile(r"answer(?:\s+is\s*:?|\s*:)", flags=re.I)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


def drop_thousands_separators(number: str) -> str:
    """`1,000` -> `1000` when the whole string is one number with thousands groups."""
    text = number.strip()
    return text.replace(",", "") if _THOUSANDS_NUMBER.fullmatch(text) else text


def _first_line_after(text: str, start: int) -> str:
    """The rest of the sentence and line from `start`, without math delimiters around it."""
    line = text[start:].strip().split("\n", 1)[0]
    line = _SENTENCE_END.split(line, 1)[0].strip()
    span = _MATH_SPAN.match(line)
    if span:
        line = next(group for group in span.groups() if group is not None).strip()
    return line


def marked_answer(text: str) -> str | None:
    """What follows the last `####` on its line (GSM8K style), thousands separators dropped."""
    marker = text.rfind("####")
    if marker < 0:
        return None
    return drop_thousands_separators(_first_line_after(text, marker + 4)) or None


def stated_answer(text: str) -> str | None:
    """The sentence after the last "answer is" / "answer:" ("The answer is: 18." -> 18)."""
    matches = list(_STATED.finditer(text))
    if not matches:
        return None
    return drop_thousands_separators(_first_line_after(text, matches[-1].end())) or None


def last_number(text: str) -> str | None:
    """The last number in `text` (`1,000` counts as 1000), or None."""
    numbers = _NUMBER.findall(text)
    return drop_thousands_separators(numbers[-1]) if numbers else None
