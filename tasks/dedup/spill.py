"""Rows spilled to storage in partitions, so a step holds one bounded chunk at a time, never the
whole table: what the bounded-memory clustering (``fineflow.tasks.dedup.components``) is built on.

A ``Spill`` buffers added rows up to ``chunk_rows``, then writes them through ``fineflow.storage``
as one object (``flush-000012.runs``) holding one Parquet run per partition, back to back; a
partition is read back a chunk of runs at a time (byte ranges of those objects). Which partition a row lands in is an execution detail (a hash of its key): nothing computed
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
        self.runs: list[list[tuple[str, int, int, int]]] = [[] for _ in range(partitions)]  # (url, start, length, rows)
        self.rows = 0

    def add(self, frame: pl.DataFrame) -> None:
        for piece in frame.iter_slices(self.chunk_rows):  # a large frame: never more than a chunk buffered
            self._buffer.append(piece)
            self._buffered += piece.height
            if self._buffered >= self.chunk_rows:
                self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        frame = pl.concat(self._buffer, how="vertical_relaxed")
        frame = frame.unique() if self.distinct else frame
        self._buffer, self._buffered = [], 0
        parts = frame.with_columns(self._where.alias("_partition")).partition_by("_partition", as_dict=True, include_key=False)
        # one object per flush, the partitions' runs (each a whole Parquet file) one after the other:
        # one write, not one per partition, whatever the number of partitions
        url = storage.join(self.folder, f"flush-{self._flushes:06d}.runs")
        blob = io.BytesIO()
        for (partition,), part in sorted(parts.items()):
            start = blob.tell()
            part.write_parquet(blob, compression="lz4", statistics=False)
            self.runs[partition].append((url, start, blob.tell() - start, part.height))
            self.rows += part.height
        storage.write_bytes(url, blob.getvalue())
        self._flushes += 1

    def read(self, partition: int) -> Iterator[pl.DataFrame]:
        """One partition, a chunk at a time: its consecutive runs together up to ``chunk_rows`` rows
        (each run is a flush's share of one partition, often much smaller than a chunk)."""
        group: list[tuple[str, int, int, int]] = []
        rows = 0
        for run in self.runs[partition]:
            if group and rows + run[3] > self.chunk_rows:
                yield self._read(group)
                group, rows = [], 0
            group.append(run)
            rows += run[3]
        if group:
            yield self._read(group)

    @staticmethod
    def _read(runs: list[tuple[str, int, int, int]]) -> pl.DataFrame:
        frames = []
        for url, start, length, _ in runs:
            with storage.open_input(url, block_size=max(length, 1 << 16)) as handle:
                handle.seek(start)
                frames.append(pl.read_parquet(io.BytesIO(handle.read(length))))
        return pl.concat(frames)

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
