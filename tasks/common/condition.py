"""A condition on one document column, ``{column, op, value}``: which documents a filter rule
judges, which ones a rephrase task rewrites (e.g. ``quality_level <= 1``, as Nemotron-CC applies
heuristics to low-quality data only and rephrases each level its own way)."""

from __future__ import annotations

import math
import operator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_OPERATORS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class Condition(BaseModel):
    """Documents whose ``column`` meets ``op value``; a null never does."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(min_length=1, description="an input column (e.g. quality_level from a classify stage)")
    op: Literal["==", "!=", "<", "<=", ">", ">="]
    value: bool | int | float | str

    @field_validator("value")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be finite")
        return value

    def met(self, cell: Any) -> bool:
        """Whether a document's value meets the condition (a value of another type is an error naming the column)."""
        if cell is None:
            return False
        numeric = (int, float)
        if isinstance(self.value, str) != isinstance(cell, str) or (isinstance(self.value, numeric) != isinstance(cell, numeric)):
            raise ValueError(f"where: column {self.column!r} holds {type(cell).__name__} values, compared to {self.value!r}")
        return bool(_OPERATORS[self.op](cell, self.value))

    def mask(self, values: list[Any]) -> list[bool]:
        """``met`` for each of a column's values."""
        return [self.met(value) for value in values]
