"""What a text formatter is: one module declaring ``FORMATTER = Formatter(...)``.

The format step builds each configured formatter once per shard (``load`` of its options) and
calls ``apply`` on every document's text in the configured order: each sees the text the one
before it wrote. A formatter returns the new text and its per-document counts (the columns it
declares in ``counts``); the step records which formatters changed a document (``formatted_by``)
and how many characters each changed. ``formatters.py`` lists the built-in modules; nothing else
knows a formatter by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FormatterOptions(BaseModel):
    """A formatter's options in a ``formatters`` entry (every option enters the step's fingerprint)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    module: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,  # built-in formatters' entries dump as they were written
        description="the module defining this formatter's FORMATTER, for a formatter fineflow does not ship",
    )


@dataclass(frozen=True)
class Applied:
    """One formatter's result on one document."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)  # its count columns (those it declares)
    # characters of the input it replaced or removed; None: the step measures the changed span
    # (first to last changed character), for a formatter that cannot say (ftfy)
    chars: int | None = None
    # the document goes to rejects with reason ``format:<reject>`` (e.g. too much PII to mask)
    reject: str | None = None


@dataclass(frozen=True)
class Formatter:
    name: str  # the entry's ``name``, the value in ``formatted_by``
    options: type[FormatterOptions]
    # options (as JSON) -> what ``apply`` reads (compiled patterns, a config object), once per shard
    load: Callable[[dict], Any]
    # (what ``load`` made, text) -> Applied; a fresh state per document (no counter runs across documents)
    apply: Callable[[Any, str], Applied]
    # its per-document count columns (int32), in order; every document gets them (0 where nothing matched)
    counts: Sequence[str] = ()
    # drop reasons it can give (without the ``format:`` prefix), for the docs and the report
    rejects: Sequence[str] = ()
    # the libraries whose versions change its output (they enter the step's fingerprint)
    libraries: Sequence[str] = ()
    module: str = field(default="", compare=False)  # where FORMATTER was found (set on registration)
