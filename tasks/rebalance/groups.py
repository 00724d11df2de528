"""Where the ``solve`` step reads its documents from: all of them at once (``exact``), or a group
of cells at a time (``bounded``: within ``solve.memory_mb``).

Cells are solved independently once their targets are known, and the targets need only a few
numbers per cell (``targets.py``): so a bounded solve surveys the measure shards (rows per shard,
documents per cell, the languages and levels that weights are looked up for), packs the cells,
in their sorted order, into groups of at most ``capacity`` documents, and reads one group's rows
from every shard (one shard at a time) for each of its two passes: the per-cell numbers the
targets need, then the solver. A cell with more documents than a group is sorted once into
slices of its key range in a local folder and read slice by slice, in key order (``stream.py``
solves it in parts). Each group's repeats wait in a local folder by input shard until every group
is solved; then each shard's file is written from its parts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fineflow import storage
from fineflow.documents import read_table
from fineflow.tasks.rebalance.measure import cell_key
from fineflow.tasks.text.sampling import seeded_keys

# What one document costs the solve step at its peak: the measured row (id, cell values, counts),
# its key, preference and place in the sort, and their temporaries (numpy and Arrow copies).
# bench/scale_sim.py measured ~540 bytes of process RSS per document held at 10 M documents (300
# kept peaks at 1.9 GB under a 1 GB bound): 640 keeps the process within memory_mb.
BYTES_PER_DOCUMENT = 640


def capacity(memory_mb: int) -> int:
    """The documents one group may hold."""
    return max(1, memory_mb * 2**20 // BYTES_PER_DOCUMENT)


def rows(urls: list[str]) -> int:
    """The measured rows in all shards, from the Parquet footers alone."""
    total = 0
    for url in urls:
        with storage.open_input(url, block_size=1024 * 1024) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def _valid(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_null(table["problem"])) if table.num_rows else table


@dataclass
class Survey:
    rows_per_shard: np.ndarray  # every measure shard's rows (the repeats files have as many)
    documents: int = 0  # rows, with problems or not
    cells: dict[tuple[str, ...], int] = field(default_factory=dict)  # documents without a problem per cell
    languages: set[str] = field(default_factory=set)
    levels: set = field(default_factory=set)
    no_cluster_size: int = 0

    def add(self, table: pa.Table, n_columns: int) -> None:
        """One shard's rows (or all of them)."""
        if table.num_rows:
            self.rows_per_shard += np.bincount(table["shard"].to_numpy(), minlength=len(self.rows_per_shard))
        self.documents += table.num_rows
        valid = _valid(table)
        names = [cell_key(i) for i in range(n_columns)]
        if not names:
            if valid.num_rows:
                self.cells[()] = self.cells.get((), 0) + valid.num_rows
        elif valid.num_rows:
            counts = valid.group_by(names).aggregate([([], "count_all")])
            for row in counts.to_pylist():
                cell = tuple(row[name] for name in names)
                self.cells[cell] = self.cells.get(cell, 0) + row["count_all"]
        if "language" in valid.column_names:
            self.languages |= set(pc.fill_null(valid["language"], "und").to_numpy(zero_copy_only=False).tolist())
            self.no_cluster_size += int(pc.sum(pc.is_null(valid["cluster_size"]).cast(pa.int64())).as_py() or 0)
        if "level" in valid.column_names:
            self.levels |= set(valid["level"].to_numpy(zero_copy_only=False).tolist())


class Everything:
    """``exact``: every document at once, one group (the solver as it always ran)."""

    def __init__(self, urls: list[str], n_columns: int) -> None:
        table = read_table(urls)
        self.survey = Survey(np.zeros(len(urls), dtype=np.int64))
        self.survey.add(table, n_columns)
        self.valid = _valid(table)
        self.groups = 1
        self.over_bound: list[int] = []
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def load(self, group: int) -> pa.Table:
        return self.valid

    def note_ids(self, group: int, ids: pa.ChunkedArray, keys: np.ndarray, part: int = 0) -> None:
        """One group holds every id: its own check saw them all."""

    def id_ranges(self) -> Iterator[pa.Table]:
        return iter(())

    def whole(self, group: int) -> bool:
        return True

    def put(self, group: int, shard_of: np.ndarray, row_of: np.ndarray, repeats: np.ndarray, part: int = 0) -> None:
        self.parts.append((shard_of, row_of, repeats))

    def repeats(self, shard: int) -> np.ndarray:
        values = np.zeros(int(self.survey.rows_per_shard[shard]), dtype=np.int32)
        for shard_of, row_of, repeats in self.parts:
            mask = shard_of == shard
            values[row_of[mask]] = repeats[mask]
        return values


class Grouped:
    """``bounded``: the cells in groups of at most ``capacity`` documents, read a group at a time
    (a cell with more is a group of its own, read a slice of its keys at a time)."""

    def __init__(self, urls: list[str], n_columns: int, capacity: int, folder: str) -> None:
        self.urls, self.names, self.folder = urls, [cell_key(i) for i in range(n_columns)], Path(folder)
        self.capacity = capacity
        # The cut holds the leaves of one open block: a power of two within half a group.
        self.block = 1 << min(16, max(0, (capacity // 2).bit_length() - 1))
        self.spilled: dict[int, int] = {}  # one-cell groups sorted into slices: their key bits
        self.files: dict[int, list[Path]] = {}  # each shard's repeats, in the order they were put
        self.survey = Survey(np.zeros(len(urls), dtype=np.int64))
        for url in urls:
            self.survey.add(read_table([url]), n_columns)
        self.cells = pack(self.survey.cells, capacity)
        self.groups = len(self.cells)
        # A cell with more documents than a group holds is read in slices of its keys.
        self.over_bound = sorted(count for count in self.survey.cells.values() if count > capacity)
        # Ids are checked for repeats within each group; across groups by ranges of their keys
        # (about a group's worth each): the same id has the same key, so it meets itself in one.
        self.bits = max(0, (self.groups - 1).bit_length()) if self.groups > 1 else 0

    def note_ids(self, group: int, ids: pa.ChunkedArray, keys: np.ndarray, part: int = 0) -> None:
        if not self.bits:
            return
        ranges = (keys >> np.uint64(64 - self.bits)).astype(np.int64)
        for number in np.unique(ranges):
            chosen = pa.array(np.flatnonzero(ranges == number), pa.int64())
            pq.write_table(pa.table({"id": ids.take(chosen)}), self.folder / f"ids-{number}-{group}-{part}.parquet")

    def id_ranges(self) -> Iterator[pa.Table]:
        """Every noted id, a range of keys at a time."""
        for number in range(2**self.bits if self.bits else 0):
            parts = [pq.read_table(path) for path in sorted(self.folder.glob(f"ids-{number}-*.parquet"))]
            if parts:
                yield pa.concat_tables(parts, promote_options="default")

    def whole(self, group: int) -> bool:
        """A group held at once; else one cell past the bound, read in slices of its keys."""
        cells = self.cells[group]
        return len(cells) > 1 or self.survey.cells[cells[0]] <= self.capacity

    def slices(self, group: int, seed: int) -> Iterator[tuple[pa.Table, np.ndarray]]:
        """The one cell's documents (and their keys) by ranges of their keys, in key order: each
        about half a group. The first call sorts them out of the shards into a local folder."""
        cell = self.cells[group][0]
        if group not in self.spilled:
            bits = max(1, math.ceil(math.log2(2 * self.survey.cells[cell] / self.capacity)))
            for shard, valid in enumerate(self._rows([cell])):
                keys = seeded_keys(valid["id"].to_pylist(), seed)
                ranges = (keys >> np.uint64(64 - bits)).astype(np.int64)
                for number in np.unique(ranges):
                    chosen = np.flatnonzero(ranges == number)
                    part = valid.take(pa.array(chosen, pa.int64())).append_column("slice_key", pa.array(keys[chosen], pa.uint64()))
                    pq.write_table(part, self.folder / f"cell-{group}-{number}-{shard}.parquet")
            self.spilled[group] = bits
        for number in range(2 ** self.spilled[group]):
            parts = [pq.read_table(path) for path in sorted(self.folder.glob(f"cell-{group}-{number}-*.parquet"))]
            if parts:
                table = pa.concat_tables(parts, promote_options="default")
                yield table.drop_columns(["slice_key"]), table["slice_key"].to_numpy()

    def _rows(self, cells: list[tuple[str, ...]]) -> Iterator[pa.Table]:
        """These cells' documents (without a problem), a shard at a time."""
        wanted = pa.table({name: pa.array([cell[i] for cell in cells], pa.string()) for i, name in enumerate(self.names)})
        for url in self.urls:
            valid = _valid(read_table([url]))
            if self.names and valid.num_rows:
                valid = valid.join(wanted, keys=self.names, join_type="inner").select(valid.column_names)
            yield valid

    def load(self, group: int) -> pa.Table:
        """The group's documents, from every shard in turn."""
        parts = list(self._rows(self.cells[group]))
        return pa.concat_tables(parts, promote_options="default") if parts else read_table([])

    def put(self, group: int, shard_of: np.ndarray, row_of: np.ndarray, repeats: np.ndarray, part: int = 0) -> None:
        """Repeats of these rows; a later put of the same row wins."""
        written = repeats > 0  # the others are 0 anyway
        shard_of, row_of, repeats = shard_of[written], row_of[written], repeats[written]
        for shard in np.unique(shard_of).tolist():
            mask = shard_of == shard
            path = self.folder / f"repeats-{group}-{part}-{shard}.npy"
            np.save(path, np.stack([row_of[mask], repeats[mask]]))
            self.files.setdefault(shard, []).append(path)

    def repeats(self, shard: int) -> np.ndarray:
        values = np.zeros(int(self.survey.rows_per_shard[shard]), dtype=np.int32)
        for path in self.files.get(shard, []):
            row_of, repeats = np.load(path)
            values[row_of] = repeats
        return values


def pack(cells: dict[tuple[str, ...], int], capacity: int) -> list[list[tuple[str, ...]]]:
    """The cells, in sorted order, in consecutive groups of at most ``capacity`` documents."""
    groups: list[list[tuple[str, ...]]] = []
    size = 0
    for cell in sorted(cells):
        if not groups or size + cells[cell] > capacity:
            groups.append([])
            size = 0
        groups[-1].append(cell)
        size += cells[cell]
    return groups
