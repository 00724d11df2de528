"""Snapshot-scale simulation: the bounded-memory reductions over synthetic inputs of millions of
documents, and the planning of a run over 100,000 listed input files (issue #31).

Each reduction runs in a subprocess of its own over inputs generated (shard by shard, in another
subprocess, so generation stays bounded too) in the steps' own formats: its peak RSS is that
process's ``ru_maxrss`` (interpreter and libraries included), its seconds the step's own wall time.
The last line printed is one JSON object::

    {"<reduction>": {"<documents>": {"peak_rss_mb": x, "seconds": y}}, ..., "planning": {...}, "load_average": {...}}

Adding a reduction is one ``@reduction("name")`` function: given the scratch folder, the document
count and the settings, it generates its inputs (``generate``) and returns the step call to
measure (``run``).

    uv run --locked python bench/scale_sim.py --sizes 1e6,3e6 --memory-mb 1024
    uv run --locked python bench/scale_sim.py --quick      # 1e5 documents, 2,000 listed files: a smoke run
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    memory_mb: int
    shard_rows: int  # documents per upstream shard (signature / score shard)
    seed: int = 0


@dataclass(frozen=True)
class Reduction:
    generate: Callable[[Path, int, Settings], dict]  # writes the inputs under the folder; JSON-able params
    run: Callable[[Path, dict, Settings], dict]  # the step call measured; its stats


REDUCTIONS: dict[str, Reduction] = {}


def reduction(name: str, generate: Callable[[Path, int, Settings], dict]):
    def register(run: Callable[[Path, dict, Settings], dict]):
        REDUCTIONS[name] = Reduction(generate, run)
        return run

    return register


def _shards(documents: int, settings: Settings) -> list[int]:
    """Rows of each upstream shard: ``shard_rows`` each, the last one shorter."""
    full, rest = divmod(documents, settings.shard_rows)
    return [settings.shard_rows] * full + ([rest] if rest else [])


# ---------------------------------------------------------------- dedup: cluster (partitioned)

CLUSTERED_SHARE = 0.35  # FineWeb-like: about a third of the documents have a near-duplicate
ZIPF_A = 2.0  # cluster sizes: most are pairs, a long tail of large ones
MAX_CLUSTER = 100_000
EDGE_FILE_MEMBERS = 1_000_000  # cluster members per edge file (the generator's own bound)


def generate_dedup(folder: Path, documents: int, settings: Settings) -> dict:
    import numpy as np
    import polars as pl

    from fineflow.tasks.dedup.signatures import ROW_BITS

    rng = np.random.default_rng(settings.seed)
    rows = _shards(documents, settings)
    signatures = []
    day = 1_704_067_200_000_000  # 2024-01-01 in microseconds
    for shard, count in enumerate(rows):
        row = np.arange(count, dtype=np.int64)
        frame = pl.DataFrame({
            "node": (shard << ROW_BITS) | row,
            "id": [f"doc-{shard}-{r}" for r in range(count)],
            "crawl_date": day + rng.integers(0, 90 * 86_400, count) * 1_000_000,
            "text_chars": rng.lognormal(7.5, 1.0, count).astype(np.int64) + 1,
            "exact_key": rng.integers(0, 2**63, count, dtype=np.uint64),
            "url_key": rng.integers(0, 2**63, count, dtype=np.uint64),
        }, schema={"node": pl.Int64, "id": pl.String, "crawl_date": pl.Int64, "text_chars": pl.Int64,
                   "exact_key": pl.UInt64, "url_key": pl.UInt64})
        missing = pl.Series(rng.random(count) < 0.2)  # a fifth without a URL key
        frame = frame.with_columns(pl.col("crawl_date").cast(pl.Datetime("us", "UTC")),
                                   pl.when(missing).then(None).otherwise(pl.col("url_key")).alias("url_key"))
        signatures.append(str(folder / f"signatures-{shard:05d}.parquet"))
        frame.write_parquet(signatures[-1])
    # clusters: Zipf sizes, distinct members across every shard; each member linked to its cluster's
    # first member (as one band's bucket links them) or, for a third, to an earlier member (another
    # band's), so components take several passes; some pairs repeated (found by several bands)
    offsets = np.concatenate([[0], np.cumsum(rows)])
    target, placed, edge_files, edge_rows, clusters = int(documents * CLUSTERED_SHARE), 0, [], 0, 0
    stride = next(k for k in range(int(documents * 0.618) | 1, 2 * documents + 3, 2) if math.gcd(k, documents) == 1)
    shift = int(rng.integers(0, documents))
    while placed < target:
        sizes = np.minimum(rng.zipf(ZIPF_A, EDGE_FILE_MEMBERS // 3) + 1, MAX_CLUSTER)
        sizes = sizes[np.cumsum(sizes) <= max(EDGE_FILE_MEMBERS, sizes[0])]
        sizes = sizes[np.cumsum(sizes) <= target - placed + sizes[0]]
        # distinct documents, spread over every shard: an affine permutation of 0..documents-1
        members = (np.arange(placed, placed + int(sizes.sum()), dtype=np.int64) * stride + shift) % documents
        shard = np.searchsorted(offsets, members, side="right") - 1
        nodes = (shard << ROW_BITS) | (members - offsets[shard])
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        position = np.arange(members.size) - starts
        earlier = np.where(rng.random(members.size) < 2 / 3, 0, (rng.random(members.size) * position).astype(np.int64))
        keep = position > 0
        a, b = nodes[keep], nodes[(starts + earlier)[keep]]
        again = rng.random(a.size) < 0.2
        a, b = np.concatenate([a, a[again]]), np.concatenate([b, b[again]])
        edges = pl.DataFrame({"a": np.minimum(a, b), "b": np.maximum(a, b)}).filter(pl.col("a") != pl.col("b")).sort("a", "b")
        edge_files.append(str(folder / f"edges-{len(edge_files):05d}.parquet"))
        edges.write_parquet(edge_files[-1])
        placed, edge_rows, clusters = placed + int(sizes.sum()), edge_rows + edges.height, clusters + sizes.size
    return {"edges": edge_files, "signatures": signatures, "upstream_shards": len(rows), "exact": True, "url": True,
            "generated": {"edge_rows": edge_rows, "clusters": clusters, "members": placed}}


@reduction("dedup_cluster", generate_dedup)
def run_dedup(folder: Path, params: dict, settings: Settings) -> dict:
    from fineflow.tasks.dedup.cluster import cluster_shard

    params = {k: v for k, v in params.items() if k != "generated"}
    params["cluster"] = {"mode": "partitioned", "memory_mb": settings.memory_mb, "partitions": "auto"}
    output = folder / "dedup" / "cluster" / "f" / "data" / "part-00000.parquet"
    stats = cluster_shard({"shard": 0}, params, str(output), str(folder / "rejects.parquet"))["stats"]
    keep = ("edges", "clusters", "clustered_docs", "cluster_partitions", "cluster_passes", "cluster_peak_rss_mb")
    return {k: stats[k] for k in keep if k in stats}


# ---------------------------------------------------------------- quality: calibrate (histogram)

LANGUAGES = (["en", "de", "fr", "es", "ru", "zh", "xx"], [0.55, 0.1, 0.1, 0.1, 0.08, 0.0695, 0.0005])


def generate_quality(folder: Path, documents: int, settings: Settings) -> dict:
    """Score shards as the score step writes them (two scorers: skewed probabilities, a 0-5 regression
    score) and each one's summary, as the ``summarize`` map step writes it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fineflow.tasks.quality.summarize import summarize_shard

    rng = np.random.default_rng(settings.seed)
    scores, summaries = [], []
    summarize = {"scorers": ["a", "b"], "per_language": True, "bins": 16_384, "min_distinct_scores": 20}
    for shard, count in enumerate(_shards(documents, settings)):
        tokens = rng.lognormal(6, 1.2, count).astype(np.int64) + 1
        table = pa.table({
            "id": [f"doc-{shard}-{r}" for r in range(count)],
            "language": rng.choice(LANGUAGES[0], count, p=LANGUAGES[1]),
            "w_tokens": tokens, "w_bytes": tokens * 4, "w_chars": tokens * 3,
            "quality_a": rng.beta(0.4, 6, count).astype(np.float32),
            "quality_b": np.clip(rng.normal(2.0, 1.2, count), -1, 6).astype(np.float32),
        })
        scores.append(str(folder / f"scores-{shard:05d}.parquet"))
        pq.write_table(table, scores[-1])
        summaries.append(str(folder / f"summary-{shard:05d}.parquet"))
        summarize_shard({"shard": shard, "scores": scores[-1]}, summarize, summaries[-1], None)
    return {"scores": scores, "summaries": summaries, "scorers": ["a", "b"], "weight": "tokens", "per_language": True,
            "min_docs": 50, "min_distinct_scores": 20, "summary": "histogram", "bins": 16_384, "max_rank_error": 0.001,
            "exact_max_docs": 0}


@reduction("quality_calibrate", generate_quality)
def run_quality(folder: Path, params: dict, settings: Settings) -> dict:
    from fineflow.tasks.quality.calibrate import calibrate_shard

    stats = calibrate_shard({"shard": 0}, params, str(folder / "calibrate.parquet"), None)["stats"]
    return {k: stats[k] for k in ("docs_in", "refine_rounds", "summary_bins_max") if k in stats}


# ---------------------------------------------------------------- rebalance: solve (bounded)

REBALANCE_LANGUAGES = (["en", "de", "fr", "es", "ru", "zh"], [0.6, 0.1, 0.1, 0.1, 0.05, 0.05])


def generate_rebalance(folder: Path, documents: int, settings: Settings) -> dict:
    """measure's output, shard by shard: lognormal token counts, cells language x quality level,
    FineWeb2-like cluster sizes for rehydration weights."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(settings.seed)
    urls = []
    for shard, count in enumerate(_shards(documents, settings)):
        languages = rng.choice(REBALANCE_LANGUAGES[0], count, p=REBALANCE_LANGUAGES[1])
        table = pa.table({
            "shard": pa.array(np.full(count, shard, np.int32)), "row": pa.array(np.arange(count)),
            "id": [f"doc-{shard}-{r}" for r in range(count)],
            "tokens": pa.array(rng.lognormal(6, 1.2, count).astype(np.int64) + 1),
            "cell_0": languages, "cell_1": [str(k) for k in rng.integers(0, 5, count)], "language": languages,
            "cluster_size": pa.array(np.minimum(rng.zipf(2.0, count), 1000).astype(np.int64)),
            "level": [str(k) for k in rng.integers(0, 5, count)],
            "problem": pa.nulls(count, pa.string()),
        })
        urls.append(str(folder / f"measure-{shard:05d}.parquet"))
        pq.write_table(table, urls[-1])
    config = {"stage": "rebalance", "tokens": "gpt2", "cells": ["language", "quality_level"], "seed": 1, "max_epochs": 4,
              "quality": {"weights": {"0": 1, "1": 1, "2": 2, "3": 3, "4": 3}}, "rehydration": {"weights": "readme"},
              "solve": {"mode": "bounded", "memory_mb": settings.memory_mb}}
    return {"config": config, "measures": urls, "rehydration_report": None}


@reduction("rebalance_solve", generate_rebalance)
def run_rebalance(folder: Path, params: dict, settings: Settings) -> dict:
    from fineflow.tasks.rebalance.solve import solve_shard

    (folder / "solve").mkdir(exist_ok=True)
    stats = solve_shard({"shard": 0}, params, str(folder / "solve" / "part-00000.parquet"), None)["stats"]
    return {k: v for k, v in stats.items() if isinstance(v, int | float) and k in ("docs_in", "docs_out", "groups", "copies")}


# ---------------------------------------------------------------- planning over a listing

def _warc_member() -> bytes:
    """One gzip member holding one whole WARC record: Common Crawl's layout (a splittable file)."""
    body = b"software: scale_sim\r\n"
    head = (b"WARC/1.0\r\nWARC-Type: warcinfo\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-000000000000>\r\n"
            b"WARC-Date: 2024-01-01T00:00:00Z\r\nContent-Type: application/warc-fields\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode())
    return gzip.compress(head + body + b"\r\n\r\n")


def plan_listing(folder: Path, files: int) -> dict:
    """Plan examples/demo.yaml with its crawl reading a listing of ``files`` WARC paths (hard links
    to one small file: the planner stats and sniffs each, as it would each object of a bucket)."""
    from fineflow.config import load_config
    from fineflow.planning import plan_pipeline
    from fineflow.tasks.crawl.config import CommonCrawlListing

    data = folder / "warcs"
    data.mkdir()
    paths = []
    for n in range(files):
        if n % 50_000 == 0:  # (a file system allows some 65,000 links to one file)
            original = data / f"original-{n // 50_000}.warc.gz"
            original.write_bytes(_warc_member())
        name = f"crawl-data/CC-MAIN-SIM/segments/{n // 1000:04d}/warc/CC-MAIN-SIM-{n:06d}.warc.gz"
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        os.link(original, data / name)
        paths.append(name)
    listing = folder / "warc.paths.gz"
    listing.write_bytes(gzip.compress("\n".join(paths).encode()))
    del paths
    config = load_config(ROOT / "examples" / "demo.yaml", storage_override=str(folder / "storage"))
    crawl = config.stages[0]
    crawl.inputs, crawl.listing = [], CommonCrawlListing(path=str(listing), base_url=str(data))
    crawl.shard_bytes = 64 * 1024 * 1024  # the default: one shard per (small) file
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    planned = plan_pipeline(config)
    seconds = time.perf_counter() - started
    # what a run records of its plans: each step's function, params, shards and fingerprint
    steps = [plan for _, plans in planned for plan in plans]
    plan_bytes = sum(len(json.dumps({"stage": p.stage, "step": p.step, "function": p.function, "params": p.params,
                                     "shards": p.shards, "fingerprint": p.fingerprint.value, "inputs": p.inputs},
                                    default=str).encode()) for p in steps)
    return {"files": files, "steps": len(steps), "shards": sum(len(p.shards) for p in steps), "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_planning_mb": round(before, 1), "plan_json_mb": round(plan_bytes / 2**20, 2)}


# ---------------------------------------------------------------- driver

def _child(args: argparse.Namespace) -> None:
    """One phase in this process: generate a reduction's inputs, run it, or plan the listing."""
    settings = Settings(args.memory_mb, args.shard_rows, args.seed)
    folder = Path(args.folder)
    if args.phase == "generate":
        params = REDUCTIONS[args.name].generate(folder, args.documents, settings)
        (folder / "params.json").write_text(json.dumps(params))
        result = {"generated": params.get("generated", {})}
    elif args.phase == "run":
        params = json.loads((folder / "params.json").read_text())
        started = time.perf_counter()
        stats = REDUCTIONS[args.name].run(folder, params, settings)
        result = {"seconds": round(time.perf_counter() - started, 2), "stats": stats}
    else:
        result = plan_listing(folder, args.documents)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def _phase(phase: str, name: str, folder: Path, documents: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", phase, "--name", name, "--folder", str(folder),
               "--documents", str(documents), "--memory-mb", str(args.memory_mb), "--shard-rows", str(args.shard_rows),
               "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"{phase} {name} at {documents:,}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1e6,3e6,1e7", help="documents per simulated run, comma-separated")
    parser.add_argument("--memory-mb", type=int, default=1024, help="the reductions' memory bound (MiB)")
    parser.add_argument("--shard-rows", type=int, default=100_000, help="documents per upstream shard")
    parser.add_argument("--listing-files", type=int, default=100_000, help="files of the planned listing (0: skip)")
    parser.add_argument("--reductions", default=",".join(REDUCTIONS), help="which reductions, comma-separated")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1e5 documents, 2,000 listed files")
    parser.add_argument("--folder", help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["generate", "run", "plan"], help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--documents", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.phase = args.child
        _child(args)
        return {}
    if args.quick:
        args.sizes, args.listing_files, args.shard_rows = "1e5", min(args.listing_files, 2_000), 25_000
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    names = [n for n in args.reductions.split(",") if n]
    if unknown := sorted(set(names) - set(REDUCTIONS)):
        parser.error(f"unknown reductions {unknown}; known: {sorted(REDUCTIONS)}")
    if any(s < 1 for s in sizes) or args.memory_mb < 64 or args.shard_rows < 1:
        parser.error("sizes must be positive, --memory-mb at least 64, --shard-rows positive")
    results: dict = {}
    before = [round(x, 2) for x in os.getloadavg()]  # other work on the machine moves the timings
    print(f"load average before: {before}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.folder) as scratch:
        for name in names:
            for documents in sizes:
                folder = Path(scratch) / f"{name}-{documents}"
                folder.mkdir()
                started = time.perf_counter()
                generated = _phase("generate", name, folder, documents, args)
                generated_s = time.perf_counter() - started
                ran = _phase("run", name, folder, documents, args)
                results.setdefault(name, {})[str(documents)] = {"peak_rss_mb": ran["peak_rss_mb"], "seconds": ran["seconds"]}
                print(f"{name} {documents:,} documents: peak RSS {ran['peak_rss_mb']} MB, {ran['seconds']} s "
                      f"(generated in {generated_s:.0f} s, generator peak {generated['peak_rss_mb']} MB; "
                      f"{generated['generated']} {ran['stats']}; load {os.getloadavg()[0]:.1f})", flush=True)
                subprocess.run(["rm", "-rf", str(folder)], check=True)
        if args.listing_files:
            folder = Path(scratch) / "planning"
            folder.mkdir()
            results["planning"] = _phase("plan", "planning", folder, args.listing_files, args)
            print(f"planning {args.listing_files:,} listed files: {results['planning']}", flush=True)
    results["load_average"] = {"before": before, "after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
