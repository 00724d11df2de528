"""The columns of a release: FineWeb's released columns derived from fineflow's, then provenance.

FineWeb publishes ``text, id, dump, url, date, file_path, language, language_score,
token_count``. fineflow's documents carry ``source`` (``<input file>@<offset>``, giving
``file_path`` and, for Common Crawl paths, ``dump``), ``crawl_date`` (``date``, as FineWeb's
ISO string) and ``n_tokens_<tokenizer>`` where a stage counted tokens (``token_count``: GPT-2's
count, as FineWeb's, else the one tokenizer counted). Every other column the documents carry is
provenance (cluster sizes, scores, WARC ids ...) and is written too unless ``columns`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

FINEWEB_COLUMNS = ("text", "id", "dump", "url", "date", "file_path", "language", "language_score", "token_count")
TOKEN_PREFIX = "n_tokens_"  # a per-document token count, one column per tokenizer
PREFERRED_TOKENIZER = "gpt2"  # what FineWeb's token_count counts
_DUMP = r"CC-MAIN-\d{4}-\d{2}"  # a Common Crawl crawl's name in its WARC paths


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    derive: Callable[[pa.Table], pa.Array]
    consumes: str | None = None  # the raw column it replaces in the default selection


def _raw(name: str) -> Callable[[pa.Table], pa.Array]:
    return lambda table: table.column(name)


def _file_path(table: pa.Table) -> pa.Array:
    return pc.replace_substring_regex(table.column("source"), pattern=r"@[^@]*$", replacement="")


def _dump(table: pa.Table) -> pa.Array:
    paths = _file_path(table)
    found = pc.struct_field(pc.extract_regex(paths, f"(?P<dump>{_DUMP})"), [0])
    return pc.if_else(pc.match_substring_regex(paths, _DUMP), found, pa.scalar(None, pa.string()))


def _date(table: pa.Table) -> pa.Array:
    seconds = pc.cast(table.column("crawl_date"), pa.timestamp("s", tz="UTC"), safe=False)
    return pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ")


def token_column(schema: pa.Schema) -> str | None:
    """The token count ``token_count`` copies: GPT-2's, else the first tokenizer's."""
    counts = [name for name in schema.names if name.startswith(TOKEN_PREFIX)]
    preferred = TOKEN_PREFIX + PREFERRED_TOKENIZER
    return preferred if preferred in counts else (counts[0] if counts else None)


def available(schema: pa.Schema) -> dict[str, Column]:
    """Every column a release of documents with ``schema`` can have, FineWeb's first, in order."""
    derived: dict[str, Column] = {}
    names = set(schema.names)
    descriptions = {
        "text": "the document's text",
        "id": "fineflow's document id (a hash of the WARC-Record-ID; FineWeb's id is that record id itself, see warc_record_id)",
        "url": "the page's URL",
        "language": "the language identified (a BCP-47 tag)",
        "language_score": "the language identifier's confidence",
    }
    for name in FINEWEB_COLUMNS:
        if name in names:
            derived[name] = Column(name, schema.field(name).type, descriptions.get(name, ""), _raw(name))
        elif name in ("file_path", "dump") and "source" in names:
            derived[name] = (
                Column(name, pa.string(), "the input file the document was read from", _file_path)
                if name == "file_path"
                else Column(name, pa.string(), "the Common Crawl snapshot (from the input file's path; null elsewhere)", _dump)
            )
        elif name == "date" and "crawl_date" in names:
            derived[name] = Column(name, pa.string(), "when the page was fetched (ISO 8601, UTC)", _date, "crawl_date")
        elif name == "token_count" and (tokens := token_column(schema)):
            tokenizer = tokens[len(TOKEN_PREFIX):]
            derived[name] = Column(name, pa.int64(), f"tokens by the {tokenizer} tokenizer", _raw(tokens), tokens)
    provenance = {
        field.name: Column(field.name, field.type, "provenance", _raw(field.name))
        for field in schema
        if field.name not in derived
    }
    return derived | provenance


def default_columns(schema: pa.Schema) -> list[str]:
    """FineWeb's columns the documents give, then every other column but those they were made from."""
    columns = available(schema)
    consumed = {column.consumes for column in columns.values() if column.consumes}
    return [name for name in columns if name not in consumed]


def select(schema: pa.Schema, names: list[str] | None) -> list[Column]:
    columns = available(schema)
    chosen = names or default_columns(schema)
    unknown = [name for name in chosen if name not in columns]
    if unknown:
        raise ValueError(f"--columns: no column {', '.join(unknown)}; the documents give {', '.join(columns)}")
    return [columns[name] for name in chosen]


def release_schema(columns: list[Column]) -> pa.Schema:
    return pa.schema([pa.field(column.name, column.type) for column in columns])


def project(table: pa.Table, columns: list[Column], schema: pa.Schema) -> pa.Table:
    """``table``'s documents with the release's columns, cast to its schema (one schema for every shard)."""
    arrays = [column.derive(table).cast(field.type) for column, field in zip(columns, schema)]
    return pa.Table.from_arrays(arrays, schema=schema)
