"""Configuration of the format stage: which formatters rewrite the text, in which order.

Each entry of ``formatters`` is validated by its formatter's options model, found by ``name`` in
the formatter registry (``formatters.py``); an entry naming ``module`` (a formatter fineflow does
not ship) imports that module first. Every option enters the format step's fingerprint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fineflow.stage_config import StageConfig
from fineflow.tasks.format import formatters
from fineflow.tasks.format.formatter import FormatterOptions

FormatterEntry = formatters.options_entry(FormatterOptions, shorthand=True)  # `- pii`: a formatter with its defaults


class FormatStage(StageConfig):
    stage: Literal["format"]
    formatters: list[FormatterEntry] = Field(min_length=1, description="applied in this order, each to the text the one before wrote")

    @field_validator("formatters")
    @classmethod
    def _unique(cls, entries: list) -> list:
        return formatters.check_unique(entries)
