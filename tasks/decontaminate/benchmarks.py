"""Reading benchmark items from files: JSON Lines, Parquet or CSV, by storage URL.

An item's text is its named columns' values joined by newlines, in the configured order (a list
of strings, e.g. answer choices, joined too; a null skipped). A missing column or an unreadable
file is a ``BenchmarkError`` naming the benchmark and the file. Files are read in batches of
rows, so a multi-GB benchmark file never sits in memory (its n-gram index does: 12 bytes each).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

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


BATCH_ROWS = 4096  # items read at a time: memory follows a batch, never a whole benchmark file


@contextmanager
def _stream(url: str) -> Iterator[IO[bytes]]:
    """The file's bytes as a stream (decompressed when its name ends in .gz)."""
    with storage.open_input(url) as handle:
        if url.lower().endswith(".gz"):
            with gzip.open(handle) as unzipped:
                yield unzipped
        else:
            yield handle


def _batches(url: str, fmt: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches: Parquet by its batches (only the named columns), CSV
    incrementally, JSON Lines a block of lines at a time."""
    with _stream(url) as stream:
        if fmt == "parquet":
            parquet = pq.ParquetFile(stream)
            yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=[c for c in columns if c in parquet.schema_arrow.names])
            return
        if fmt == "csv":
            yield from pa_csv.open_csv(stream)
            return
        lines: list[dict] = []
        for line in io.TextIOWrapper(stream, encoding="utf-8"):
            if line.strip():
                lines.append(json.loads(line))
            if len(lines) == BATCH_ROWS:
                yield pa.RecordBatch.from_pylist(lines)
                lines = []
        if lines:
            yield pa.RecordBatch.from_pylist(lines)


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
    """The texts of a file's items, one per row (rows with no text in any column skipped), read a
    batch at a time. A column no row has is an error (raised once the file is read, before the
    index that holds its items is committed)."""
    fmt = file_format(url, configured) or "jsonl"
    seen: set[str] = set()
    present: set[str] = set()
    try:
        for batch in _batches(url, fmt, columns):
            seen.update(batch.schema.names)
            found = [column for column in columns if column in batch.schema.names]
            present.update(found)
            values = [batch.column(column).to_pylist() if column in found else [None] * batch.num_rows for column in columns]
            for row in zip(*values):
                parts = [text for text in map(_text, row) if text]
                if parts:
                    yield "\n".join(parts)
    except (OSError, ValueError, EOFError, pa.ArrowException) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BenchmarkError(f"benchmark {name}: {url} cannot be read as {fmt}: {message}") from None
    missing = [column for column in columns if column not in present]
    if missing:
        raise BenchmarkError(
            f"benchmark {name}: {url} has no column {', '.join(missing)} (it has: {', '.join(sorted(seen)) or 'none'})"
        )
