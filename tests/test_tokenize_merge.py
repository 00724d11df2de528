"""The tokenize stage's merge as one task per run of files (issue #31): the groups step cuts the
files, any number of merge tasks write them, and the bytes are those of the single-task merge
it replaced (kept below as the reference), with empty cells, empty tasks and odd task counts."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from stage_runner import run_plan
from tokenfile_reader import read_megatron, read_nanotron

from fineflow import registry, storage
from fineflow.artifacts import commit_artifact, commit_artifact_file
from fineflow.counters import merge_counts
from fineflow.documents import commit_shard
from fineflow.manifest import StepLocation
from fineflow.planning import plan_stage
from fineflow.steps import Source, StageInputs
from fineflow.tasks.tokenize.count import provenance_artifact, tokens_artifact
from fineflow.tasks.tokenize.groups import GROUPS, file_bounds, read_groups
from fineflow.tasks.tokenize.report import summary_fields
from fineflow.tasks.tokenize.tokenfiles import WRITERS

LANGUAGES = ["ar", "de", "en", "fr", "xx"]  # xx: every copy repeated 0 times, an empty cell


def _documents(folder: Path, shards: int = 8, per_shard: int = 20) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for shard in range(shards):
        rows = range(shard * per_shard, (shard + 1) * per_shard)
        languages = [LANGUAGES[(row * 7 + shard) % len(LANGUAGES)] for row in rows]
        texts = [" ".join(f"word{int(w)}" for w in rng.integers(0, 500, size=int(rng.integers(0, 60)))) for _ in rows]
        repeats = [0 if language == "xx" else int(rng.integers(0, 3)) for language in languages]
        pq.write_table(pa.table({
            "id": [f"d{row}" for row in rows], "url": [f"https://site{row % 9}.org/{row}" for row in rows],
            "text": texts, "language": languages, "repeats": pa.array(repeats, pa.int32()),
        }), folder / f"part-{shard:05d}.parquet")
    return folder


def _plans(config: dict, root: Path, folder: Path) -> dict:
    shards = len(list(folder.glob("part-*.parquet")))
    plans = plan_stage(registry.validate_stage(config), str(root), StageInputs((Source("docs", "f" * 20, str(folder), shards),)),
                       "tokenize")
    return {plan.step: plan for plan in plans}


# -- the single-task merge before the groups step (fineflow 3692a0c), the bytes to match -------------


def _reference_merge(params: dict, location: StepLocation) -> dict:
    output_url = location.shard_url(0)
    write = params["write"]

    def provenance_of(shard: int) -> pa.Table:
        table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(params["count_artifacts"], provenance_artifact(shard)))))
        return table.append_column("shard", pa.array(np.full(table.num_rows, shard, dtype=np.int64)))

    provenance = pa.concat_tables([provenance_of(n) for n in range(params["count_shards"])])
    dtype = np.dtype(write["dtype"]).newbyteorder("<")
    files_table, artifacts, data_args = [], [], []
    written_tokens: dict[str, int] = defaultdict(int)
    written_documents: dict[str, int] = defaultdict(int)

    def finish(writer, rows, order, folder, cell):  # noqa: ANN001, ANN202
        names = writer.close()
        sidecar = rows.take(pa.array(order, pa.int64())).drop_columns(["cell", "shard"])
        sidecar = pa.table({"document": pa.array(np.arange(len(order)), pa.int64()), **{c: sidecar[c] for c in sidecar.column_names}})
        sidecar_name = f"{writer.prefix}.provenance.parquet"
        pq.write_table(sidecar, os.path.join(folder, sidecar_name), compression="zstd")
        for name in [*names, sidecar_name]:
            artifacts.append(commit_artifact_file(output_url, name, os.path.join(folder, name)))
            os.unlink(os.path.join(folder, name))
        files_table.append({"file": names[0], "cell": cell, "documents": len(order), "tokens": writer.tokens})
        data_args.append((writer.tokens, writer.prefix))

    cells = sorted(set(provenance["cell"].to_pylist()))
    with tempfile.TemporaryDirectory() as folder:
        for cell in cells:
            rows = provenance.filter(pc.equal(provenance["cell"], cell))
            shard_of_row = rows["shard"].to_numpy()
            queues = {n: np.flatnonzero(shard_of_row == n) for n in np.unique(shard_of_row)}
            seed = [write["seed"], int.from_bytes(hashlib.sha256(cell.encode()).digest()[:8], "little")]
            draw = np.random.default_rng(seed).permutation(shard_of_row)
            streams = {n: storage.open_input(storage.join(params["count_artifacts"], tokens_artifact(cell, int(n)))) for n in queues}
            taken = dict.fromkeys(queues, 0)
            lengths = rows["n_tokens"].to_numpy()
            order, part, writer = [], 0, None
            for n in draw:
                row = int(queues[n][taken[n]])
                taken[n] += 1
                if writer is not None and writer.tokens and writer.tokens + lengths[row] > write["max_tokens_per_file"]:
                    finish(writer, rows, order, folder, cell)
                    writer, order, part = None, [], part + 1
                if writer is None:
                    writer = WRITERS[write["format"]](folder, f"{cell}-{part:05d}", write["dtype"], write["tokenizer"])
                writer.add(np.frombuffer(streams[n].read(int(lengths[row]) * dtype.itemsize), dtype=dtype))
                order.append(row)
            if writer is not None:
                finish(writer, rows, order, folder, cell)
            for stream in streams.values():
                stream.close()
            written_tokens[cell] = int(lengths.sum())
            written_documents[cell] = rows.num_rows
        if write["format"] == "megatron" and data_args:
            text = "".join(f"{tokens} {prefix}\n" for tokens, prefix in data_args)
            artifacts.append(commit_artifact(output_url, "data_args.txt", text.encode()))
    listing = pa.Table.from_pylist(files_table, schema=pa.schema(
        [("file", pa.string()), ("cell", pa.string()), ("documents", pa.int64()), ("tokens", pa.int64())]))
    return commit_shard(0, output_url, listing, docs_in=provenance.num_rows, artifacts=artifacts,
                        written_tokens=dict(written_tokens), written_documents=dict(written_documents), token_files=len(files_table))


def _files(folder: str) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(Path(folder).glob("*"))}  # none: no folder


@pytest.fixture(scope="module")
def counted(tmp_path_factory) -> tuple[Path, Path, dict]:
    """Four shards counted once (gpt2, partitioned by language, repeats 0 to 2), with the reference merge's files."""
    base = tmp_path_factory.mktemp("merge")
    folder = _documents(base / "docs")
    references = {}
    for write in ("megatron", "nanotron"):
        config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2"}, "write": write, "partition_by": ["language"],
                  "max_tokens_per_file": 300, "seed": 5, "merge_tasks": 1}
        plans = _plans(config, base / "root", folder)
        run_plan(plans["count"])
        merge = plans["merge"]
        location = StepLocation(str(base / "reference"), "tokenize", "merge", write)
        result = _reference_merge(merge.params, location)
        references[write] = (config, _files(location.artifacts_folder), (result["stats"], result.get("artifacts", [])))
    return base, folder, references


def _summary(stats: dict, artifacts: list[dict]) -> dict:
    """The run summary's ``token_files``, its URLs reduced to names (the two runs write to two folders)."""
    step = {**stats, "artifacts": [f"/x/{a['file']}" for a in artifacts], "output": "/x/data"}
    fields = summary_fields({"count": {}, "stats": {}, "merge": step})["token_files"]
    return {**fields, "folder": None, "data_args": fields["data_args"] and Path(fields["data_args"]).name}


def _merged(config: dict, base: Path, folder: Path) -> tuple[dict, dict, list[dict]]:
    plans = _plans(config, base / "root", folder)
    run_plan(plans["groups"])
    results = run_plan(plans["merge"])
    return _files(plans["merge"].location.artifacts_folder), read_groups(plans["groups"].location.artifact_url(GROUPS)), results


@pytest.mark.parametrize(("write", "tasks"), [("megatron", 1), ("megatron", 3), ("megatron", 7), ("nanotron", 5)])
def test_any_number_of_merge_tasks_writes_the_single_task_bytes(counted, write, tasks):
    base, folder, references = counted
    config, expected, (stats, stats_artifacts) = references[write]
    files, grouping, results = _merged({**config, "merge_tasks": tasks}, base, folder)
    assert len(results) == tasks
    # The same files, byte for byte: token files, indexes, provenance sidecars, data_args.txt.
    assert sorted(files) == sorted(expected) and len(expected) > 10
    assert [name for name in files if files[name] != expected[name]] == []
    assert ("data_args.txt" in files) == (write == "megatron")
    # The run summary's token_files numbers: the tasks' counters summed as the engine sums them.
    totals = merge_counts(r["stats"] for r in results)
    for key in ("written_tokens", "written_documents", "token_files", "docs_in"):
        assert totals[key] == stats[key], key
    assert _summary(totals, [a for r in results for a in r.get("artifacts", [])]) == _summary(stats, stats_artifacts)
    # Several files per cell, no file for the empty cell, and the work spread over the tasks.
    cells = {f["cell"] for f in grouping["files"]}
    assert len(cells) == 4 and "language=xx" not in cells
    assert all(sum(f["cell"] == cell for f in grouping["files"]) > 1 for cell in cells)
    busy = {f["task"] for f in grouping["files"]}
    assert len(busy) == min(tasks, len(grouping["files"]))
    if 1 < tasks < len(grouping["files"]):  # some cell's files are split between tasks
        assert any(len({f["task"] for f in grouping["files"] if f["cell"] == cell}) > 1 for cell in cells)


def test_more_tasks_than_files_and_than_shards(counted, tmp_path):
    """One file per cell, 7 tasks: three idle; 64 asked of 8 shards: 8 tasks. The same bytes."""
    base, folder, references = counted
    config = {**references["megatron"][0], "max_tokens_per_file": 10**9}
    plans = _plans({**config, "merge_tasks": 1}, base / "root", folder)
    run_plan(plans["count"])
    reference = StepLocation(str(tmp_path), "tokenize", "merge", "big")
    stats = _reference_merge(plans["merge"].params, reference)["stats"]
    for tasks, planned in ((7, 7), (64, 8)):
        files, grouping, results = _merged({**config, "merge_tasks": tasks}, base, folder)
        assert len(results) == planned and len(grouping["files"]) == 4
        assert files == _files(reference.artifacts_folder)
        assert sum(r["stats"]["token_files"] == 0 for r in results) == planned - 4  # idle: an empty listing
        assert merge_counts(r["stats"] for r in results)["written_tokens"] == stats["written_tokens"]


def test_the_files_read_back_with_the_format_readers(counted):
    base, folder, references = counted
    for write, read in (("megatron", read_megatron), ("nanotron", read_nanotron)):
        config, _, (stats, _) = references[write]
        _merged({**config, "merge_tasks": 2}, base, folder)
        artifacts = Path(_plans({**config, "merge_tasks": 2}, base / "root", folder)["merge"].location.artifacts_folder)
        suffix = ".idx" if write == "megatron" else ".ds.index"
        documents, tokens = 0, 0
        for index in sorted(artifacts.glob(f"*{suffix}")):
            prefix = str(index)[: -len(suffix)]
            ids = read(prefix)
            sidecar = pq.read_table(f"{prefix}.provenance.parquet")
            assert [len(doc) for doc in ids] == sidecar["n_tokens"].to_pylist()
            documents, tokens = documents + len(ids), tokens + sum(map(len, ids))
        assert documents and (documents, tokens) == (sum(stats["written_documents"].values()), sum(stats["written_tokens"].values()))


def test_nothing_written_commits_empty_tasks_and_no_data_args(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"], "language": ["en", "ar"], "repeats": pa.array([0, 0], pa.int32())}),
                   folder / "part-00000.parquet")
    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2"}, "write": "megatron", "partition_by": ["language"], "merge_tasks": 3}
    plans = _plans(config, tmp_path / "root", folder)
    run_plan(plans["count"])
    files, grouping, results = _merged(config, tmp_path, folder)
    assert files == {} and grouping == {"cells": [], "files": []}
    assert merge_counts(r["stats"] for r in results)["docs_in"] == 0


def _sequential_bounds(lengths: list[int], limit: int) -> list[tuple[int, int]]:
    """The single-task merge's rule, one document at a time."""
    bounds, start, tokens = [], 0, 0
    for index, length in enumerate(lengths):
        if tokens and tokens + length > limit:
            bounds.append((start, index))
            start, tokens = index, 0
        tokens += length
    return [*bounds, (start, len(lengths))] if lengths else bounds


@pytest.mark.parametrize("seed", range(20))
def test_file_bounds_follow_the_one_document_at_a_time_rule(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.choice([0, 0, 1, 5, 20, 99, 100, 101, 350], size=int(rng.integers(0, 200))).tolist()
    limit = int(rng.choice([1, 50, 100, 300, 10_000]))
    assert file_bounds(np.array(lengths, dtype=np.int64), limit) == _sequential_bounds(lengths, limit)
