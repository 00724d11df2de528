"""Rows spilled to storage in partitions, so a step holds one bounded chunk at a time, never the
whole table: what the bounded-memory clustering (``fineflow.tasks.dedup.components``) is built on.

A ``Spill`` buffers added rows up to ``chunk_rows``, then writes them as one small Parquet run per
partition (``p00003-r000012.parquet``) through ``fineflow.storage``; a partition is read back run by
run. Which partition a row lands in is an execution detail (a hash of its key): nothing computed
from a spill depends on it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import polars as pl
import pyarrow.parquet as pq

from fineflow import storage

_SEED = 0x5EED  # fixed: the same key lands in the same partition in every spill of a run


def partition_of(columns: list[str], partitions: int) -> pl.Expr:
    """The partition of each row: a hash of its key columns, modulo ``partitions``."""
    key = pl.col(columns[0]) if len(columns) == 1 else pl.struct(columns)
    return (key.hash(seed=_SEED) % partitions).cast(pl.Int64)


class Spill:
    """Rows hash-partitioned on ``key`` into ``partitions`` lists of Parquet runs under ``folder``.

    ``by`` replaces the hash with a given partition expression (e.g. the upstream shard of a node);
    ``distinct`` drops repeated rows within each chunk (cheap, and fewer rows to read back).
    """

    def __init__(
        self, folder: str, partitions: int, key: list[str], chunk_rows: int, by: pl.Expr | None = None, distinct: bool = False
    ):
        self.folder, self.partitions, self.chunk_rows, self.distinct = folder, partitions, chunk_rows, distinct
        self._where = partition_of(key, partitions) if by is None else by
        self._buffer: list[pl.DataFrame] = []
        self._buffered = 0
        self._flushes = 0
        self.runs: list[list[str]] = [[] for _ in range(partitions)]
        self.rows = 0

    def add(self, frame: pl.DataFrame) -> None:
        if frame.is_empty():
            return
        self._buffer.append(frame)
        self._buffered += frame.height
        if self._buffered >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        frame = pl.concat(self._buffer, how="vertical_relaxed")
        frame = frame.unique() if self.distinct else frame
        self._buffer, self._buffered = [], 0
        parts = frame.with_columns(self._where.alias("_partition")).partition_by("_partition", as_dict=True, include_key=False)
        for (partition,), part in sorted(parts.items()):
            url = storage.join(self.folder, f"p{partition:05d}-r{self._flushes:06d}.parquet")
            sink = io.BytesIO()
            part.write_parquet(sink, compression="lz4", statistics=False)
            storage.write_bytes(url, sink.getvalue())
            self.runs[partition].append(url)
            self.rows += part.height
        self._flushes += 1

    def read(self, partition: int) -> Iterator[pl.DataFrame]:
        """The runs of one partition, one at a time (each at most ``chunk_rows`` rows)."""
        for url in self.runs[partition]:
            yield pl.read_parquet(io.BytesIO(storage.read_bytes(url)))

    def remove(self) -> None:
        storage.remove(self.folder, recursive=True)


def parquet_rows(url: str) -> int:
    """Rows of a Parquet file, from its footer alone."""
    with storage.open_input(url, block_size=1 << 20) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def iter_parquet(url: str, columns: list[str], batch_rows: int) -> Iterator[pl.DataFrame]:
    """A Parquet file read ``batch_rows`` rows at a time (its row groups streamed, never the whole file)."""
    with storage.open_input(url) as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns):
            yield pl.from_arrow(batch)
