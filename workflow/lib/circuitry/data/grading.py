"""Grading model answers: extract the final answer of a completion, compare it with `math-verify`.

`grade(completion, gold)` is the one entry point the workflow uses (generation rows, RL
rewards). It never raises: an answer that cannot be found, parsed or compared within the
time limit is graded wrong.

How answers reach math-verify. The gold answer and the extracted prediction are bare
answers, not texts to search, so each is handed to `parse` as `\\boxed{answer}` with only
the box pattern switched on (`LatexExtractionConfig(boxed_match_priority=0,
try_extract_without_anchor=False)`). The box is matched with balanced braces, so the whole
answer is read as one expression, `$`, `\\$` and newlines inside it are harmless, and an
answer that does not parse is never reduced to a fragment of itself (the default configs
grade `5 apples and 6 oranges` as 6). `ExprExtractionConfig` is left out for the same
reason; the plain forms it adds (`1/2`, `0.5`, `1,000`) parse as LaTeX too. `verify` gets
the gold first: it is not symmetric.

Around math-verify: identical answers match without parsing; both answers are first put
in the form it reads best (`canonical_answer`); a lone `110,880` is read both as a number
and as a pair (`readings`); equations are compared by this module, because math-verify
calls two equations equal whenever sympy can solve neither; and numbers in different
bases (`52_8`, `52_9`) never match, because math-verify drops the base.

Timeouts. math-verify bounds `parse` and `verify` with `signal.alarm`, which only works in
the main thread (elsewhere it raises) and cancels any alarm the caller had set. Off the
main thread this module runs math-verify without a time limit, so a pathological answer
(`10^{10^{10}}`) can run for a long time there: grade from the main thread, as Snakemake
scripts and plain scripts do. A comparison that times out counts as wrong, the only way
the result can depend on the machine's speed.
"""

from __future__ import annotations

import functools
import logging
import re
import threading

from math_verify import LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from math_verify.utils import timeout
from sympy import And, Basic, Eq, FiniteSet, Ne, Tuple, simplify
from sympy.core.relational import Relational

from circuitry.data.answers import last_boxed, last_number, marked_answer, stated_answer

log = logging.getLogger(__name__)

TIMEOUT_S = 5
_BOXED_ONLY = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]

# Words that are mathematics, not units or prose: never stripped, never read as text.
_MATH_WORDS = frozenset(
    "pi e i sqrt log ln sin cos tan sec csc cot exp inf infty infinity and or".split()
    + "percent percentage pct".split()
)
_SHORT_UNITS = frozenset("cm mm km kg mg ml ft yd mi lb oz hr ms".split())
_NUMBER_WITH_UNIT = re.compile(
    r"(?P<number>(?:\\?\$)?\s*-?(?:\d[\d,]*(?:\.\d+)?|\.\d+))"
    r"\s+(?P<unit>[A-Za-z]+(?:\^\{?\d\}?)?(?:[\s/\-]+[A-Za-z]+(?:\^\{?\d\}?)?)*)\.?"
)
_TEXT_GROUP = r"\\(?:text|textrm|mathrm|mbox)\s*\{([^{}]*)\}"
_TEXT_GROUP_CHAIN = _TEXT_GROUP.replace("([^{}]*)", "[^{}]*")
# Text groups right after a quantity, chained by `-`, `/` or `\cdot`, with an optional power:
# `5 \text{ m}`, `4 \mathrm{~N}-\mathrm{m}`, `864 \mbox{ inches}^2`.
_UNIT_CHAIN = _TEXT_GROUP_CHAIN + r"(?:\s*(?:[-/]|\\cdot)\s*" + _TEXT_GROUP_CHAIN + r")*"
_TEXT_UNITS = re.compile(r"(?<=[\d})])\s*" + _UNIT_CHAIN + r"(?:\^\{?\d\}?)?")
_UNIT_TEXT = re.compile(r"[A-Za-z][A-Za-z\s./\-]*")
_MATH_DOLLAR = re.compile(r"(?<!\\)\$")
_APPROX = re.compile(r"^(?:\\approx|≈)\s*")
_DIGIT_TIMES_I = re.compile(r"(?<=\d)i\b")
_BASE_SUBSCRIPT = re.compile(r"(?<![\dA-Za-z\\])\d+_\{?(\d+)\}?")
_THOUSANDS_GROUPED = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_INEQUALITY = re.compile(r"<|>|\\[lg]eq|\\neq")
_INTERVALS = re.compile(r"[\[(].*[\])]")
_WORDS = re.compile(r"[A-Za-z]+(?:[\s\-]+[A-Za-z]+)*\.?")


def extract_answer(completion: str) -> str | None:
    """The final answer of a completion, or None where it states none.

    In order: the last `\\boxed{}`; GSM8K's `#### N`; the last "The answer is ..." /
    "Answer: ..."; the last number in the text.
    """
    for extract in (last_boxed, marked_answer, stated_answer, last_number):
        answer = extract(completion)
        if answer is not None and answer.strip():
            return answer.strip()
    return None


def _is_unit(word: str) -> bool:
    """A word long enough, or known enough, to be a unit rather than a variable."""
    word = word.lower()
    return word not in _MATH_WORDS and (len(word) >= 3 or word in _SHORT_UNITS)


def _drop_text_units(match: re.Match) -> str:
    """Nothing for a chain of unit text groups; the match itself for `\\text{ or }` & co."""
    contents = re.findall(_TEXT_GROUP, match.group())
    words = [w.lower() for c in contents for w in re.findall(r"[A-Za-z]+", c)]
    is_unit = all(_UNIT_TEXT.fullmatch(c.replace("~", " ").strip()) for c in contents)
    return "" if is_unit and not {"and", "or"} & set(words) else match.group()


def _without_text_units(answer: str) -> str:
    """`30 \\text{mph}, 40 \\text{mph}` -> `30, 40`: units in text groups after a quantity.

    math-verify strips units itself, but its pattern runs from the first `\\text{` to a
    `\\text{...}` at the very end, so that answer would be read as just `30`.
    """
    return _TEXT_UNITS.sub(_drop_text_units, answer)


def _without_plain_unit(answer: str) -> str:
    """`18 dollars` -> `18`, `5 m/s` -> `5`: a number followed by plain-text unit words.

    math-verify drops units written as `\\text{...}`, but reads bare words as products of
    variables (`18*a*d*l*l*o*r*s`). Math words (`2 pi`), single letters (`2 i`, `3 x`) and
    percent words (which math-verify understands) are kept.
    """
    match = _NUMBER_WITH_UNIT.fullmatch(answer)
    if not match:
        return answer
    unit = match.group("unit")
    words = re.findall(r"[A-Za-z]+", unit)
    if any(w.lower() in _MATH_WORDS for w in words):
        return answer
    if "/" in unit or any(_is_unit(w) for w in words):
        return match.group("number").strip()
    return answer


def _as_text(answer: str) -> str:
    """`Evelyn` -> `\\text{Evelyn}`: a bare word answer is one name, not a product of letters.

    math-verify compares a `\\text{}` name with a product of letters only when the letters
    happen to be in sorted order, so `Evelyn` would never match `\\text{Evelyn}`.
    """
    if not _WORDS.fullmatch(answer):
        return answer
    words = re.findall(r"[A-Za-z]+", answer)
    if any(w.lower() in _MATH_WORDS for w in words) or all(len(w) == 1 for w in words):
        return answer
    return "\\text{" + answer.rstrip(".") + "}"


def canonical_answer(answer: str) -> str:
    """The answer in the form math-verify reads best.

    Drops math-mode `$` (math-verify drops them too, but `$\\approx 6.76$ miles/s` then
    shows its unit), a final full stop and a leading `\\approx` (math-verify parses
    neither `B = [matrix].` nor `\\approx 17.10`), and units; spaces `48i` to `48 i` (only
    a free-standing `i` is the imaginary unit to math-verify); makes bare words text.
    """
    answer = _APPROX.sub("", _MATH_DOLLAR.sub("", answer).strip()).removesuffix(".")
    answer = _DIGIT_TIMES_I.sub(" i", answer)
    return _as_text(_without_plain_unit(_without_text_units(answer).strip()))


def readings(answer: str) -> list[str]:
    """The ways an answer can be meant.

    latex2sympy reads a lone thousands-grouped number as one number, but College Math
    writes pairs of answers that way ("the cow cost 880, the calf 110": `110,880`), so
    both readings count, unless a group starts with 0: `1,000` is only ever 1000. And
    College Math gives some solution sets twice, `-1<x \\leqslant 1:(-1,1]`: either form.
    """
    if _THOUSANDS_GROUPED.fullmatch(answer) and ",0" not in answer:
        return [answer, answer.replace(",", ", ")]
    inequality, colon, interval = (part.strip() for part in answer.rpartition(":"))
    if colon and _INEQUALITY.search(inequality) and _INTERVALS.fullmatch(interval):
        return [inequality, interval]
    return [answer]


def _timeout_s() -> int | None:
    """math-verify's time limit: signals only work in the main thread."""
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parsed_one(answer: str) -> tuple:
    """math-verify's reading of one bare answer (sympy objects, then the normalised string)."""
    try:
        return tuple(parse("\\boxed{" + answer + "}", _BOXED_ONLY, parsing_timeout=_timeout_s()))
    except (Exception, TimeoutException):
        log.debug("could not parse %.200r", answer, exc_info=True)
        return ()


def _parsed(answer: str) -> list:
    """math-verify's readings of an answer, all of them in one list."""
    return [p for reading in readings(canonical_answer(answer)) for p in _parsed_one(reading)]


def _stated_value(expr):
    """`\\log_4 8 = 3/2` -> 3/2: a worked equation without variables states its last side."""
    if isinstance(expr, Eq) and not expr.free_symbols:
        return expr.rhs
    if isinstance(expr, And) and not expr.free_symbols:
        last = getattr(expr, "_unsorted_args", expr.args)[-1]
        if isinstance(last, Eq):
            return last.rhs
    return expr


def _relations(expr) -> list[Relational] | None:
    """The relations an answer consists of (one, a chain, a set of them), or None."""
    if isinstance(expr, Relational):
        return [expr]
    if isinstance(expr, (And, FiniteSet, Tuple)) and expr.args:
        if all(isinstance(arg, Relational) for arg in expr.args):
            return list(expr.args)
    return None


def _scale(gold: Relational, pred: Relational):
    """(gold.lhs - gold.rhs) / (pred.lhs - pred.rhs), simplified."""
    return simplify((gold.lhs - gold.rhs) / (pred.lhs - pred.rhs))


def _same_relation(gold: Relational, pred: Relational) -> bool:
    """Whether two relations say the same: same sides, or one a constant multiple of the other.

    math-verify's own test falls back to comparing `sympy.solve` results and calls two
    equations equal when sympy solves neither (`I = e^{-20t}` and `I = e^{-21t}`, or
    `\\cos\\pi = -1` and `\\cos\\pi = -2`); this test never does.
    """
    limit = _timeout_s()
    if type(gold) is type(pred) and gold.lhs == pred.lhs:
        if verify(gold.rhs, pred.rhs, timeout_seconds=limit):
            return True
    if type(gold) is type(pred) and verify(
        gold.lhs - gold.rhs, pred.lhs - pred.rhs, timeout_seconds=limit
    ):
        return True
    try:
        ratio = timeout(limit)(_scale)(gold, pred)
        if not ratio.is_number or ratio.is_zero or not ratio.is_finite:
            return False
        if isinstance(gold, (Eq, Ne)):
            return type(gold) is type(pred)
        return (type(gold) is type(pred) and bool(ratio > 0)) or (
            type(gold.reversed) is type(pred) and bool(ratio < 0)
        )
    except (Exception, TimeoutException):
        return False


def _same_relations(golds: list[Relational], preds: list[Relational]) -> bool:
    """Each gold relation is said by its own predicted relation, and nothing else is said."""
    unmatched = list(preds)
    for gold in golds:
        match = next((p for p in unmatched if _same_relation(gold, p)), None)
        if match is None:
            return False
        unmatched.remove(match)
    return not unmatched


def _same_answer(gold, pred) -> bool:
    """One math-verify reading of the gold against one of the prediction."""
    if isinstance(gold, Basic) and isinstance(pred, Basic):
        gold, pred = _stated_value(gold), _stated_value(pred)
        gold_relations, pred_relations = _relations(gold), _relations(pred)
        if gold_relations is not None and pred_relations is not None:
            return _same_relations(gold_relations, pred_relations)
    return verify(gold, pred, timeout_seconds=_timeout_s())


def _bases(answer: str) -> set[str]:
    """The bases of numbers written with one, `52_8` -> {"8"}."""
    return set(_BASE_SUBSCRIPT.findall(answer))


def answers_match(pred: str, gold: str) -> bool:
    """Whether the extracted answer `pred` is mathematically the gold answer."""
    if pred.strip() == gold.strip():
        return True
    if _bases(pred) and _bases(gold) and _bases(pred) != _bases(gold):
        return False  # math-verify drops the subscript of `52_8`
    targets = _parsed(pred)
    if not targets:
        return False
    try:
        return any(_same_answer(g, t) for g in _parsed(gold) for t in targets)
    except (Exception, TimeoutException):
        log.debug("could not compare %.200r with %.200r", pred, gold, exc_info=True)
        return False


def grade(completion: str, gold: str) -> tuple[str | None, bool]:
    """(the completion's final answer or None, whether it is correct); never raises."""
    pred = extract_answer(completion) if isinstance(completion, str) else None
    if pred is None or not isinstance(gold, str) or not gold.strip():
        return pred, False
    return pred, answers_match(pred, gold)


def grade_rows(rows: list[dict], problems: list[dict]) -> float:
    """Set each generation row's `pred` and `correct` against its problem's gold answer
    (matched by `idx`); the accuracy over the rows."""
    gold = {problem["idx"]: problem["answer"] for problem in problems}
    for row in rows:
        row["pred"], row["correct"] = grade(row["completion"], gold[row["idx"]])
    return sum(row["correct"] for row in rows) / len(rows)
