"""A stage's inputs checked against what they committed, before any of its shards runs.

Every input stage has committed before a stage that reads it starts, so the Parquet footers
of its shards say which columns it holds and their types. Two mistakes are caught here, in one
line each, instead of in every shard once the work is on the cluster: a column the stage reads
(its kind's ``columns`` hook) that no input has, and a fan-in whose inputs give one column
different types (a union needs one type per column).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fineflow import registry, storage
from fineflow.documents import stale_columns
from fineflow.manifest import committed_entries
from fineflow.steps import Source, StageInputs

FOOTER_BLOCK = 64 * 1024  # a footer is read in one or two ranged requests, never the texts


class InputSchemaError(ValueError):
    """A stage's input lacks a column it reads, or a fan-in's inputs disagree on a column's type."""


def input_name(source: Source) -> str:
    return source.stage + (".rejects" if source.rejects else "")


def committed_schema(source: Source) -> pa.Schema | None:
    """The columns of an input's committed shards (None where no manifest lists them)."""
    try:
        files = committed_entries(source.folder, rejects=source.rejects)
    except FileNotFoundError:
        return None
    schemas = []
    for entry in files:
        with storage.open_input(entry.url, block_size=FOOTER_BLOCK) as handle:
            schemas.append(pq.ParquetFile(handle).schema_arrow)
    if not schemas:
        return None
    try:
        return pa.unify_schemas(schemas)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise InputSchemaError(f"input {input_name(source)}: its shards disagree on a column's type: {error}") from None


def check_fan_in(name: str, schemas: list[tuple[str, pa.Schema]]) -> None:
    """One type per column across a fan-in's inputs (a null column takes any type, as a union reads it)."""
    first_seen: dict[str, tuple[str, pa.DataType]] = {}
    for source, schema in schemas:
        for field in schema:
            seen = first_seen.get(field.name)
            if seen is None or pa.types.is_null(seen[1]):
                first_seen[field.name] = (source, field.type)
            elif field.type != seen[1] and not pa.types.is_null(field.type):
                raise InputSchemaError(
                    f"stage {name}: column {field.name!r} is {seen[1]} in input {seen[0]} but {field.type} in input {source}: "
                    "a union needs one type per column (cast or rename it in one branch)"
                )


def _stale_hint(column: str) -> str:
    """Why a text-derived column may be missing: a stage that rewrites the text dropped it."""
    if not stale_columns([column], list(registry.stale_text_columns())):
        return ""
    return (f"; {column} is derived from the text, which a stage that rewrites it drops as stale: "
            "compute it after the last stage that rewrites the text")


def check_columns(name: str, required: list[tuple[str, str]], schemas: list[tuple[str, pa.Schema]]) -> None:
    """Every column the stage reads is in at least one input (in a fan-in, inputs without it read nulls)."""
    for column, option in required:
        if any(column in schema.names for _, schema in schemas):
            continue
        if len(schemas) == 1:
            source, schema = schemas[0]
            raise InputSchemaError(
                f"stage {name}: {option}: input {source} has no column {column!r} (its columns: {', '.join(schema.names)})"
                + _stale_hint(column)
            )
        columns = list(dict.fromkeys(column for _, schema in schemas for column in schema.names))
        raise InputSchemaError(
            f"stage {name}: {option}: none of its inputs ({', '.join(source for source, _ in schemas)}) has a column "
            f"{column!r} (their columns: {', '.join(columns)})" + _stale_hint(column)
        )


def check_inputs(name: str, config: Any, inputs: StageInputs | None) -> None:
    """Raise ``InputSchemaError`` (one line) where the stage cannot read its committed inputs."""
    if inputs is None:
        return
    kind = registry.of(config)
    schemas = [(input_name(source), schema) for source in inputs.sources if (schema := committed_schema(source)) is not None]
    if not schemas:
        return
    if len(schemas) > 1:
        check_fan_in(name, schemas)
    required = kind.call("columns", config)
    if required:
        check_columns(name, list(required), schemas)
