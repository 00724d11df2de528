"""The groups step (one small task): which token files the merge writes, and which merge task
writes each, decided before any token is copied.

Per cell (sorted), the documents' shards are drawn in the seeded order the merge uses (``draw``)
and the files cut where ``max_tokens_per_file`` would be passed (``file_bounds``), from the count
shards' provenance lengths alone. The files, in (cell, part) order, are split into ``tasks``
contiguous runs of about equal tokens: a merge task writes one run (whole small cells, or a
slice of a large cell's files), so its memory follows its own files, never the corpus.

``file_groups.json`` lists per cell its documents per count shard, and per file its cell, part,
draw positions ``[start, end)``, tokens, documents and merge task. This step reads only the
``cell`` and ``n_tokens`` columns of the count shards' provenance: it holds one length per written
document of the corpus (4 bytes: 4 GB per billion documents; 8 in a shard with a document past
2**31 tokens) plus one cell's draw (2 to 4 bytes per document), never ids, urls or tokens.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard
from fineflow.tasks.tokenize.count import provenance_artifact

STEP_VERSION = "1"
LIBRARIES = ("numpy", "pyarrow")

GROUPS = "file_groups.json"


def cell_seed(seed: int, cell: str) -> list[int]:
    return [seed, int.from_bytes(hashlib.sha256(cell.encode()).digest()[:8], "little")]


def draw(seed: int, cell: str, shard_documents: list[tuple[int, int]]) -> np.ndarray:
    """The shard of each document of the cell in written order: a seeded permutation of
    ``[shard] * documents`` (shards ascending). The permutation does not depend on the integer
    type, so the smallest that holds the shard numbers keeps a large cell's draw small."""
    shards = [shard for shard, _ in shard_documents]
    dtype = np.int16 if not shards or max(shards) < 2**15 else np.int32
    shard_of_row = np.repeat(np.array(shards, dtype=dtype), [documents for _, documents in shard_documents])
    return np.random.default_rng(cell_seed(seed, cell)).permutation(shard_of_row)


def file_bounds(lengths: np.ndarray, max_tokens: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each file over documents of these token lengths (in written order): a
    document starts a new file when the file already has tokens and it would pass ``max_tokens``
    (so a longer document fills a file alone). Found by binary search, one step per file."""
    ends = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    bounds, start = [], 0
    while start < len(lengths):
        # The first document that would end past the limit; it stays only if the file is still empty.
        over = int(np.searchsorted(ends, ends[start] + max_tokens, side="right")) - 1
        end = len(lengths) if over >= len(lengths) else (over if ends[over] > ends[start] else over + 1)
        bounds.append((start, end))
        start = end
    return bounds


def _cell_lengths(count_artifacts: str, count_shards: int) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Per cell, per count shard holding it (ascending): its documents' lengths in the shard's order."""
    cells: dict[str, list[tuple[int, np.ndarray]]] = {}
    for shard in range(count_shards):
        url = storage.join(count_artifacts, provenance_artifact(shard))
        table = pq.read_table(io.BytesIO(storage.read_bytes(url)), columns=["cell", "n_tokens"])
        if not table.num_rows:
            continue
        encoded = table["cell"].combine_chunks().dictionary_encode()
        names, codes = encoded.dictionary.to_pylist(), encoded.indices.to_numpy()
        lengths = table["n_tokens"].to_numpy()
        narrow = np.int32 if lengths.max() < 2**31 else np.int64
        # A shard's provenance is sorted by cell: each cell one contiguous run.
        starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]]))
        for start, end in zip(starts, [*starts[1:], len(codes)]):
            cells.setdefault(names[codes[start]], []).append((shard, lengths[start:end].astype(narrow)))
    return cells


def plan_files(count_artifacts: str, count_shards: int, seed: int, max_tokens: int, tasks: int) -> dict:
    cells, files = [], []
    by_cell = _cell_lengths(count_artifacts, count_shards)
    for cell in sorted(by_cell):
        parts = by_cell.pop(cell)  # freed as the cells go
        counts = [(shard, len(lengths)) for shard, lengths in parts]
        order = draw(seed, cell, counts)
        # The document each draw takes: its shard's next one; shards' runs lie end to end.
        taken = np.empty(len(order), dtype=np.int64)
        taken[np.argsort(order, kind="stable")] = np.arange(len(order))
        lengths = np.concatenate([lengths for _, lengths in parts])[taken]
        del taken, order
        ends = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        for part, (start, end) in enumerate(file_bounds(lengths, max_tokens)):
            files.append({"cell": cell, "part": part, "start": start, "end": end,
                          "tokens": int(ends[end] - ends[start]), "documents": end - start})
        cells.append({"cell": cell, "shards": counts})
    # Contiguous runs of about equal size (tokens, and one per file so empty documents count too).
    weights = np.array([f["tokens"] + 1 for f in files], dtype=np.float64)
    middles = np.cumsum(weights) - weights / 2
    for file, middle in zip(files, middles):
        file["task"] = min(tasks - 1, int(middle * tasks / weights.sum()))
    return {"cells": cells, "files": files}


def groups_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    write = params["write"]
    grouping = plan_files(params["count_artifacts"], params["count_shards"], write["seed"], write["max_tokens_per_file"],
                        params["tasks"])
    artifact = commit_artifact(output_url, GROUPS, json.dumps(grouping, separators=(",", ":")).encode())
    listing = pa.table({"files": [len(grouping["files"])]})
    return commit_shard(shard["shard"], output_url, listing, docs_in=sum(f["documents"] for f in grouping["files"]),
                        artifacts=[artifact], files=len(grouping["files"]), cells=len(grouping["cells"]))


def read_groups(url: str) -> dict:
    return json.loads(storage.read_bytes(url))
