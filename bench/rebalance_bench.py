"""Rebalance-stage time and memory on web-small x 16, against FineWeb2's way of rehydrating (a
datatrove pipeline step that repeats each document by its weight as it streams past).

    .venv/bin/python bench/rebalance_bench.py [--corpus DIR] [--copies 16] [--datatrove-python PY] [--out FILE]

Input: web-small's documents (trafilatura, filter_bench.py's cached crawl), each copied
``--copies`` times under new ids, one shard per copy, with their texts, exact GPT-2 counts
(``n_tokens_gpt2``, end-of-text included), a duplicate-cluster size drawn from a seeded
heavy-tailed distribution and a quality level 0-4.

Sides, each in a fresh process on one core, compute only (no Prefect or Dask):
- fineflow, ``rehydrate``: the rebalance stage's steps in order (measure each shard, solve,
  apply each shard) with FineWeb2's README weights per cluster size, no budget: every document at
  its weight. Output: each document once with ``repeats``.
- fineflow, ``budget``: the same documents in cells language x quality level, half the natural
  tokens as the budget, English 50 %, quality weights 1/1/2/3/3, max 4 epochs.
- datatrove 0.10.1: ParquetReader -> a step repeating each document by the same weight table ->
  ParquetWriter, one task per shard (``LocalPipelineExecutor``, 1 worker). Output: each copy
  written out. The copies per id are compared with fineflow's ``repeats``.
Peak RSS is each process' ``VmHWM``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import ROOT, machine_info, table_head

RESULTS = ROOT / "bench" / "results"
README_TABLE = {1: 1, 2: 2, 3: 3, 5: 5, 100: 8, 1000: 1}  # FineWeb2's misc/rehydration README


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def prepare(corpus: Path, copies: int, work: Path) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from filter_bench import extracted_documents

    from fineflow.tasks.tokenize.config import TokenizerSpec
    from fineflow.tasks.tokenize.encoders import describe, load_encoder

    docs, info = extracted_documents(corpus, workers=2)
    encoder = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2")))
    counts = [n + encoder.specials for n in encoder.count_texts([d["text"] or "" for d in docs])]
    rng = np.random.default_rng(0)
    folder = work / "input"
    folder.mkdir(parents=True)
    for copy in range(copies):
        n = len(docs)
        # Mostly singletons, a long tail of larger clusters (sizes up to 5,000).
        sizes = np.where(rng.random(n) < 0.6, 1, np.minimum(rng.zipf(1.6, n) + 1, 5000))
        table = pa.table({
            "id": [f"{d['id']}#{copy}" for d in docs], "url": [d["url"] for d in docs], "text": [d["text"] for d in docs],
            "language": [d["language"] for d in docs], "n_tokens_gpt2": pa.array(counts, pa.int64()),
            "dup_cluster_size": pa.array(sizes, pa.int32()), "quality_level": pa.array(rng.integers(0, 5, n), pa.int8()),
        })
        pq.write_table(table, folder / f"part-{copy:05d}.parquet", compression="zstd")
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    return {"documents": len(docs) * copies, "shards": copies, "input_bytes": size, "tokens": sum(counts) * copies,
            "crawl": info}


def fineflow_side(work: Path, mode: str) -> dict:
    import pyarrow.parquet as pq

    from fineflow import registry
    from fineflow.manifest import write_manifest
    from fineflow.planning import plan_stage
    from fineflow.steps import Source, StageInputs, run_shard

    folder = work / "input"
    shards = len(list(folder.glob("part-*.parquet")))
    config = {"stage": "rebalance", "tokens": "gpt2", "cells": ["language"], "max_epochs": 8, "rehydration": {"weights": "readme"}}
    if mode == "budget":
        config = {"stage": "rebalance", "tokens": "gpt2", "cells": ["language", "quality_level"], "max_epochs": 4,
                  "budget": int(json.loads((work / "prepared.json").read_text())["tokens"] * 0.5),
                  "targets": {"en": {"share": 0.5}, "*": {"share": 0.5}}, "on_shortfall": "report",
                  "quality": {"weights": {"0": 1, "1": 1, "2": 2, "3": 3, "4": 3}}}
    plans = plan_stage(registry.validate_stage(config), str(work / f"store-{mode}"),
                       StageInputs((Source("docs", "f" * 20, str(folder), shards),)), "rebalance")
    steps = {}
    started = time.perf_counter()
    cpu = time.process_time()
    for plan in plans:
        step_started = time.perf_counter()
        results = [run_shard(plan.function, shard, plan.params, plan.location) for shard in plan.shards]
        write_manifest(plan.location, plan.fingerprint.components, results, plan.name)
        steps[plan.step] = round(time.perf_counter() - step_started, 2)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    apply_plan = plans[-1]
    repeats = {}
    for path in Path(apply_plan.location.data_folder).glob("*.parquet"):
        table = pq.read_table(path, columns=["id", "repeats"])
        repeats.update(zip(table["id"].to_pylist(), table["repeats"].to_pylist()))
    (work / f"repeats-{mode}.json").write_text(json.dumps(repeats))
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "steps": steps, "peak_rss_mb": _peak_rss_mb(),
            "documents_out": len(repeats), "copies": sum(repeats.values())}


def datatrove_side(work: Path) -> dict:
    import bisect

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    limits = sorted(README_TABLE)

    class RepeatByClusterSize(PipelineStep):
        name = "repeat by cluster size"

        def run(self, data, rank: int = 0, world_size: int = 1):  # noqa: ANN001, ANN201
            for document in data:
                size = document.metadata["dup_cluster_size"]
                for _ in range(README_TABLE[limits[bisect.bisect_right(limits, size) - 1]]):
                    yield document

    shards = len(list((work / "input").glob("part-*.parquet")))
    started, cpu = time.perf_counter(), time.process_time()
    LocalPipelineExecutor(
        pipeline=[ParquetReader(str(work / "input")), RepeatByClusterSize(), ParquetWriter(str(work / "datatrove-out"))],
        tasks=shards, workers=1, logging_dir=str(work / "datatrove-logs"),
    ).run()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    import pyarrow.parquet as pq

    copies: dict[str, int] = {}
    for path in (work / "datatrove-out").glob("*.parquet"):
        for doc_id in pq.read_table(path, columns=["id"])["id"].to_pylist():
            copies[doc_id] = copies.get(doc_id, 0) + 1
    (work / "copies-datatrove.json").write_text(json.dumps(copies))
    size = sum(p.stat().st_size for p in (work / "datatrove-out").glob("*.parquet"))
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "peak_rss_mb": _peak_rss_mb(),
            "documents_out": sum(copies.values()), "output_bytes": size}


def _run(python: str, side: str, work: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
           "POLARS_MAX_THREADS": "1", "ARROW_NUM_THREADS": "1"}
    done = subprocess.run([python, __file__, "--side", side, "--work", str(work)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "web-small")
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--datatrove-python", default=str(ROOT / "bench" / ".venv-datatrove" / "bin" / "python"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--side")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.side:  # a side, in its own process
        result = datatrove_side(args.work) if args.side == "datatrove" else fineflow_side(args.work, args.side)
        print(json.dumps(result))
        return
    machine = machine_info(("fineflow", "pyarrow", "numpy"))
    with tempfile.TemporaryDirectory(prefix="rebalance-bench-") as tmp:
        work = Path(tmp)
        prepared = prepare(args.corpus, args.copies, work)
        (work / "prepared.json").write_text(json.dumps(prepared))
        sides = {"rehydrate": _run(sys.executable, "rehydrate", work), "budget": _run(sys.executable, "budget", work),
                 "datatrove": _run(args.datatrove_python, "datatrove", work)}
        ours = json.loads((work / "repeats-rehydrate.json").read_text())
        theirs = json.loads((work / "copies-datatrove.json").read_text())
        agree = {doc_id: n for doc_id, n in ours.items() if theirs.get(doc_id) == n}
        check = {"documents_compared": len(ours), "same_copies": len(agree) == len(ours) == len(theirs)}
    record = {"machine": machine, "prepared": prepared, "sides": sides, "check": check,
              "when": datetime.now().isoformat(timespec="seconds")}
    out = args.out or RESULTS / f"rebalance-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    lines = table_head("side", "documents in", "copies out", "wall s", "CPU s", "docs/s per core", "ratio", "peak RSS")
    reference = sides["datatrove"]["cpu_seconds"]
    for name, side in sides.items():
        copies = side.get("copies", side["documents_out"])
        lines.append(f"| {name} | {prepared['documents']:,} | {copies:,} | {side['seconds']} | {side['cpu_seconds']} | "
                     f"{prepared['documents'] / side['cpu_seconds']:,.0f} | {reference / side['cpu_seconds']:.2f}× | "
                     f"{side['peak_rss_mb']} MB |")
    print("\n".join(lines))
    print(f"\nsteps: {json.dumps({k: v.get('steps') for k, v in sides.items() if 'steps' in v})}")
    print(f"check: {json.dumps(check)}; load average at start: {machine['load_average']}; raw: {out}")


if __name__ == "__main__":
    main()
