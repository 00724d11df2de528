"""The merge step (one task): the shards' shuffled token runs interleaved into token files.

For each cell, every document's shard is drawn in a seeded random order (a random permutation
of ``[shard] * documents(shard)``, as datatrove's merger does) and the shard's next document is
copied: with the per-shard shuffle of the count step this is a global shuffle that never holds a
cell in memory. Each shard is read sequentially through its own buffered stream. Files roll over
at ``max_tokens_per_file`` (at a document boundary); each gets a provenance sidecar
``<prefix>.provenance.parquet`` (document index -> id, url, language, source shard, row, copy).
``data_args.txt`` lists ``weight prefix`` lines for Megatron's ``--data-args-path``, weighted by
tokens, each prefix relative to the file's own folder (the token files sit beside it), so the
folder can be copied or mounted anywhere (``fineflow data-args`` rewrites them for another root).
"""

from __future__ import annotations

import hashlib
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
from fineflow.tasks.tokenize.tokenfiles import WRITERS

STEP_VERSION = "2"  # 2: data_args.txt prefixes relative to it
LIBRARIES = ("numpy", "pyarrow")

DATA_ARGS = "data_args.txt"


def _cell_seed(seed: int, cell: str) -> list[int]:
    return [seed, int.from_bytes(hashlib.sha256(cell.encode()).digest()[:8], "little")]


class _ShardStream:
    """One count shard's token run for a cell, read front to back."""

    def __init__(self, url: str, itemsize: int) -> None:
        self.handle = storage.open_input(url, block_size=4 * 1024 * 1024)
        self.itemsize = itemsize

    def read(self, tokens: int) -> bytes:
        data = self.handle.read(tokens * self.itemsize)
        if len(data) != tokens * self.itemsize:
            raise ValueError("a count shard's token file is shorter than its provenance says: re-run the count step")
        return data


def _provenance(count_artifacts: str, shard: int) -> pa.Table:
    table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(count_artifacts, provenance_artifact(shard)))))
    return table.append_column("shard", pa.array(np.full(table.num_rows, shard, dtype=np.int64)))


def merge_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    write = params["write"]
    provenance = pa.concat_tables([
        _provenance(params["count_artifacts"], n) for n in range(params["count_shards"])
    ]) if params["count_shards"] else None
    dtype = np.dtype(write["dtype"]).newbyteorder("<")
    writer_class = WRITERS[write["format"]]
    files_table, artifacts = [], []
    written_tokens: dict[str, int] = defaultdict(int)
    written_documents: dict[str, int] = defaultdict(int)
    data_args = []
    cells = sorted(set(provenance["cell"].to_pylist())) if provenance is not None and provenance.num_rows else []
    with tempfile.TemporaryDirectory(prefix="fineflow-merge-") as folder:
        for cell in cells:
            rows = provenance.filter(pc.equal(provenance["cell"], cell))
            shard_of_row = rows["shard"].to_numpy()
            # Positions of each shard's rows, in the shard's own (already shuffled) order.
            queues = {n: np.flatnonzero(shard_of_row == n) for n in np.unique(shard_of_row)}
            draw = np.random.default_rng(_cell_seed(write["seed"], cell)).permutation(shard_of_row)
            streams = {n: _ShardStream(storage.join(params["count_artifacts"], tokens_artifact(cell, int(n))), dtype.itemsize)
                       for n in queues}
            taken = dict.fromkeys(queues, 0)
            lengths = rows["n_tokens"].to_numpy()
            order = []
            part, writer = 0, None
            for n in draw:
                row = int(queues[n][taken[n]])
                taken[n] += 1
                if writer is not None and writer.tokens and writer.tokens + lengths[row] > write["max_tokens_per_file"]:
                    artifacts += _finish(writer, rows, order, output_url, folder, files_table, data_args, cell)
                    writer, order, part = None, [], part + 1
                if writer is None:
                    writer = writer_class(folder, f"{cell}-{part:05d}", write["dtype"], write["tokenizer"])
                writer.add(np.frombuffer(streams[n].read(int(lengths[row])), dtype=dtype))
                order.append(row)
            if writer is not None:
                artifacts += _finish(writer, rows, order, output_url, folder, files_table, data_args, cell)
            for stream in streams.values():
                stream.handle.close()
            written_tokens[cell] = int(lengths.sum())
            written_documents[cell] = rows.num_rows
        if write["format"] == "megatron" and data_args:
            text = "".join(f"{tokens} {prefix}\n" for tokens, prefix in data_args)
            artifacts.append(commit_artifact(output_url, DATA_ARGS, text.encode()))
    listing = pa.Table.from_pylist(files_table, schema=pa.schema(
        [("file", pa.string()), ("cell", pa.string()), ("documents", pa.int64()), ("tokens", pa.int64())]))
    return commit_shard(
        shard["shard"], output_url, listing, docs_in=provenance.num_rows if provenance is not None else 0, artifacts=artifacts,
        written_tokens=dict(written_tokens), written_documents=dict(written_documents), token_files=len(files_table),
    )


def _finish(writer, rows: pa.Table, order: list[int], output_url: str, folder: str, files_table: list, data_args: list,
            cell: str) -> list[dict]:  # noqa: ANN001
    """Close a token file, write its provenance sidecar, commit all of them."""
    names = writer.close()
    sidecar = rows.take(pa.array(order, pa.int64())).drop_columns(["cell", "shard"])
    sidecar = pa.table({"document": pa.array(np.arange(len(order)), pa.int64()), **{c: sidecar[c] for c in sidecar.column_names}})
    sidecar_name = f"{writer.prefix}.provenance.parquet"
    pq.write_table(sidecar, os.path.join(folder, sidecar_name), compression="zstd")
    committed = [commit_artifact_file(output_url, name, os.path.join(folder, name)) for name in [*names, sidecar_name]]
    for name in [*names, sidecar_name]:
        os.unlink(os.path.join(folder, name))
    files_table.append({"file": names[0], "cell": cell, "documents": len(order), "tokens": writer.tokens})
    data_args.append((writer.tokens, writer.prefix))  # beside data_args.txt: relative, never this machine's path
    return committed
