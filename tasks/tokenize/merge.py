"""The merge step (one task per run of files from the groups step): the shards' shuffled token
runs interleaved into token files.

For each cell, every document's shard is drawn in a seeded random order (a random permutation
of ``[shard] * documents(shard)``, as datatrove's merger does) and the shard's next document is
copied: with the per-shard shuffle of the count step this is a global shuffle that never holds a
cell in memory. Files roll over at ``max_tokens_per_file`` (at a document boundary); each gets a
provenance sidecar ``<prefix>.provenance.parquet`` (document index -> id, url, language, source
shard, row, copy). ``data_args.txt`` lists ``weight prefix`` lines for Megatron's
``--data-args-path``, weighted by tokens, each prefix relative to the file's own folder (the
token files sit beside it), so the folder can be copied or mounted anywhere (``fineflow
data-args`` rewrites them for another root).

The groups step has cut the files and given each to one of ``tasks`` merge tasks (contiguous
runs: whole small cells, or a slice of a large cell's files). A task redraws each of its cells'
order, finds where its run starts in every shard (documents and tokens drawn before it), reads
only its rows of each shard's provenance and seeks each shard's token run to its first token.
What it holds: one count shard's provenance table while it reads it, the provenance rows of its
own files, one cell's draw (2 to 4 bytes per document of the cell), one document's tokens and a
read buffer per shard no larger than what it reads from that shard (at most 4 MiB). Task 0 also
writes ``data_args.txt`` from the groups step. The files are the same bytes for any number of tasks.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fineflow import storage
from fineflow.artifacts import commit_artifact, commit_artifact_file
from fineflow.documents import commit_shard
from fineflow.tasks.tokenize.count import provenance_artifact, tokens_artifact
from fineflow.tasks.tokenize.groups import draw, read_groups
from fineflow.tasks.tokenize.tokenfiles import WRITERS

STEP_VERSION = "3"  # 2: data_args.txt prefixes relative to it; 3: one task per run of files from the groups step
LIBRARIES = ("numpy", "pyarrow")

DATA_ARGS = "data_args.txt"
MAX_BUFFER = 4 * 1024 * 1024  # read-ahead per shard's token run
MIN_BUFFER = 64 * 1024


class _ShardStream:
    """One count shard's token run for a cell, read front to back from a token offset."""

    def __init__(self, url: str, itemsize: int, first_token: int, tokens: int) -> None:
        self.handle = storage.open_input(url, block_size=min(MAX_BUFFER, max(MIN_BUFFER, tokens * itemsize)))
        self.handle.seek(first_token * itemsize)
        self.itemsize = itemsize

    def read(self, tokens: int) -> bytes:
        data = self.handle.read(tokens * self.itemsize)
        if len(data) != tokens * self.itemsize:
            raise ValueError("a count shard's token file is shorter than its provenance says: re-run the count step")
        return data


def _cell_runs(files: list[dict], documents: dict[str, list[tuple[int, int]]], seed: int, count_shards: int) -> dict:
    """Per cell of this task's files: the draw over the task's positions, and per shard the
    documents drawn before them (skipped) and among them (taken)."""
    runs = {}
    for cell in dict.fromkeys(f["cell"] for f in files):
        own = [f for f in files if f["cell"] == cell]
        first, last = own[0]["start"], own[-1]["end"]
        order = draw(seed, cell, documents[cell])
        skipped = np.bincount(order[:first], minlength=count_shards)
        segment = order[first:last].copy()
        del order
        taken = np.bincount(segment, minlength=count_shards)
        runs[cell] = {"first": first, "segment": segment, "files": own,
                      "shards": {int(n): (int(skipped[n]), int(taken[n])) for n in np.flatnonzero(taken)}}
    return runs


def _read_rows(count_artifacts: str, runs: dict) -> None:
    """Each needed shard's provenance read once: per cell the rows this task takes (``rows``, in
    shard order) and the token offset of the first one in the shard's run (``offsets``)."""
    needed = sorted({n for run in runs.values() for n in run["shards"]})
    for run in runs.values():
        run["rows"], run["offsets"] = {}, {}
    for n in needed:
        table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(count_artifacts, provenance_artifact(n)))))
        for cell, run in runs.items():
            if n not in run["shards"]:
                continue
            skipped, taken = run["shards"][n]
            rows = table.filter(pc.equal(table["cell"], cell))
            if rows.num_rows < skipped + taken:
                raise ValueError(f"count shard {n} has fewer documents of {cell} than the groups step says: re-run the groups step")
            run["offsets"][n] = int(pc.sum(rows["n_tokens"].slice(0, skipped)).as_py() or 0)
            # A copy of the taken rows only (a slice would keep the whole shard's table alive).
            run["rows"][n] = rows.take(pa.array(np.arange(skipped, skipped + taken), pa.int64()))
        del table


def merge_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    write = params["write"]
    grouping = read_groups(params["groups"])
    files = [f for f in grouping["files"] if f["task"] == shard["shard"]]
    documents = {c["cell"]: [tuple(pair) for pair in c["shards"]] for c in grouping["cells"]}
    runs = _cell_runs(files, documents, write["seed"], params["count_shards"])
    _read_rows(params["count_artifacts"], runs)
    dtype = np.dtype(write["dtype"]).newbyteorder("<")
    writer_class = WRITERS[write["format"]]
    files_table, artifacts = [], []
    written_tokens: dict[str, int] = defaultdict(int)
    written_documents: dict[str, int] = defaultdict(int)
    with tempfile.TemporaryDirectory(prefix="fineflow-merge-") as folder:
        for cell, run in runs.items():
            shards = sorted(run["rows"])
            rows = pa.concat_tables([run["rows"][n] for n in shards])
            run["rows"] = None
            segment = run["segment"]
            # The row each draw takes: its shard's next one (the shards' rows lie end to end, in order).
            row_of = np.empty(len(segment), dtype=np.int64)
            row_of[np.argsort(segment, kind="stable")] = np.arange(len(segment))
            lengths = rows["n_tokens"].to_numpy()
            reads = np.bincount(segment, weights=lengths[row_of], minlength=params["count_shards"])  # tokens per shard
            streams = {n: _ShardStream(storage.join(params["count_artifacts"], tokens_artifact(cell, n)), dtype.itemsize,
                                       run["offsets"][n], int(reads[n])) for n in shards}
            for file in run["files"]:
                writer = writer_class(folder, f"{cell}-{file['part']:05d}", write["dtype"], write["tokenizer"])
                positions = range(file["start"] - run["first"], file["end"] - run["first"])
                order = [int(row_of[p]) for p in positions]
                for p, row in zip(positions, order):
                    writer.add(np.frombuffer(streams[int(segment[p])].read(int(lengths[row])), dtype=dtype))
                if writer.tokens != file["tokens"]:
                    raise ValueError(f"{writer.prefix}: {writer.tokens} tokens, the groups step says {file['tokens']}: re-run the groups step")
                artifacts += _finish(writer, rows, order, output_url, folder, files_table, cell)
                written_tokens[cell] += writer.tokens
                written_documents[cell] += len(order)
            for stream in streams.values():
                stream.handle.close()
    if shard["shard"] == 0 and write["format"] == "megatron" and grouping["files"]:
        # Beside the token files: relative prefixes, never this machine's path.
        text = "".join(f"{f['tokens']} {f['cell']}-{f['part']:05d}\n" for f in grouping["files"])
        artifacts.append(commit_artifact(output_url, DATA_ARGS, text.encode()))
    listing = pa.Table.from_pylist(files_table, schema=pa.schema(
        [("file", pa.string()), ("cell", pa.string()), ("documents", pa.int64()), ("tokens", pa.int64())]))
    return commit_shard(
        shard["shard"], output_url, listing, docs_in=sum(f["documents"] for f in files), artifacts=artifacts,
        written_tokens=dict(written_tokens), written_documents=dict(written_documents), token_files=len(files_table),
    )


def _finish(writer, rows: pa.Table, order: list[int], output_url: str, folder: str, files_table: list,
            cell: str) -> list[dict]:  # noqa: ANN001
    """Close a token file, write its provenance sidecar, commit all of them."""
    names = writer.close()
    sidecar = rows.take(pa.array(order, pa.int64())).drop_columns(["cell"])
    sidecar = pa.table({"document": pa.array(np.arange(len(order)), pa.int64()), **{c: sidecar[c] for c in sidecar.column_names}})
    sidecar_name = f"{writer.prefix}.provenance.parquet"
    pq.write_table(sidecar, os.path.join(folder, sidecar_name), compression="zstd")
    committed = [commit_artifact_file(output_url, name, os.path.join(folder, name)) for name in [*names, sidecar_name]]
    for name in [*names, sidecar_name]:
        os.unlink(os.path.join(folder, name))
    files_table.append({"file": names[0], "cell": cell, "documents": len(order), "tokens": writer.tokens})
    return committed
