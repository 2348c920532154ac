"""The blocks a report section holds, as the template renders them.

Every block has a `kind` the template dispatches on; text is escaped when rendered
unless a builder made it `Markup`. Figures are embedded as base64 `data:` URIs, so the
report is one self-contained file.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field, replace
from typing import ClassVar

from markupsafe import Markup

from circuitry.analysis.results import Example, require

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Cell:
    """A table cell: text (escaped), optional CSS class and tooltip; `parts` for mixed colours."""

    text: str = ""
    css: str = ""
    title: str = ""
    parts: tuple[tuple[str, str], ...] = ()  # (text, css) spans shown instead of `text`


@dataclass
class Row:
    cells: list[Cell]
    group: str | None = None  # a group header row is shown when this changes


@dataclass
class Table:
    kind: ClassVar[str] = "table"
    columns: list[str]
    rows: list[Row]
    caption: str = ""
    notes: list[str | Markup] = field(default_factory=list)
    id: str = ""
    css: str = ""


@dataclass
class Figure:
    kind: ClassVar[str] = "figure"
    src: str  # data: URI
    caption: str
    alt: str


@dataclass
class Text:
    kind: ClassVar[str] = "text"
    paragraphs: list[str | Markup]


@dataclass
class Code:
    kind: ClassVar[str] = "code"
    text: str
    caption: str = ""


@dataclass
class Details:
    """A collapsible group of blocks (closed unless `open`); `css` styles its summary."""

    kind: ClassVar[str] = "details"
    summary: str
    blocks: list
    open: bool = False
    css: str = ""


@dataclass
class Examples:
    kind: ClassVar[str] = "examples"
    examples: list[Example]


@dataclass
class Section:
    """A titled part of the report, listed in the contents."""

    id: str
    title: str
    blocks: list = field(default_factory=list)


def data_uri(path: str | os.PathLike) -> str:
    """A PNG file as a base64 `data:` URI; fails naming the file if it is missing or not a PNG."""
    data = require(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(path: str | os.PathLike, caption: str) -> Figure:
    """A PNG embedded in the report, its caption doubling as the alt text."""
    return Figure(src=data_uri(path), caption=caption, alt=caption)


def fold(block: Figure | Table, *, open: bool = False) -> Details:
    """`block` folded under its caption, which it then does not repeat."""
    return Details(block.caption, [replace(block, caption="")], open=open, css="caption")
