"""Configuration of the format stage: which formatters rewrite the text, in which order.

Each entry of ``formatters`` is validated by its formatter's options model, found by ``name`` in
the formatter registry (``formatters.py``); an entry naming ``module`` (a formatter fineflow does
not ship) imports that module first. Every option enters the format step's fingerprint.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, PlainValidator, SerializeAsAny, field_validator

from fineflow.stage_config import StageConfig
from fineflow.tasks.format import formatters
from fineflow.tasks.format.formatter import FormatterOptions


def _formatter_options(value: Any) -> FormatterOptions:
    if isinstance(value, FormatterOptions):
        return value
    if isinstance(value, str):  # `- pii`: a formatter with its defaults
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError("a formatter is a name or a mapping with a `name`")
    try:
        formatter = formatters.get(value["name"], value.get("module"))
    except formatters.FormatterError as error:
        raise ValueError(str(error)) from None
    return formatter.options.model_validate(value)


_BUILTIN_OPTIONS = tuple(formatter.options for formatter in formatters.registered().values())
FormatterEntry = Annotated[
    SerializeAsAny[FormatterOptions],
    PlainValidator(_formatter_options, json_schema_input_type=Union[_BUILTIN_OPTIONS]),  # noqa: UP007 (built at run time)
]


class FormatStage(StageConfig):
    stage: Literal["format"]
    formatters: list[FormatterEntry] = Field(min_length=1, description="applied in this order, each to the text the one before wrote")

    @field_validator("formatters")
    @classmethod
    def _unique(cls, entries: list) -> list:
        names = [entry.name for entry in entries]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"formatter(s) listed twice: {', '.join(repeated)}")
        return entries
