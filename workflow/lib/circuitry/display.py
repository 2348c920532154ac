"""How the report and the figures write numbers, changes and names: the formatting leaf.

It imports nothing from circuitry, so the figures use it without depending on the
report that shows them.
"""

from __future__ import annotations

import math

import numpy as np

MISSING = "–"
SIGNIFICANCE_MARKS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def format_number(value, digits: int = 3) -> str:
    """`digits` significant digits, thousands separated; very small values in e-notation."""
    if is_missing(value):
        return MISSING
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return f"{int(value):,}"
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    rounded = float(f"{value:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:,.{decimals}f}"


def format_signed(value, digits: int = 3) -> str:
    """A signed number with `digits` significant digits: `+0.0123`."""
    if is_missing(value):
        return MISSING
    return f"{'+' if value > 0 else ''}{format_number(value, digits)}"


def format_percent(value, digits: int = 3) -> str:
    """A signed percentage with `digits` significant digits: `+12.3%`."""
    return MISSING if is_missing(value) else f"{format_signed(value, digits)}%"


def format_percent_plain(value) -> str:
    """An unsigned percentage: `87.5%`."""
    return MISSING if is_missing(value) else f"{format_number(value)}%"


def format_alpha(alpha) -> str:
    return f"α = {alpha}"


def significance_mark(q) -> str:
    """`***` q < 0.001, `**` q < 0.01, `*` q < 0.05, else nothing (also for a missing q)."""
    if is_missing(q):
        return ""
    return next((mark for level, mark in SIGNIFICANCE_MARKS if q < level), "")


def arrow(change) -> str:
    if is_missing(change):
        return MISSING
    return "↑" if change > 0 else "↓" if change < 0 else "→"


def slug(text: str) -> str:
    """`text` as an HTML id: lower case, every other character a dash."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
