"""Benchmark the crawl stage: compute-only throughput, full-pipeline wall time, repeat-run cost.

For each extractor:

* compute only: the pure shard function ``extract_shard`` over every shard, in one fresh
  process, no Prefect or Dask. CPU time counts that process and its extraction subprocess.
* pipeline: ``fineflow run`` (Prefect + Dask) into an empty storage root, then the identical run
  again, which should find every shard Cached. The Prefect server is started beforehand (in a
  private FINEFLOW_HOME) so its startup is not part of either timing.
* documents and tokens out: the compute-only pass's documents, and their GPT-2 tokens (the packaged
  ``gpt2`` tokenizer, FineWeb's counts), counted after the timing.
* peak memory: the largest ``worker_peak_rss_mb`` and ``extractor_peak_rss_mb`` of any shard
  (a Dask worker process, and the extraction subprocess it runs).

Usage: .venv/bin/python bench/crawl_bench.py [--corpus DIR] [--extractors trafilatura resiliparse justext] [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
import yaml
from common import machine_info, table_head  # bench/common.py (the script's folder is on sys.path)

from fineflow.counters import merge_counts
from fineflow.tasks.crawl.config import CrawlStage
from fineflow.tasks.crawl.extractors import EXTRACTORS

ROOT = Path(__file__).resolve().parent.parent
FINEFLOW = Path(sys.executable).with_name("fineflow")
RESULTS_DIR = ROOT / "bench" / "results"
REPEAT_TARGET = 0.20  # a fully cached re-run should cost at most this fraction of the first run


def shard_params(extractor: str, shard_bytes: int) -> dict:
    """The crawl step's parameters, as the pipeline's defaults would resolve them."""
    return dict(
        extractor=extractor,
        extraction_timeout_s=CrawlStage.model_fields["extraction_timeout_s"].default,
        include_text_plain=False,
        keep_truncated=False,
        max_record_bytes=64 << 20,
        langid_model="lid.176",
        url_filter=None,
        url_filter_options={},
        shard_bytes=shard_bytes,
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def gpt2_tokens(folder: str) -> int:
    """GPT-2 tokens of the texts of every document file in ``folder`` (rejects not included)."""
    import pyarrow.parquet as pq

    from fineflow.tasks.tokenize.config import TokenizerSpec
    from fineflow.tasks.tokenize.encoders import describe, load_encoder

    encoder = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2", eos="none", bos="none")))
    total = 0
    for path in sorted(Path(folder).glob("part-*.parquet")):
        texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
        total += sum(encoder.count_texts(texts))
    return total


def compute_only(files: list[str], extractor: str, shard_bytes: int) -> dict:
    """Run ``extract_shard`` over every shard in this process (meant to be a fresh one)."""
    from fineflow.tasks.crawl.inputs import describe_files, plan_shards
    from fineflow.tasks.crawl.sandbox import thread_extractor
    from fineflow.tasks.crawl.stage import extract_shard

    params = shard_params(extractor, shard_bytes)
    wall0, cpu0, children0 = time.perf_counter(), time.process_time(), _children_cpu()
    shards = plan_shards(describe_files(files, memo_root=None, content_hash=True), shard_bytes)
    stats = []
    with tempfile.TemporaryDirectory(prefix="crawl-bench-") as out:
        for shard in shards:
            name = f"part-{shard['shard']:05d}.parquet"
            result = extract_shard(shard, params, f"{out}/{name}", f"{out}/rejects/{name}")
            stats.append(result["stats"])
        # The extraction subprocess lives on; end (and reap) it so RUSAGE_CHILDREN includes its CPU.
        thread_extractor(extractor, params["extraction_timeout_s"]).close()
        cpu = (time.process_time() - cpu0) + (_children_cpu() - children0)
        wall = time.perf_counter() - wall0
        tokens = gpt2_tokens(out)  # after the timing
    docs_in = sum(s["docs_in"] for s in stats)
    return {
        "shards": len(shards),
        "docs_in": docs_in,
        "docs_out": sum(s["docs_out"] for s in stats),
        "gpt2_tokens_out": tokens,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "shard_s": round(sum(s["seconds"] for s in stats), 2),
        "extract_s": round(sum(s["extract_seconds"] for s in stats), 2),
        "docs_per_cpu_s": round(docs_in / cpu, 1),
        "peak_rss_mb": max(s["worker_peak_rss_mb"] for s in stats),
        "extractor_peak_rss_mb": max(s["extractor_peak_rss_mb"] for s in stats),
        "skips": merge_counts(s["skips"] for s in stats),
    }


def compute_only_fresh(files: list[str], extractor: str, shard_bytes: int) -> dict:
    """``compute_only`` in a new process, so peak RSS and child CPU belong to this extractor alone."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(compute_only, files, extractor, shard_bytes).result()


def fineflow_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    process = subprocess.run([str(FINEFLOW), *args], env=env, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"fineflow {' '.join(args)} failed ({process.returncode}):\n{process.stderr[-4000:]}")
    return process


def server_cpu(env: dict[str, str]) -> float:
    """CPU seconds used so far by the Prefect server this benchmark started (and its children)."""
    pid = json.loads((Path(env["FINEFLOW_HOME"]) / "prefect" / "server.json").read_text())["pid"]
    server = psutil.Process(pid)
    return sum(p.cpu_times().user + p.cpu_times().system for p in [server, *server.children(recursive=True)])


def timed_run(pipeline: Path, storage: Path, summary: Path, env: dict[str, str]) -> tuple[float, float, dict]:
    """``(wall seconds, Prefect server CPU seconds, crawl stage summary)`` of one ``fineflow run``."""
    cpu0, started = server_cpu(env), time.perf_counter()
    fineflow_cli(["run", str(pipeline), "--storage", str(storage), "--summary-json", str(summary)], env)
    wall, cpu = time.perf_counter() - started, server_cpu(env) - cpu0
    return wall, cpu, json.loads(summary.read_text())["stages"][0]


def pipeline(corpus: Path, extractor: str, workers: int, shard_bytes: int, work: Path, env: dict[str, str]) -> dict:
    """A cold ``fineflow run`` into empty storage, then the identical (cached) run."""
    config = {
        "name": "bench",
        "dask": {"n_workers": workers, "threads_per_worker": 1},
        "stages": [{"stage": "crawl", "inputs": [f"{corpus}/*.warc.gz"], "extractor": extractor, "shard_bytes": shard_bytes}],
    }
    spec = work / f"{extractor}.yaml"
    spec.write_text(yaml.safe_dump(config, sort_keys=False))
    storage = work / f"storage-{extractor}"
    first_s, first_server_cpu, first = timed_run(spec, storage, work / f"{extractor}-first.json", env)
    repeat_s, repeat_server_cpu, repeat = timed_run(spec, storage, work / f"{extractor}-repeat.json", env)
    shard_stats = [s["stats"] for s in json.loads((Path(first["output"]).parent / "_manifest.json").read_text())["shards"]]
    return {
        "shards": first["shards"],
        "docs_in": first["docs_in"],
        "docs_out": first["docs_out"],
        "skips": first["skips"],
        "first_wall_s": round(first_s, 2),
        "first_stage_s": first["seconds"],
        "first_server_cpu_s": round(first_server_cpu, 2),
        "shard_s": round(sum(s["seconds"] for s in shard_stats), 2),
        "repeat_wall_s": round(repeat_s, 2),
        "repeat_stage_s": repeat["seconds"],
        "repeat_server_cpu_s": round(repeat_server_cpu, 2),
        "repeat_ratio": round(repeat_s / first_s, 3),
        "repeat_all_cached": repeat["cached_shards"] == repeat["shards"],
        "repeat_cached_shards": repeat["cached_shards"],
        "peak_rss_mb": max(s["worker_peak_rss_mb"] for s in shard_stats),
        "extractor_peak_rss_mb": max(s["extractor_peak_rss_mb"] for s in shard_stats),
    }


def bench_environment(env: dict[str, str], home: Path) -> dict[str, str]:
    """The CLI's environment: a private FINEFLOW_HOME (its own Prefect server) and PREFECT_HOME."""
    env = {k: v for k, v in env.items() if not k.startswith("PREFECT_")}
    env.update(FINEFLOW_HOME=str(home), PREFECT_HOME=str(home / "prefect-client"))
    return env


def markdown_table(results: dict) -> str:
    lines = table_head(
        "extractor",
        "docs in",
        "docs out",
        "GPT-2 tokens out",
        "docs/s per core (compute only)",
        "pipeline wall, first run",
        "repeat run (ratio)",
        "orchestration",
        "peak RSS per worker",
        "extractor subprocess peak RSS",
    )
    for name, r in results.items():
        c, p = r["compute"], r["pipeline"]
        repeat = f"{p['repeat_wall_s']:.1f} s ({p['repeat_ratio']:.0%})" + ("" if p["repeat_all_cached"] else " ⚠ not all cached")
        lines.append(
            f"| {name} | {c['docs_in']:,} | {c['docs_out']:,} | {c.get('gpt2_tokens_out', 0):,} | {c['docs_per_cpu_s']:.1f} | {p['first_wall_s']:.1f} s | "
            f"{repeat} | {r['orchestration_s']:.1f} s | {p['peak_rss_mb']:.0f} MB | {p['extractor_peak_rss_mb']:.0f} MB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "web-small")
    parser.add_argument("--extractors", nargs="+", default=list(EXTRACTORS), choices=EXTRACTORS)
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (one thread each) in the pipeline runs")
    parser.add_argument("--shard-bytes", type=int, default=8_000_000)
    args = parser.parse_args()

    corpus = args.corpus.resolve()
    files = sorted(str(p) for p in corpus.glob("*.warc.gz"))
    if not files:
        parser.error(f"no *.warc.gz files in {corpus}")

    host = machine_info(("fineflow", "trafilatura", "resiliparse", "justext", "prefect", "distributed"))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="crawl-bench-") as tmp:
        work = Path(tmp)
        env = bench_environment(dict(os.environ), work / "fineflow-home")
        fineflow_cli(["server", "start"], env)
        try:
            for extractor in args.extractors:
                print(f"[{extractor}] compute only ...", file=sys.stderr, flush=True)
                compute = compute_only_fresh(files, extractor, args.shard_bytes)
                print(f"[{extractor}] pipeline (first run, then repeat) ...", file=sys.stderr, flush=True)
                runs = pipeline(corpus, extractor, args.workers, args.shard_bytes, work, env)
                orchestration = runs["first_wall_s"] - compute["cpu_s"] / args.workers
                results[extractor] = {"compute": compute, "pipeline": runs, "orchestration_s": round(orchestration, 2)}
        finally:
            fineflow_cli(["server", "stop"], env)

    table = markdown_table(results)
    print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"crawl-{datetime.now():%Y%m%d-%H%M%S}.json"
    record = {
        "corpus": str(corpus),
        "files": len(files),
        "corpus_bytes": sum(Path(f).stat().st_size for f in files),
        "workers": args.workers,
        "shard_bytes": args.shard_bytes,
        "repeat_target": REPEAT_TARGET,
        "machine": host,
        "results": results,
        "table": table,
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"\nraw numbers: {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
