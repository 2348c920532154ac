"""Final-answer extraction from solutions and completions (LaTeX boxes, GSM8K markers)."""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, `\\boxed 5`) in `text`.

    Braces are matched, so nested groups such as `\\boxed{\\frac{1}{2}}` come back whole.
    Returns None when there is no complete box.
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
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
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
