"""Sized Parquet shards per config: ``data/<config>/train-NNNNN-of-MMMMM.parquet``.

The shard count is in each file's name, so it is fixed before anything is written: a first pass
reads only the config column of each committed file and estimates each config's bytes from the
files' sizes in their manifest (rows of the config / rows of the file). The second pass streams
the files in order, each config's rows into its open shard (a local temporary file written
row group by row group), and each finished shard goes to storage in one atomic write.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fineflow import storage
from fineflow.documents import read_columns
from fineflow.export.source import ExportError, Source, read_documents
from fineflow.languages import UNKNOWN

DEFAULT_CONFIG = "default"
ROW_GROUP_ROWS = 65536  # as fineflow's own shards: bounded reader memory
ROW_GROUP_BYTES = 64 * 1024**2  # and a row group of long documents is written before it holds more than this
_CONFIG_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def config_name(value: str | None) -> str:
    """A config (and folder) name from a column value: unsafe characters become ``_``."""
    name = _CONFIG_NAME.sub("_", value or UNKNOWN).strip("._") or UNKNOWN
    return name


def config_columns(config_by: str | None) -> list[str]:
    """The columns of ``config_by`` (one, or several comma-separated)."""
    return config_by.split(",") if config_by else []


def _check_columns(source: Source, columns: list[str]) -> None:
    for column in columns:
        if column not in source.schema.names:
            raise ExportError(f"--config-by {column}: the documents have no such column (columns: {', '.join(source.schema.names)})")
        kind = source.schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
            raise ExportError(f"--config-by {column}: a {kind} column; configs come from text, integer or boolean columns")


def config_keys(table: pa.Table, columns: list[str]) -> pa.Array:
    """Each document's config value: the column's (as text), or ``col-value`` joined by ``.`` for several."""
    if len(columns) == 1:
        values = table.column(columns[0])
        return values if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) else pc.cast(values, pa.string())
    parts = [table.column(c).to_pylist() for c in columns]
    return pa.array([".".join(f"{c}-{UNKNOWN if v is None else v}" for c, v in zip(columns, row)) for row in zip(*parts)], pa.string())


def config_counts(source: Source, config_by: str | None) -> list[Counter[str]] | None:
    """The documents of each config, file by file (None: one default config). Only counts are kept: the
    names are read again, one file at a time, when the shards are written (memory follows configs, not documents)."""
    if config_by is None:
        return None
    columns = config_columns(config_by)
    _check_columns(source, columns)
    found = []
    for entry in source.files:
        counts = pc.value_counts(config_keys(read_columns(entry.url, columns), columns)).to_pylist()
        per_file: Counter[str] = Counter()
        for item in counts:
            per_file[config_name(item["values"])] += item["counts"]
        found.append(per_file)
    return found


def names_of(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    mapping = {value: config_name(value) for value in pc.unique(values).to_pylist()}
    return pa.array([mapping[value] for value in values.to_pylist()], pa.string())


@dataclass
class ConfigPlan:
    name: str
    rows: int
    shards: int
    rows_per_shard: int

    def file(self, index: int) -> str:
        return f"data/{self.name}/train-{index:05d}-of-{self.shards:05d}.parquet"


def plan_configs(source: Source, values: list[Counter[str]] | None, shard_bytes: int, shard_rows: int | None) -> list[ConfigPlan]:
    """Configs in name order, each with its shard count (at least one shard, none empty)."""
    rows: Counter[str] = Counter()
    estimated: Counter[str] = Counter()
    for index, entry in enumerate(source.files):
        counts = Counter({DEFAULT_CONFIG: entry.rows}) if values is None else values[index]
        for name, count in counts.items():
            rows[name] += count
            estimated[name] += (entry.bytes or 0) * count / entry.rows
    plans = []
    for name in sorted(rows):
        shards = max(1, math.ceil(estimated[name] / shard_bytes), math.ceil(rows[name] / shard_rows) if shard_rows else 1)
        per_shard = math.ceil(rows[name] / min(shards, rows[name]))
        plans.append(ConfigPlan(name, rows[name], math.ceil(rows[name] / per_shard), per_shard))
    return plans


@dataclass
class WrittenFile:
    path: str  # relative to the release folder
    rows: int
    bytes: int
    sha256: str


@dataclass
class _OpenShard:
    plan: ConfigPlan
    index: int = 0
    rows: int = 0
    writer: pq.ParquetWriter | None = None
    local: str = ""
    pending: list[pa.Table] = field(default_factory=list)
    pending_rows: int = 0
    pending_bytes: int = 0


class ShardWriter:
    """Each config's current shard, filled in document order and committed when full."""

    def __init__(self, folder: str, plans: list[ConfigPlan], schema: pa.Schema, scratch: str) -> None:
        self.folder, self.schema, self.scratch = folder, schema, scratch
        self.open = {plan.name: _OpenShard(plan) for plan in plans}
        self.written: list[WrittenFile] = []

    def add(self, name: str, table: pa.Table) -> None:
        shard = self.open[name]
        while table.num_rows:
            room = shard.plan.rows_per_shard - shard.rows
            part, table = table.slice(0, room), table.slice(room)
            shard.pending.append(part)
            shard.pending_rows += part.num_rows
            shard.pending_bytes += part.nbytes
            shard.rows += part.num_rows
            if shard.pending_rows >= ROW_GROUP_ROWS or shard.pending_bytes >= ROW_GROUP_BYTES:
                self._flush(shard)
            if shard.rows == shard.plan.rows_per_shard:
                self._commit(shard)

    def _flush(self, shard: _OpenShard) -> None:
        if not shard.pending:
            return
        if shard.writer is None:
            shard.local = os.path.join(self.scratch, f"{shard.plan.name}-{shard.index:05d}.parquet")
            shard.writer = pq.ParquetWriter(shard.local, self.schema, compression="zstd", write_statistics=True)
        shard.writer.write_table(pa.concat_tables(shard.pending), row_group_size=ROW_GROUP_ROWS)
        shard.pending, shard.pending_rows, shard.pending_bytes = [], 0, 0

    def _commit(self, shard: _OpenShard) -> None:
        self._flush(shard)
        assert shard.writer is not None
        shard.writer.close()
        path = shard.plan.file(shard.index)
        digest = hashlib.sha256()
        with open(shard.local, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        storage.put_file(shard.local, storage.join(self.folder, *path.split("/")))
        self.written.append(WrittenFile(path, shard.rows, os.path.getsize(shard.local), digest.hexdigest()))
        os.unlink(shard.local)
        shard.index, shard.rows, shard.writer = shard.index + 1, 0, None

    def finish(self) -> list[WrittenFile]:
        for shard in self.open.values():
            if shard.rows:
                self._commit(shard)
            if shard.index != shard.plan.shards:  # the plan's counts came from the same committed files
                raise ExportError(f"config {shard.plan.name}: wrote {shard.index} shards, planned {shard.plan.shards}")
        return self.written


def write_shards(
    source: Source, column: str | None, plans: list[ConfigPlan], schema: pa.Schema,
    project: Callable[[pa.Table], pa.Table], folder: str, count: str | None = None,
) -> tuple[list[WrittenFile], dict[str, int]]:
    """Stream the source's files into the planned shards under ``folder`` (configs by ``column``, None:
    one); also the sum of the ``count`` column per config (tokens)."""
    sums: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="fineflow-export-") as scratch:
        writer = ShardWriter(folder, plans, schema, scratch)
        for entry in source.files:
            documents = read_documents(entry)
            table = project(documents)
            if column is None:
                parts = [(DEFAULT_CONFIG, table)]
            else:  # a stable sort by config, then one slice per config: one pass, however many configs a file holds
                names = names_of(config_keys(documents, config_columns(column)))
                order = pc.sort_indices(names)
                table, names = table.take(order), names.take(order)
                parts, start = [], 0
                for item in pc.value_counts(names).to_pylist():  # in the sorted order: first appearance
                    parts.append((item["values"], table.slice(start, item["counts"])))
                    start += item["counts"]
            for name, part in parts:
                if count:
                    sums[name] += int(pc.sum(part.column(count)).as_py() or 0)
                writer.add(name, part)
        return writer.finish(), dict(sums)
