"""Exact-substring dedup on web-small's extracted text: seconds and memory per chunk.

    .venv/bin/python bench/substring_bench.py [--chunk-mib 8,32] [--threshold 100]

The documents are dedup_bench's (fineflow's crawl step, resiliparse, text/plain included; cached
in bench/results). Each chunk size runs in its own process so its peak RSS is its own; inside,
tracemalloc gives the peak of the Python and numpy allocations of the worst chunk (the suffix
array, its LCP array and the masks). Writes bench/results/substring-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from common import machine_info, save_record
from dedup_bench import extract_documents

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path("/work/shared/corpus/web-small")


def worker(cache: str, chunk_mib: int, threshold: int) -> dict:
    import pyarrow.parquet as pq

    from fineflow.tasks.dedup import substring

    texts = [t or "" for t in pq.read_table(cache, columns=["text"]).column("text").to_pylist()]
    encoded = [t.encode() for t in texts]
    rows_per_chunk = list(substring.chunks(encoded, chunk_mib * 2**20))
    per_chunk = []
    for rows in rows_per_chunk:
        data = bytes([substring.SEPARATOR]).join(encoded[r] for r in rows)
        tracemalloc.start()
        started = time.perf_counter()
        mask = substring.removed_mask(data, threshold)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        per_chunk.append({"bytes": len(data), "docs": len(rows), "seconds": round(seconds, 2), "traced_peak_mb": round(peak / 2**20, 1), "removed_bytes": int(mask.sum())})
    started = time.perf_counter()
    _, spans, removed, _ = substring.dedup_texts(texts, substring.SubstringDedup(length_threshold=threshold, chunk_bytes=chunk_mib * 2**20, min_chars=0))
    return {
        "chunk_mib": chunk_mib,
        "threshold": threshold,
        "docs": len(texts),
        "text_bytes": sum(map(len, encoded)),
        "chunks": per_chunk,
        "end_to_end_seconds": round(time.perf_counter() - started, 2),
        "docs_cut": sum(1 for n in spans if n),
        "spans_removed": sum(spans),
        "bytes_removed": sum(removed),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk-mib", default="8,32")
    parser.add_argument("--threshold", type=int, default=100)
    parser.add_argument("--worker", nargs=3)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))))
        return
    cache, info = extract_documents(CORPUS)
    load = Path("/proc/loadavg").read_text().split()[:3]
    runs = []
    for chunk_mib in (int(x) for x in args.chunk_mib.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", str(cache), str(chunk_mib), str(args.threshold)],
            check=True, capture_output=True, text=True,
        )
        runs.append(json.loads(out.stdout))
        print(json.dumps(runs[-1]), file=sys.stderr)
    table = ["| chunk | chunks | text MB | worst chunk s | worst traced peak MB | max RSS MB | bytes removed |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        table.append(
            f"| {run['chunk_mib']} MiB | {len(run['chunks'])} | {run['text_bytes'] / 1e6:.1f} | {max(c['seconds'] for c in run['chunks'])} "
            f"| {max(c['traced_peak_mb'] for c in run['chunks'])} | {run['max_rss_mb']} | {run['bytes_removed']:,} |"
        )
    record = {"machine": machine_info(("fineflow", "pydivsufsort")), "load_average": load, "input": info, "runs": runs, "table": "\n".join(table)}
    path = save_record(record, "substring")
    print(path)


if __name__ == "__main__":
    main()
