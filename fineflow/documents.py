"""The document table: columns every stage reads and writes, and its Parquet encoding.

Documents are Parquet shards (zstd) that polars and pyarrow read directly. Later stages add
columns; rejects keep every input column plus ``drop_reason``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fineflow import examples, storage
from fineflow.steps import STALE_KEY  # the shard key naming the text-derived columns to drop

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("text", pa.string()),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("source", pa.string()),  # "<input file>@<offset>" or "@<unit offset>+<offset in it>" (tasks/crawl/warc.py)
        pa.field("crawl_date", pa.timestamp("us", tz="UTC")),
        pa.field("warc_record_id", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("charset", pa.string()),
    ]
)

REJECT_EXTRA_FIELDS = [pa.field("drop_reason", pa.string(), nullable=False)]
# What varies per document (a byte offset, a server's message) stays out of ``drop_reason``, so
# reasons are a bounded set a report can count; steps that have such details add this column.
DETAIL_FIELD = pa.field("drop_detail", pa.string())


def rejects_schema(schema: pa.Schema, detail: bool = False) -> pa.Schema:
    """The schema of a document step's rejects: its documents' columns, then ``drop_reason``
    (and ``drop_detail`` for a step that records details)."""
    names = {field.name for field in REJECT_EXTRA_FIELDS} | {DETAIL_FIELD.name}
    extra = REJECT_EXTRA_FIELDS + ([DETAIL_FIELD] if detail else [])
    return pa.schema([field for field in schema if field.name not in names] + extra)


def undecodable_rows(table: pa.Table, column: str = "text") -> tuple[pa.Table, dict[int, str]]:
    """Rows whose ``column`` is not valid UTF-8 (bytes from another writer), each with where it
    breaks; the table comes back with those values decoded with U+FFFD replacements, so it (and
    the rejects file the rows go to) stays readable by every reader that checks UTF-8."""
    if column not in table.column_names or not pa.types.is_string(table.schema.field(column).type):
        return table, {}
    try:
        table[column].validate(full=True)
        return table, {}
    except pa.ArrowInvalid:
        pass
    repaired: list[str | None] = []
    bad: dict[int, str] = {}
    for row, raw in enumerate(table[column].cast(pa.binary()).to_pylist()):
        try:
            repaired.append(None if raw is None else raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            repaired.append(raw.decode("utf-8", errors="replace"))
            bad[row] = f"{column} is not valid UTF-8 ({error.reason} at byte {error.start})"
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.schema.field(column), pa.array(repaired, pa.string())), bad


# The input columns dropped that way ride along in the table's schema metadata until
# ``commit_shard``, which counts them in the shard's stats (``stale_columns_dropped``) and strips them.
_DROPPED_METADATA = b"fineflow.stale_columns_dropped"


def stale_columns(names: list[str], patterns: list[str]) -> list[str]:
    """The columns among ``names`` that match a text-derived pattern; the document table's own
    columns (``DOCUMENT_SCHEMA``: language and its score included) are never among them."""
    core = set(DOCUMENT_SCHEMA.names)
    return [name for name in names if name not in core and any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def _without_stale(table: pa.Table, shard: dict) -> pa.Table:
    stale = stale_columns(table.column_names, shard.get(STALE_KEY) or [])
    if not stale:
        return table
    table = table.drop_columns(stale)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), _DROPPED_METADATA: json.dumps(stale).encode()})


def _pop_dropped(table: pa.Table | None) -> tuple[pa.Table | None, list[str]]:
    metadata = dict(table.schema.metadata or {}) if table is not None else {}
    if _DROPPED_METADATA not in metadata:
        return table, []
    dropped = json.loads(metadata.pop(_DROPPED_METADATA))
    return table.replace_schema_metadata(metadata or None), dropped


def set_columns(table: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    """``table`` with these columns appended, replacing same-named ones (a stage reading another
    stage's rejects gets their ``drop_reason``: its own verdict replaces it)."""
    table = table.drop_columns([name for name in columns if name in table.column_names])
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    if table.num_rows == 0:
        # No row group at all (not one of 0 rows, which Hugging Face datasets cannot read): the
        # schema alone, so an empty shard still loads everywhere with the step's one schema.
        pq.ParquetWriter(sink, table.schema, compression="zstd").close()
        return sink.getvalue()
    # Row groups of ~64k rows keep readers' memory bounded; statistics help `inspect` filters.
    pq.write_table(table, sink, compression="zstd", row_group_size=65536, write_statistics=True)
    return sink.getvalue()


def write_table(url: str, table: pa.Table) -> dict:
    """Write ``table`` to ``url`` as one atomic object; returns its size and hash for manifests."""
    data = table_to_parquet_bytes(table)
    storage.write_bytes(url, data)
    return {
        "file": url.rstrip("/").rsplit("/", 1)[-1],
        "rows": table.num_rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _union_schema(shard: dict) -> pa.Schema:
    return pa.unify_schemas([pq.read_schema(io.BytesIO(storage.read_bytes(url))) for url in shard["union"]])


def read_input_columns(shard: dict, columns: list[str]) -> pa.Table:
    """``read_columns`` of a shard task's ``input``; in a fan-in, a column that another input has
    and this one lacks comes back null (as ``read_input`` conforms it)."""
    columns = [name for name in columns if name not in stale_columns([name], shard.get(STALE_KEY) or [])]
    table = read_columns(shard["input"], columns)
    if not shard.get("union"):
        return table
    schema = _union_schema(shard)
    for name in columns:
        if name not in table.column_names and name in schema.names:
            table = table.append_column(schema.field(name), pa.nulls(table.num_rows, schema.field(name).type))
    return table


def read_input(shard: dict) -> pa.Table:
    """The documents of a shard task's ``input``; in a fan-in (``union``: one shard of each input)
    conformed to the union of the inputs' columns, in their order, missing columns null. In a stage
    that rewrites the text, without the text-derived columns its shard names (``STALE_KEY``)."""
    table = read_table([shard["input"]])
    if shard.get("union"):
        schema = _union_schema(shard)
        columns = [
            table.column(field.name).cast(field.type) if field.name in table.schema.names else pa.nulls(table.num_rows, field.type)
            for field in schema
        ]
        table = pa.Table.from_arrays(columns, schema=schema)
    return _without_stale(table, shard)


def read_table(urls: list[str]) -> pa.Table:
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(u))) for u in urls]
    if not tables:
        return DOCUMENT_SCHEMA.empty_table()
    return pa.concat_tables(tables, promote_options="default")


def read_columns(url: str, columns: list[str]) -> pa.Table:
    """Only these columns of a Parquet file, those it has (ranged reads on object storage: a stage
    that needs a few small columns never downloads the texts)."""
    with storage.open_input(url, block_size=1024 * 1024) as handle:
        parquet = pq.ParquetFile(handle)
        return parquet.read(columns=[c for c in columns if c in parquet.schema_arrow.names])


def commit_shard(
    shard: int,
    output_url: str,
    kept: pa.Table,
    rejects_url: str | None = None,
    rejects: pa.Table | None = None,
    docs_in: int | None = None,
    artifacts: list[dict] | None = None,
    **stats,
) -> dict:
    """Write a shard's rejects, then its output, last: the output's existence marks the shard
    committed. A document step (one given ``rejects_url``) writes a rejects file for every shard,
    empty ones too (with the rejects schema), so ``NAME.rejects`` has as many shards as the step.
    ``artifacts`` are what ``fineflow.artifacts.commit_artifact`` returned for files committed
    before. Returns the shard task's result, documents counted from the tables (and, for document
    tables, their characters and languages, and the stale text-derived columns dropped from them)."""
    kept, dropped = _pop_dropped(kept)
    rejects, dropped_from_rejects = _pop_dropped(rejects)
    dropped = sorted({*dropped, *dropped_from_rejects})
    n_rejects = rejects.num_rows if rejects is not None else 0
    rejects_info = None
    if rejects_url is not None:
        rejects_table = rejects if rejects is not None else rejects_schema(kept.schema).empty_table()
        rejects_info = write_table(rejects_url, rejects_table)
    output_info = write_table(output_url, kept)
    counts = {"docs_in": kept.num_rows + n_rejects if docs_in is None else docs_in, "docs_out": kept.num_rows, "rejects": n_rejects}
    if "text" in kept.schema.names:  # document tables: characters kept and dropped, for the run report's funnel
        counts["text_chars"] = _characters(kept)
        counts["rejected_chars"] = _characters(rejects) if n_rejects else 0
    if "language" in kept.schema.names:  # documents kept per language ("und": none detected)
        languages = Counter(code or "und" for code in kept.column("language").to_pylist())
        counts["languages"] = dict(sorted(languages.items()))
    if dropped:  # per column, the documents (kept or rejected) that came without it
        stats = {**stats, "stale_columns_dropped": {name: kept.num_rows + n_rejects for name in dropped}}
    if n_rejects and "drop_reason" in rejects.schema.names:  # the run report's "why": reasons by language, examples
        if "language" in rejects.schema.names and "drops_by_language" not in stats:
            pairs = pa.table({"language": pc.cast(rejects["language"], pa.string()), "reason": pc.cast(rejects["drop_reason"], pa.string())})
            by_language: dict[str, dict[str, int]] = {}
            for row in pairs.group_by(["language", "reason"]).aggregate([([], "count_all")]).to_pylist():
                language = by_language.setdefault(row["language"] or "und", {})
                language[row["reason"] or "-"] = language.get(row["reason"] or "-", 0) + row["count_all"]
            counts["drops_by_language"] = {code: dict(sorted(c.items())) for code, c in sorted(by_language.items())}
        counts[examples.FIELD] = examples.drop_examples(rejects)
    result = {"shard": shard, "output": output_info, "rejects": rejects_info, "stats": {**counts, **stats}}
    if artifacts:
        result["artifacts"] = artifacts
    return result


def _characters(table: pa.Table) -> int:
    if "text" not in table.schema.names or table.num_rows == 0:
        return 0
    return int(pc.sum(pc.utf8_length(table["text"])).as_py() or 0)


def duplicate_ids(folders: list[str], limit: int = 10) -> list[str]:
    """Document ids found in more than one of these committed folders (up to ``limit``, sorted).

    Reads only the ``id`` column of each file (what a fan-in checks before it reads a union).
    """
    from fineflow.manifest import committed_entries

    seen: dict[str, int] = {}
    repeated: set[str] = set()
    for index, folder in enumerate(folders):
        for entry in committed_entries(folder):
            ids = pq.read_table(io.BytesIO(entry.read()), columns=["id"]).column("id").to_pylist()
            for doc_id in ids:
                if seen.setdefault(doc_id, index) != index:
                    repeated.add(doc_id)
    return sorted(repeated)[:limit]
