"""Reading benchmark items from files: JSON Lines, Parquet or CSV, by storage URL.

An item's text is its named columns' values joined by newlines, in the configured order (a list
of strings, e.g. answer choices, joined too; a null skipped). A missing column or an unreadable
file is a ``BenchmarkError`` naming the benchmark and the file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from fineflow import storage

EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}


class BenchmarkError(ValueError):
    """A benchmark that cannot be read as configured; the message says which file and why."""


def file_format(url: str, configured: str) -> str | None:
    """The format of a benchmark file (None: not a benchmark file, e.g. a README in the folder)."""
    if configured != "auto":
        return configured
    name = url.lower().removesuffix(".gz")
    return next((fmt for ext, fmt in EXTENSIONS.items() if name.endswith(ext)), None)


def benchmark_files(name: str, path: str, configured: str) -> list[str]:
    """The files of a benchmark (a file, a folder's files or a glob's matches), sorted."""
    files = [url for url in storage.expand(path) if file_format(url, configured)]
    if not files:
        raise BenchmarkError(f"benchmark {name}: {path} holds no .jsonl, .json, .parquet or .csv file")
    return files


def _table(url: str, fmt: str) -> pa.Table:
    data = storage.read_bytes(url)
    if url.lower().endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    if fmt == "csv":
        return pa_csv.read_csv(io.BytesIO(data))
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    return pa.Table.from_pylist(rows) if rows else pa.table({})


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [_text(part) for part in value]
        return "\n".join(part for part in parts if part) or None
    if isinstance(value, dict):
        return _text(list(value.values()))
    return str(value)


def read_items(name: str, url: str, columns: list[str], configured: str) -> Iterator[str]:
    """The texts of a file's items, one per row (rows with no text in any column skipped)."""
    fmt = file_format(url, configured) or "jsonl"
    try:
        table = _table(url, fmt)
    except (OSError, ValueError, pa.ArrowException) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BenchmarkError(f"benchmark {name}: {url} cannot be read as {fmt}: {message}") from None
    missing = [column for column in columns if column not in table.column_names]
    if missing:
        raise BenchmarkError(
            f"benchmark {name}: {url} has no column {', '.join(missing)} (it has: {', '.join(table.column_names) or 'none'})"
        )
    values = [table.column(column).to_pylist() for column in columns]
    for row in zip(*values):
        parts = [text for text in map(_text, row) if text]
        if parts:
            yield "\n".join(parts)
