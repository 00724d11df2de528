"""What every stage's config model shares: the fields of a pipeline entry and path resolution.

Stage configs (``tasks/<kind>/config.py``) subclass :class:`StageConfig`; this module imports
nothing from ``tasks/``, so the core and the stages never import each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fineflow import storage

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"  # also a Prefect artifact key part: no dots, no capitals
REJECTS_SUFFIX = ".rejects"


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


class StageConfig(Strict):
    """One entry of a pipeline's ``stages:``; ``stage`` (the kind) is a ``Literal`` in each subclass."""

    stage: str
    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="unique in the pipeline (default: the kind)"
    )
    input: str | list[str] | None = Field(
        default=None,
        description="stage name(s) whose documents this stage reads (a list: their union), or NAME.rejects; "
        "default: the previous entry",
    )

    @field_validator("input")
    @classmethod
    def _no_empty_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not value:
            raise ValueError("an empty list reads nothing: name at least one stage")
        return value

    @property
    def label(self) -> str:
        """The stage's name in this pipeline: ``name``, else its kind."""
        return self.name or self.stage

    def path_fields(self) -> list[tuple[object, str]]:
        """(model, attribute) pairs holding the paths this config names (the defaults of
        ``resolve_paths`` and ``named_files`` below work from them)."""
        return []

    def resolve_paths(self, resolve: Callable[[str], str]) -> None:
        """Replace the local paths this config names by ``resolve(path)`` (in place)."""
        for owner, key in self.path_fields():
            setattr(owner, key, resolve(getattr(owner, key)))

    def named_files(self) -> list[str]:
        """Files and folders this config names that must exist (after ``resolve_paths``)."""
        return [getattr(owner, key) for owner, key in self.path_fields()]

    def input_patterns(self) -> list[str]:
        """Raw input files or globs this stage reads (a source stage's; paths or URLs)."""
        return []

    def references(self) -> list[str]:
        """Other stages of the pipeline (``NAME`` or ``NAME.rejects``) whose documents this stage reads
        besides its ``input`` (e.g. a classifier's positive examples): the DAG runs them first."""
        return []

    def external_steps(self) -> list[str]:
        """Committed step folders this stage reads besides its inputs (kept by gc)."""
        return []


def resolve_local(pattern: str, base: Path) -> str:
    """A local path made absolute relative to ``base``; URLs (s3://, ...) stay as they are."""
    if storage.protocol_of(pattern) != "file":
        return pattern
    path = Path(pattern.removeprefix("file://")).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())
