"""Benchmark the dedup stage's MinHash-LSH near-duplicates against datatrove 0.10.1: fidelity, speed, memory.

Both tools run FineWeb's MinHash defaults on the same documents: word 5-grams of the normalized
text, 112 permutations as 14 bands x 8 rows, xxhash64 shingles, seed 1. fineflow runs with
``exact: false, url: false, near: true`` (datatrove's MinHash has no separate exact or URL pass;
exact copies are near-duplicates with Jaccard 1 anyway); datatrove runs
``MinhashDedupSignature -> MinhashDedupBuckets -> MinhashDedupCluster -> MinhashDedupFilter`` with
``MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="xxhash"), num_buckets=14,
hashes_per_bucket=8, n_grams=5)`` and language ``en``, each stage on a
``LocalPipelineExecutor(workers=1)`` (one task; 14 sequential tasks for the buckets stage, which
datatrove requires to be a multiple of the bucket count).

What is measured, per replication factor (``--replicas``, default ``1,16``):

* fidelity at cluster level: every document's cluster (the set of document ids it is grouped
  with; singletons included) in both tools; agreement is the fraction of documents whose cluster
  is identical. Which member a cluster keeps differs by design (fineflow: earliest crawl_date,
  then longest text, then smallest id; datatrove: the union-find root), so only membership and
  the number removed are compared. At 1x every difference is explained: per document, whether
  the 14 LSH band keys agree (datatrove's signature files are read back and keyed the way
  fineflow keys its bands), and if not whether text normalization or word splitting differs
  (fineflow splits words with the document language's splitter; datatrove uses English spaCy
  for all), with the true 5-gram Jaccard of the pairs that one tool joins and the other does not.
  An ablation runs fineflow with every language's splitter set to ``spacy:en`` to isolate the
  normalization differences.
  A third row runs fineflow's buckets, cluster and remove steps on datatrove's own band keys,
  which isolates the clustering and keep-one-per-cluster logic from the signatures.
* speed and memory: wall and CPU seconds of each of the 4 steps (signatures, buckets, cluster,
  remove/filter) and in total, docs/s, peak RSS of each step (``/proc/self/statm`` sampled every
  10 ms; "growth" is the step's peak minus the RSS it started with) and of the whole worker
  (``VmHWM``). Each tool runs single-process in a fresh subprocess ("compute": fineflow's pure
  shard functions called directly, no Prefect or Dask). CPU seconds are reported next to wall
  seconds because they are less sensitive to other load on the machine.
* orchestration (1x only, ``--no-orchestration`` to skip): a cold ``fineflow run`` of
  crawl -> dedup (Prefect + Dask, 2 workers) and the dedup stage's seconds in its summary.

Nx data: the extracted documents plus N-1 perturbed copies. Each copy of a document gets a new
id (``<id>-rNN``), a crawl_date NN days later and, from an RNG seeded by (seed, copy, row), one
edit: drop one line (not the longest ones), or replace/drop ~1% of its words (1 to 20 words),
so most copies are near-duplicates of each other and of the original.

Inputs are extracted once with fineflow's crawl step (resiliparse, text/plain included: the
corpus has hundreds of near-duplicate licence files) and cached in
``bench/results/dedup-input-<crawl fingerprint>.parquet``.

Usage::

    .venv/bin/python bench/dedup_bench.py [--corpus DIR] [--replicas 1,16] [--datatrove-python PATH] [--out FILE]

datatrove lives in its own environment (never imported into fineflow's): by default
``$DATATROVE_PYTHON`` or ``bench/.venv-datatrove/bin/python``. To create one::

    uv venv bench/.venv-datatrove && VIRTUAL_ENV=bench/.venv-datatrove uv pip install \\
        "datatrove[processing]==0.10.1" spacy jieba pyahocorasick tldextract nltk orjson tokenizers "xxhash==3.5.0"

(``orjson`` is what datatrove's JsonlReader/JsonlWriter need; ``datatrove[io]`` brings it too) and pass ``--datatrove-python bench/.venv-datatrove/bin/python``. The datatrove side runs as
``<datatrove python> bench/dedup_bench.py --datatrove-worker <in.jsonl.gz> <workdir> <out.json>``.

Results: ``bench/results/dedup-<timestamp>.json`` (or ``--out``) and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

from common import machine_info, table_head  # bench/common.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "web-small"
DEFAULT_DATATROVE_PYTHON = os.environ.get("DATATROVE_PYTHON", str(ROOT / "bench" / ".venv-datatrove" / "bin" / "python"))
N_GRAMS, BANDS, ROWS, SEED = 5, 14, 8, 1
STEPS = ("signatures", "buckets", "cluster", "remove")
SPEED_TARGET = 3.0  # fineflow should be at least this many times faster than datatrove at the largest scale
FIDELITY_TARGET = 0.99
INSPECT_LIMIT = 1000  # documents of differing clusters whose words are compared with datatrove's
PAIR_LIMIT = 40  # pairs per differing group whose true Jaccard is computed


# ---------------------------------------------------------------------------------------------
# memory sampling (stdlib only: the datatrove environment has no psutil)
# ---------------------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def max_rss_mb() -> float:
    """This process image's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that
    over from the parent across fork + exec, so a worker would report the benchmark's own size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class RssSampler:
    """Resident memory of this process, sampled every 10 ms in a thread; ``phase()`` measures one block."""

    def __init__(self) -> None:
        self.current_peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.current_peak = max(self.current_peak, rss_bytes())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def phase(self) -> _Phase:
        return _Phase(self)


class _Phase:
    def __init__(self, sampler: RssSampler) -> None:
        self.sampler = sampler

    def __enter__(self) -> _Phase:
        self.baseline = rss_bytes()
        self.sampler.current_peak = self.baseline
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.wall0
        self.cpu_seconds = time.process_time() - self.cpu0
        self.peak = max(self.sampler.current_peak, rss_bytes())

    def record(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "peak_rss_mb": round(self.peak / 2**20, 1),
            "extra_rss_mb": round((self.peak - self.baseline) / 2**20, 1),
        }


# ---------------------------------------------------------------------------------------------
# datatrove side (runs in the datatrove environment; imports only stdlib, numpy, xxhash, datatrove)
# ---------------------------------------------------------------------------------------------


def datatrove_worker(input_path: str, workdir: str, out_path: str, dump_signatures: bool) -> None:
    sampler = RssSampler()
    import_phase = sampler.phase()
    with import_phase:
        from datatrove.executor import LocalPipelineExecutor
        from datatrove.pipeline.dedup.minhash import (
            MinhashConfig,
            MinhashDedupBuckets,
            MinhashDedupCluster,
            MinhashDedupFilter,
            MinhashDedupSignature,
        )
        from datatrove.pipeline.readers import JsonlReader
        from datatrove.pipeline.writers import JsonlWriter
        from datatrove.utils.hashing import HashConfig

    work = Path(workdir)
    source = Path(input_path)
    config = MinhashConfig(
        hash_config=HashConfig(precision=64, hash_fc="xxhash"), num_buckets=BANDS, hashes_per_bucket=ROWS, n_grams=N_GRAMS
    )

    def reader():
        return JsonlReader(str(source.parent), glob_pattern=source.name)

    def executor(name: str, pipeline: list, tasks: int = 1):
        return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / "logs" / name))

    stages = {
        "signatures": lambda: executor(
            "signatures",
            [reader(), MinhashDedupSignature(output_folder=str(work / "signatures"), config=config, language="en")],
        ),
        "buckets": lambda: executor(
            "buckets",
            [MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"), config=config)],
            tasks=BANDS,
        ),
        "cluster": lambda: executor(
            "cluster",
            [
                MinhashDedupCluster(
                    input_folder=str(work / "buckets"),
                    output_folder=str(work / "remove_ids"),
                    config=config,
                    save_cluster_id=True,
                    save_cluster_size=True,
                )
            ],
        ),
        "remove": lambda: executor(
            "remove",
            [
                reader(),
                MinhashDedupFilter(
                    input_folder=str(work / "remove_ids"),
                    exclusion_writer=JsonlWriter(str(work / "removed")),
                    load_cluster_ids=True,
                    load_cluster_sizes=True,
                ),
                JsonlWriter(str(work / "output")),
            ],
        ),
    }
    steps = {}
    for name, build in stages.items():
        phase = sampler.phase()
        with phase:
            build().run()
        steps[name] = phase.record()
        print(f"[datatrove] {name}: {steps[name]['seconds']:.1f} s", file=sys.stderr, flush=True)
    overall_peak = max_rss_mb()
    sampler.stop()

    # --- untimed: read back what each document became -----------------------------------------
    membership = {"id": [], "removed": [], "cluster": [], "size": []}
    for folder, removed in (("output", 0), ("removed", 1)):
        for path in sorted((work / folder).glob("*.jsonl*")):
            with gzip.open(path, "rt") as f:
                for line in f:
                    doc = json.loads(line)
                    metadata = doc.get("metadata") or {}
                    membership["id"].append(doc["id"])
                    membership["removed"].append(removed)
                    membership["cluster"].append(metadata.get("minhash_cluster_id", -1))
                    membership["size"].append(metadata.get("minhash_cluster_size", 1))
    stats = {}
    for name in ("signatures", "buckets", "cluster", "remove"):
        path = work / "logs" / name / "stats.json"
        if path.exists():
            stats[name] = json.loads(path.read_text())
    result = {**timing_record(steps, import_phase, overall_peak), "membership": membership, "stats": stats}
    if dump_signatures:
        result["band_keys"] = datatrove_band_keys(source, work / "signatures")
    Path(out_path).write_text(json.dumps(result))


def timing_record(steps: dict, import_phase, overall_peak: float) -> dict:  # noqa: ANN001
    """What both tools' workers report: per step and in total, seconds, CPU seconds and memory."""
    return {
        "steps": steps,
        "imports": import_phase.record(),
        "total_seconds": round(sum(s["seconds"] for s in steps.values()), 3),
        "total_cpu_seconds": round(sum(s["cpu_seconds"] for s in steps.values()), 3),
        "peak_rss_mb": overall_peak,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def datatrove_band_keys(source: Path, signatures: Path) -> dict[str, list[int]]:
    """Each document's 14 band keys, from datatrove's signature files, keyed as fineflow keys bands
    (xxh64 of the band's 8 little-endian uint64 values, seeded by the band number)."""
    import numpy as np
    import xxhash

    with gzip.open(source, "rt") as f:
        ids = [json.loads(line)["id"] for line in f]  # the reader yields every line (no empty texts)
    dtype = np.dtype([(f"h{i}", "<u8") for i in range(ROWS)] + [("doc", "<u4")])
    keys: dict[int, list[int]] = defaultdict(lambda: [0] * BANDS)
    for band in range(BANDS):
        records = np.fromfile(signatures / f"bucket_{band:03d}" / "00000.minhash.sig", dtype=dtype)
        values = np.ascontiguousarray(np.stack([records[f"h{i}"] for i in range(ROWS)], axis=1))
        for row, doc in zip(values, records["doc"].tolist()):
            keys[doc][band] = xxhash.xxh64_intdigest(row.tobytes(), seed=band)
    return {ids[doc]: value for doc, value in keys.items()}


def datatrove_inspect(in_path: str, out_path: str) -> None:
    """datatrove's normalized text of every given document, and its words (English spaCy) where asked."""
    from datatrove.utils.text import simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    tokenizer = load_word_tokenizer("en")
    out = {}
    for doc in json.loads(Path(in_path).read_text()):
        normalized = simplify_text(doc["text"])
        out[doc["id"]] = {"normalized": normalized, "words": tokenizer.word_tokenize(normalized) if doc["words"] else None}
    Path(out_path).write_text(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# fineflow side (a fresh process per measurement)
# ---------------------------------------------------------------------------------------------


def _context(root: str, fingerprint: str, upstream: str, shards: int):
    """What the pipeline gives dedup's planner: its root, and one upstream folder of ``shards`` files."""
    from fineflow.steps import PlanContext, Source, StageInputs

    return PlanContext(root=root, name="dedup", kind="dedup", inputs=StageInputs((Source("upstream", fingerprint, upstream, shards),)))


def fineflow_worker(upstream: str, shards: int, fingerprint: str, root: str, out_path: str, splitters: str) -> None:
    sampler = RssSampler()
    import_phase = sampler.phase()
    with import_phase:
        from fineflow.manifest import write_manifest
        from fineflow.steps import run_shard
        from fineflow.tasks.dedup.config import DedupStage
        from fineflow.tasks.dedup.plan import plan_dedup

    stage = DedupStage.model_validate({"stage": "dedup", "exact": False, "url": False, "near": True, **json.loads(splitters)})
    plans = plan_dedup(stage, _context(root, fingerprint, upstream, shards))
    steps, cluster_stats, folders = {}, {}, {}
    for plan in plans:
        phase = sampler.phase()
        with phase:
            results = [run_shard(plan.function, shard, plan.params, plan.location) for shard in plan.shards]
            write_manifest(plan.location, plan.fingerprint.components, results)
        steps[plan.step] = phase.record()
        folders[plan.step] = plan.location.data_folder
        if plan.step == "cluster":
            cluster_stats = results[0]["stats"]
        if plan.step == "remove":
            folders["rejects"] = plan.location.rejects_folder
        print(f"[fineflow] {plan.step}: {steps[plan.step]['seconds']:.1f} s", file=sys.stderr, flush=True)
    overall_peak = max_rss_mb()
    sampler.stop()
    Path(out_path).write_text(
        json.dumps(
            {**timing_record(steps, import_phase, overall_peak), "cluster_stats": cluster_stats, "folders": folders}
        )
    )


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def extract_documents(corpus: Path) -> tuple[Path, dict]:
    """The corpus's documents (fineflow crawl step, resiliparse, text/plain included), cached."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fineflow.steps import run_shard
    from fineflow.tasks.crawl.config import CrawlStage
    from fineflow.tasks.crawl.plan import plan_crawl

    files = sorted(str(p) for p in corpus.glob("*.warc.gz"))
    if not files:
        raise SystemExit(f"no *.warc.gz files in {corpus}")
    with tempfile.TemporaryDirectory(prefix="dedup-bench-extract-") as tmp:
        config = CrawlStage.model_validate(
            {"stage": "crawl", "inputs": files, "extractor": "resiliparse", "include_text_plain": True}
        )
        from fineflow.steps import PlanContext

        plans = plan_crawl(config, PlanContext(root=tmp, name="crawl", kind="crawl"))
        fingerprint = plans[0].fingerprint.value
        cache = RESULTS_DIR / f"dedup-input-{fingerprint}.parquet"
        info = {"files": len(files), "corpus_bytes": sum(Path(f).stat().st_size for f in files), "crawl_fingerprint": fingerprint}
        if cache.exists():
            print(f"documents: cached {cache.relative_to(ROOT)}", file=sys.stderr)
            return cache, info | {"extract_seconds": None}
        print(f"documents: extracting {len(files)} WARC files (resiliparse, text/plain included) ...", file=sys.stderr)
        started = time.perf_counter()
        tables = []
        for plan in plans:
            for shard in plan.shards:
                run_shard(plan.function, shard, plan.params, plan.location)
                tables.append(pq.read_table(plan.location.shard_url(shard["shard"])))
        table = pa.concat_tables(tables)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, cache, compression="zstd")
        return cache, info | {"extract_seconds": round(time.perf_counter() - started, 1)}


_WORD = re.compile(r"\S+")
_VOCABULARY = (
    "the of and river blue seven quickly model house paper light window garden number yellow market "
    "train silver forest music doctor winter engine letter bridge mountain coffee table station"
).split()


def perturb(text: str, rng: random.Random) -> str:
    """One small edit: drop a line (not one of the longest), or replace/drop about 1% of the words."""
    lines = text.split("\n")
    if rng.random() < 0.3:
        candidates = [i for i, line in enumerate(lines) if line.strip() and len(line) <= len(text) / 10]
        if len(candidates) >= 3:
            drop = rng.choice(candidates)
            return "\n".join(line for i, line in enumerate(lines) if i != drop)
    spans = [m.span() for m in _WORD.finditer(text)]
    if not spans:
        return text + " " + rng.choice(_VOCABULARY)
    edits = max(1, min(len(spans) // 100, 20))
    pieces, last = [], 0
    for position in sorted(rng.sample(range(len(spans)), edits)):
        start, end = spans[position]
        pieces.append(text[last:start])
        if len(spans) == 1 or rng.random() < 0.5:
            pieces.append(rng.choice(_VOCABULARY))  # replace (always when it is the only word)
        last = end  # else drop
    pieces.append(text[last:])
    return "".join(pieces)


def replicate(cache: Path, replicas: int, seed: int):
    """The documents plus ``replicas - 1`` perturbed copies (new ids, later crawl dates)."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    base = pq.read_table(cache)
    tables = [base]
    ids, texts, dates = base.column("id").to_pylist(), base.column("text").to_pylist(), base.column("crawl_date").to_pylist()
    for copy in range(1, replicas):
        new_ids = [f"{doc_id}-r{copy:02d}" for doc_id in ids]
        new_texts = [perturb(text or "", random.Random(f"{seed}:{copy}:{row}")) for row, text in enumerate(texts)]
        new_dates = [d + dt.timedelta(days=copy) if d is not None else None for d in dates]
        table = base
        for name, values in (("id", new_ids), ("text", new_texts), ("crawl_date", new_dates)):
            index = table.schema.get_field_index(name)
            table = table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))
        tables.append(table)
    return pa.concat_tables(tables)


def write_inputs(table, folder: Path, shards: int) -> tuple[Path, Path]:
    """fineflow's upstream (``part-NNNNN.parquet`` in the document schema) and datatrove's jsonl.gz."""
    from fineflow.documents import write_table

    upstream = folder / "upstream"
    upstream.mkdir(parents=True)
    rows = table.num_rows
    bounds = [round(i * rows / shards) for i in range(shards + 1)]
    for number in range(shards):
        write_table(str(upstream / f"part-{number:05d}.parquet"), table.slice(bounds[number], bounds[number + 1] - bounds[number]))
    jsonl = folder / "datatrove-input" / "docs.jsonl.gz"
    jsonl.parent.mkdir(parents=True)
    with gzip.open(jsonl, "wt", compresslevel=1) as f:
        for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return upstream, jsonl


# ---------------------------------------------------------------------------------------------
# running the two tools
# ---------------------------------------------------------------------------------------------


def run_worker(command: list[str], log: Path) -> None:
    with open(log, "w") as stderr:
        process = subprocess.run(command, stdout=stderr, stderr=subprocess.STDOUT, cwd=ROOT)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({process.returncode}); last log lines:\n" + log.read_text()[-4000:])


def run_fineflow(upstream: Path, shards: int, fingerprint: str, work: Path, name: str, splitters: dict | None = None) -> dict:
    root, out = work / f"fineflow-{name}", work / f"fineflow-{name}.json"
    print(f"  fineflow ({name}) ...", file=sys.stderr, flush=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--fineflow-worker", str(upstream), str(shards), fingerprint,
               str(root), str(out), json.dumps(splitters or {})]
    run_worker(command, work / f"fineflow-{name}.log")
    return json.loads(out.read_text())


def run_datatrove(python: str, jsonl: Path, work: Path, dump_signatures: bool) -> dict:
    workdir, out = work / "datatrove", work / "datatrove.json"
    print("  datatrove ...", file=sys.stderr, flush=True)
    command = [python, str(Path(__file__).resolve()), "--datatrove-worker", str(jsonl), str(workdir), str(out)]
    run_worker(command + (["--dump-signatures"] if dump_signatures else []), work / "datatrove.log")
    return json.loads(out.read_text())


def fineflow_membership(result: dict) -> dict[str, dict]:
    """Per document: ``cluster`` (the kept member's id), ``removed`` and the reported cluster size."""
    import polars as pl

    kept = pl.read_parquet(Path(result["folders"]["remove"]) / "part-*.parquet", columns=["id", "dup_cluster_size"])
    members = {doc_id: {"cluster": doc_id, "removed": False, "size": size} for doc_id, size in kept.iter_rows()}
    rejects = sorted(Path(result["folders"]["rejects"]).glob("part-*.parquet"))
    if rejects:
        removed = pl.read_parquet(rejects, columns=["id", "dup_cluster_id", "dup_cluster_size", "drop_reason"])
        for doc_id, cluster, size, _ in removed.iter_rows():
            members[doc_id] = {"cluster": cluster, "removed": True, "size": size}
    return members


def datatrove_membership(result: dict) -> dict[str, dict]:
    m = result["membership"]
    return {
        doc_id: {"cluster": (f"dt:{cluster}" if cluster >= 0 else doc_id), "removed": bool(removed), "size": size}
        for doc_id, removed, cluster, size in zip(m["id"], m["removed"], m["cluster"], m["size"])
    }


def clusters_of(members: dict[str, dict]) -> dict[str, frozenset]:
    groups: dict[str, set] = defaultdict(set)
    for doc_id, m in members.items():
        groups[m["cluster"]].add(doc_id)
    frozen = {key: frozenset(ids) for key, ids in groups.items()}
    return {doc_id: frozen[m["cluster"]] for doc_id, m in members.items()}


def summarize_tool(members: dict[str, dict], cluster: dict[str, frozenset]) -> dict:
    distinct = {c for c in cluster.values() if len(c) > 1}
    sizes = Counter(len(c) for c in distinct)
    removed_per_cluster_ok = all(
        sum(members[d]["removed"] for d in c) == len(c) - 1 for c in distinct
    ) and not any(members[d]["removed"] for d, c in cluster.items() if len(c) == 1)
    size_field_ok = all(members[d]["size"] == len(c) for d, c in cluster.items())
    return {
        "docs": len(members),
        "clusters": len(distinct),
        "docs_in_clusters": sum(len(c) for c in distinct),
        "removed": sum(m["removed"] for m in members.values()),
        "largest_cluster": max((len(c) for c in distinct), default=0),
        "cluster_sizes": {str(k): v for k, v in sorted(sizes.items())},
        "one_kept_per_cluster": removed_per_cluster_ok,
        "size_field_matches_membership": size_field_ok,
    }


def compare(ff_members: dict, dt_members: dict) -> dict:
    if set(ff_members) != set(dt_members):
        missing = sorted(set(ff_members) ^ set(dt_members))[:10]
        raise RuntimeError(f"the tools saw different documents, e.g. {missing}")
    ff, dt = clusters_of(ff_members), clusters_of(dt_members)
    same = [d for d in ff if ff[d] == dt[d]]
    differing = sorted(d for d in ff if ff[d] != dt[d])
    ff_dup = {d for d, c in ff.items() if len(c) > 1}
    dt_dup = {d for d, c in dt.items() if len(c) > 1}
    return {
        "fineflow": summarize_tool(ff_members, ff),
        "datatrove": summarize_tool(dt_members, dt),
        "agreement": round(len(same) / len(ff), 6),
        "differing_docs": len(differing),
        "flagged_both": len(ff_dup & dt_dup),
        "flagged_only_fineflow": len(ff_dup - dt_dup),
        "flagged_only_datatrove": len(dt_dup - ff_dup),
        "same_flag": round(1 - len(ff_dup ^ dt_dup) / len(ff), 6),
        "removed_both": sum(ff_members[d]["removed"] and dt_members[d]["removed"] for d in ff),
        "_ff": ff,
        "_dt": dt,
        "_differing": differing,
    }


# ---------------------------------------------------------------------------------------------
# explaining differences
# ---------------------------------------------------------------------------------------------


def fineflow_band_keys(result: dict) -> dict[str, list]:
    import polars as pl

    columns = ["id"] + [f"band_{i:02d}" for i in range(BANDS)]
    frame = pl.read_parquet(Path(result["folders"]["signatures"]) / "part-*.parquet", columns=columns)
    return {row[0]: list(row[1:]) for row in frame.iter_rows()}


def signature_agreement(ff_keys: dict[str, list], dt_keys: dict[str, list], languages: dict[str, str]) -> dict:
    """Per document: are the 14 band keys identical in both tools (None: the tool has no signature)."""
    status = {}
    for doc_id, ff in ff_keys.items():
        has_ff = ff[0] is not None
        dt = dt_keys.get(doc_id)
        if not has_ff and dt is None:
            status[doc_id] = "both_none"
        elif not has_ff:
            status[doc_id] = "fineflow_none"
        elif dt is None:
            status[doc_id] = "datatrove_none"
        else:
            equal = sum(a == b for a, b in zip(ff, dt))
            status[doc_id] = "same" if equal == BANDS else ("partial" if equal else "differ")
    counts = Counter(status.values())
    by_language: dict[str, Counter] = defaultdict(Counter)
    for doc_id, s in status.items():
        by_language[languages.get(doc_id) or "und"][s] += 1
    identical = counts["same"] + counts["both_none"]
    return {
        "identical_fraction": round(identical / len(status), 6),
        "counts": dict(counts),
        "by_language": {k: dict(v) for k, v in sorted(by_language.items(), key=lambda kv: -sum(kv[1].values()))},
        "_status": status,
    }


def shingles(words: list[str]) -> set[str]:
    return {" ".join(words[i : i + N_GRAMS]) for i in range(len(words) - N_GRAMS + 1)}


def jaccard(a: set, b: set) -> float | None:
    return round(len(a & b) / len(a | b), 4) if a and b else None


def word_diff(ff_words: list[str], dt_words: list[str], limit: int = 6) -> list[str]:
    """A few ``fineflow -> datatrove`` replacements between the two word lists."""
    from difflib import SequenceMatcher

    matcher = SequenceMatcher(None, ff_words[:30000], dt_words[:30000], autojunk=False)
    changes = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            changes.append(f"{' '.join(ff_words[i1:i2])[:60]!r} -> {' '.join(dt_words[j1:j2])[:60]!r}")
            if len(changes) >= limit:
                break
    return changes


def fineflow_view(doc: dict, splitters: dict, max_chars: int | None, words: bool = True) -> dict:
    """fineflow's normalized text (of the prefix it shingles) and words, as its signatures step makes them."""
    from fineflow.tasks.dedup.normalize import normalize_text
    from fineflow.tasks.text.words import default_splitter, load_splitter

    text = doc["text"] or ""
    normalized = normalize_text(text[:max_chars] if max_chars else text)
    language = doc["language"] or ""
    splitter = (
        splitters.get("word_splitter")
        or splitters.get("word_splitters", {}).get(language)
        or default_splitter(language or "und")
    )
    return {"normalized": normalized, "splitter": splitter, "words": load_splitter(splitter)(normalized) if words else None}


def inspect_datatrove(docs: dict, with_words: set[str], work: Path, python: str) -> dict:
    request, answer = work / "inspect-in.json", work / "inspect-out.json"
    request.write_text(json.dumps([{"id": d, "text": doc["text"] or "", "words": d in with_words} for d, doc in docs.items()]))
    run_worker([python, str(Path(__file__).resolve()), "--datatrove-inspect", str(request), str(answer)], work / "inspect.log")
    view = json.loads(answer.read_text())
    request.unlink()
    answer.unlink()
    return view


def signature_causes(status: dict[str, str], docs: dict, dt_view: dict, splitters: dict, max_chars: int | None) -> dict:
    """Over the whole corpus: why each document's band keys differ between the tools."""
    import unicodedata

    causes: Counter = Counter()
    by_language: dict[str, Counter] = defaultdict(Counter)
    char_docs: Counter = Counter()
    examples: dict[str, list] = defaultdict(list)
    for doc_id, state in status.items():
        doc = docs[doc_id]
        if state in ("same", "both_none"):
            cause = "identical"
        else:
            mine = fineflow_view(doc, splitters, max_chars, words=False)
            theirs = dt_view[doc_id]["normalized"]
            if max_chars and len(doc["text"] or "") > max_chars:
                cause = f"text over max_text_chars ({max_chars:,}): fineflow shingles a prefix"
            elif mine["normalized"] != theirs:
                cause = "normalization (characters datatrove keeps, fineflow turns into spaces)"
                char_docs.update(set(theirs) - set(mine["normalized"]))
            elif mine["splitter"] != "spacy:en":
                cause = f"word splitting ({mine['splitter']} vs datatrove's spaCy en)"
            else:
                cause = "unexplained: same normalized text and splitter, different band keys"
            if len(examples[cause]) < 5:
                examples[cause].append({"id": doc_id, "url": doc["url"], "language": doc["language"], "signature": state})
        causes[cause] += 1
        by_language[doc["language"] or "und"][cause] += 1
    return {
        "docs_by_cause": dict(causes.most_common()),
        "by_language": {k: dict(v) for k, v in sorted(by_language.items(), key=lambda kv: -sum(kv[1].values()))},
        "chars_kept_only_by_datatrove": [
            f"U+{ord(c):04X} {unicodedata.name(c, '?')} ({unicodedata.category(c)}): {n} docs" for c, n in char_docs.most_common(25)
        ],
        "examples": dict(examples),
    }


def difference_groups(cmp: dict) -> list[set]:
    """The differing documents, grouped: documents linked by either tool's clusters."""
    ff, dt = cmp["_ff"], cmp["_dt"]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for doc_id in cmp["_differing"]:
        for other in ff[doc_id] | dt[doc_id]:
            parent[find(other)] = find(doc_id)
    grouped: dict[str, set] = defaultdict(set)
    for doc_id in parent:
        grouped[find(doc_id)].add(doc_id)
    return sorted(grouped.values(), key=lambda g: (-len(g), min(g)))


def explain_differences(cmp: dict, status: dict, docs: dict, dt_view: dict, splitters: dict, max_chars: int | None) -> dict:
    """Per differing group: both tools' clusters, each member's signature state and why it differs,
    and the true 5-gram Jaccard (under each tool's words) of the pairs only one tool joins."""
    import unicodedata

    ff, dt = cmp["_ff"], cmp["_dt"]
    views: dict[str, tuple[dict, dict]] = {}
    causes_total: Counter = Counter()
    report = []
    for group in difference_groups(cmp):
        entries, group_causes = [], Counter()
        for doc_id in sorted(group):
            doc = docs[doc_id]
            entry = {
                "id": doc_id,
                "url": doc["url"],
                "language": doc["language"],
                "content_type": doc["content_type"],
                "chars": len(doc["text"] or ""),
                "fineflow_cluster_size": len(ff[doc_id]),
                "datatrove_cluster_size": len(dt[doc_id]),
                "signature": status[doc_id],
            }
            if dt_view.get(doc_id, {}).get("words") is not None:
                mine, theirs = fineflow_view(doc, splitters, max_chars), dt_view[doc_id]
                views[doc_id] = (mine, theirs)
                entry.update(fineflow_words=len(mine["words"]), datatrove_words=len(theirs["words"]), splitter=mine["splitter"])
                causes = []
                if status[doc_id] not in ("same", "both_none"):
                    if mine["normalized"] != theirs["normalized"]:
                        causes.append("normalization")
                        kept = Counter(c for c in theirs["normalized"] if c not in mine["normalized"])
                        entry["chars_kept_only_by_datatrove"] = [
                            f"U+{ord(c):04X} {unicodedata.name(c, '?')} ({unicodedata.category(c)}) x{n}" for c, n in kept.most_common(4)
                        ]
                    if mine["words"] != theirs["words"] and mine["normalized"] == theirs["normalized"]:
                        causes.append(f"word splitting ({mine['splitter']})")
                    if mine["words"] != theirs["words"]:
                        entry["word_changes"] = word_diff(mine["words"], theirs["words"])
                    if min(len(mine["words"]), len(theirs["words"])) < N_GRAMS:
                        causes.append(f"fewer than {N_GRAMS} words")
                    if not causes:
                        causes.append("unexplained (same words, different signature)")
                entry["causes"] = causes
                group_causes.update(causes)
            entries.append(entry)
        if all(e["signature"] in ("same", "both_none") for e in entries):
            group_causes["clustering (identical signatures, different clusters)"] += 1
        pairs = []
        members = sorted(group)
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                together_ff, together_dt = b in ff[a], b in dt[a]
                if together_ff != together_dt and a in views and b in views and len(pairs) < PAIR_LIMIT:
                    pairs.append(
                        {
                            "a": a,
                            "b": b,
                            "joined_by": "fineflow" if together_ff else "datatrove",
                            "jaccard_fineflow_words": jaccard(shingles(views[a][0]["words"]), shingles(views[b][0]["words"])),
                            "jaccard_datatrove_words": jaccard(shingles(views[a][1]["words"]), shingles(views[b][1]["words"])),
                        }
                    )
        causes_total.update(group_causes.keys())
        report.append(
            {
                "docs": len(group),
                "fineflow_clusters": [sorted(c) for c in sorted({ff[d] for d in group}, key=len, reverse=True)],
                "datatrove_clusters": [sorted(c) for c in sorted({dt[d] for d in group}, key=len, reverse=True)],
                "causes": sorted(group_causes),
                "members": entries,
                "split_pairs": pairs,
            }
        )
    return {"groups": len(report), "groups_by_cause": dict(causes_total), "details": report}


def fineflow_on_datatrove_signatures(ff_result: dict, dt_keys: dict, upstream: Path, shards: int, fingerprint: str, work: Path) -> dict:
    """fineflow's buckets, cluster and remove steps over datatrove's band keys (isolates the clustering)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fineflow.documents import write_table
    from fineflow.manifest import write_manifest
    from fineflow.steps import run_shard
    from fineflow.tasks.dedup.config import DedupStage
    from fineflow.tasks.dedup.plan import plan_dedup

    stage = DedupStage.model_validate({"stage": "dedup", "exact": False, "url": False, "near": True})
    plans = plan_dedup(stage, _context(str(work / "fineflow-injected"), fingerprint + "-dt", str(upstream), shards))
    for number in range(shards):
        table = pq.read_table(Path(ff_result["folders"]["signatures"]) / f"part-{number:05d}.parquet")
        ids = table.column("id").to_pylist()
        for band in range(BANDS):
            index = table.schema.get_field_index(f"band_{band:02d}")
            values = [dt_keys[d][band] if d in dt_keys else None for d in ids]
            table = table.set_column(index, table.schema.field(index), pa.array(values, pa.uint64()))
        write_table(plans[0].location.shard_url(number), table)
    folders = {}
    for plan in plans[1:]:
        results = [run_shard(plan.function, shard, plan.params, plan.location) for shard in plan.shards]
        write_manifest(plan.location, plan.fingerprint.components, results)
        folders[plan.step] = plan.location.data_folder
    folders["rejects"] = plans[-1].location.rejects_folder
    return {"folders": folders}


# ---------------------------------------------------------------------------------------------
# orchestration (Prefect + Dask), 1x
# ---------------------------------------------------------------------------------------------


def orchestration(corpus: Path, work: Path, fineflow_cli: Path, workers: int) -> dict:
    import yaml

    home = work / "fineflow-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(FINEFLOW_HOME=str(home), PREFECT_HOME=str(home / "prefect-client"))
    spec = work / "pipeline.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "dedup-bench",
                "storage": str(work / "orchestrated-storage"),
                "dask": {"n_workers": workers, "threads_per_worker": 1},
                "stages": [
                    {"stage": "crawl", "inputs": [f"{corpus}/*.warc.gz"], "extractor": "resiliparse", "include_text_plain": True},
                    {"stage": "dedup", "exact": False, "url": False, "near": True},
                ],
            },
            sort_keys=False,
        )
    )

    def cli(*args: str) -> None:
        process = subprocess.run([str(fineflow_cli), *args], env=env, cwd=work, capture_output=True, text=True)
        if process.returncode != 0:
            raise RuntimeError(f"fineflow {' '.join(args)} failed:\n{process.stderr[-4000:]}")

    cli("server", "start")  # started beforehand: its startup is not part of the run
    try:
        started = time.perf_counter()
        cli("run", str(spec), "--summary-json", str(work / "s.json"))
        wall = time.perf_counter() - started
    finally:
        cli("server", "stop")
    stages = {s["name"]: s for s in json.loads((work / "s.json").read_text())["stages"]}
    dedup = stages["dedup"]
    return {
        "dask_workers": workers,
        "wall_s": round(wall, 2),
        "crawl_s": stages["crawl"]["seconds"],
        "dedup_s": dedup["seconds"],
        "dedup_docs_in": dedup["docs_in"],
        "dedup_docs_out": dedup["docs_out"],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def speed_table(runs: dict) -> str:
    lines = table_head(
        "scale",
        "tool",
        "docs",
        "signatures",
        "buckets",
        "cluster",
        "remove/filter",
        "total",
        "CPU",
        "docs/s",
        "cluster step peak RSS (growth)",
        "overall peak RSS",
        "speedup vs datatrove (wall / CPU)",
    )
    for scale, run in runs.items():
        dt_total, dt_cpu = run["datatrove"]["total_seconds"], run["datatrove"]["total_cpu_seconds"]
        tools = [("fineflow", run["fineflow"])]
        if "fineflow_spacy_en" in run:
            tools.append(("fineflow, spacy:en for all", run["fineflow_spacy_en"]))
        tools.append(("datatrove 0.10.1", run["datatrove"]))
        for tool, r in tools:
            s = r["steps"]
            lines.append(
                f"| {scale} | {tool} | {run['docs']:,} | "
                + " | ".join(f"{s[step]['seconds']:.1f} s" for step in STEPS)
                + f" | **{r['total_seconds']:.1f} s** | {r['total_cpu_seconds']:.1f} s | {run['docs'] / r['total_seconds']:,.0f} | "
                f"{s['cluster']['peak_rss_mb']:,.0f} MB (+{s['cluster']['extra_rss_mb']:,.0f} MB) | {r['peak_rss_mb']:,.0f} MB | "
                f"{dt_total / r['total_seconds']:.2f}x / {dt_cpu / r['total_cpu_seconds']:.2f}x |"
            )
    return "\n".join(lines)


def fidelity_table(runs: dict) -> str:
    lines = table_head(
        "scale",
        "fineflow words",
        "docs",
        "clusters (fineflow / datatrove)",
        "docs in clusters",
        "removed",
        "identical clusters (agreement)",
        "differing docs",
        "same duplicate flag",
        "identical band keys",
    )
    for scale, run in runs.items():
        for label, cmp in run["fidelity"].items():
            ff, dt = cmp["fineflow"], cmp["datatrove"]
            sig = cmp.get("signatures", {}).get("identical_fraction")
            lines.append(
                f"| {scale} | {label} | {ff['docs']:,} | {ff['clusters']:,} / {dt['clusters']:,} | "
                f"{ff['docs_in_clusters']:,} / {dt['docs_in_clusters']:,} | {ff['removed']:,} / {dt['removed']:,} | "
                f"**{cmp['agreement']:.2%}** | {cmp['differing_docs']:,} | {cmp['same_flag']:.2%} | {'' if sig is None else f'{sig:.2%}'} |"
            )
    return "\n".join(lines)


def strip_private(value):
    if isinstance(value, dict):
        return {k: strip_private(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [strip_private(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def max_text_chars() -> int | None:
    """fineflow's default prefix limit for shingling (None where this version has none)."""
    from fineflow.tasks.dedup.config import DedupStage

    field = DedupStage.model_fields.get("max_text_chars")
    return field.default if field is not None else None


def bench_scale(replicas: int, cache: Path, args, work: Path, seed: int) -> dict:
    started = time.perf_counter()
    table = replicate(cache, replicas, seed)
    shards = 8 * replicas  # the crawl's shard size (about 630 documents) at every scale
    folder = work / f"x{replicas}"
    upstream, jsonl = write_inputs(table, folder, shards)
    fingerprint = f"bench-{cache.stem.rsplit('-', 1)[-1][:12]}-x{replicas}-s{seed}"
    print(f"[{replicas}x] {table.num_rows:,} documents in {shards} shards, prepared in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    detailed = replicas == 1
    languages = sorted({lang or "und" for lang in table.column("language").to_pylist()})
    from fineflow.tasks.dedup.config import DedupStage

    if "word_splitter" in DedupStage.model_fields:
        english = {"word_splitter": "spacy:en"}
    else:  # older fineflow: one override per language
        english = {"word_splitters": {lang: "spacy:en" for lang in languages}}
    ff = run_fineflow(upstream, shards, fingerprint, folder, "default")
    dt = run_datatrove(args.datatrove_python, jsonl, folder, dump_signatures=True)
    run = {
        "docs": table.num_rows,
        "shards": shards,
        "text_chars": sum(len(t) for t in table.column("text").to_pylist()),
        "fineflow": ff,
        "datatrove": {k: v for k, v in dt.items() if k not in ("membership", "band_keys")},
    }
    dt_members, dt_keys = datatrove_membership(dt), dt["band_keys"]
    variants = {"per language (default)": (ff, {})}
    if detailed:
        run["fineflow_spacy_en"] = run_fineflow(upstream, shards, fingerprint + "-en", folder, "spacy-en", english)
        variants["spacy:en for all (ablation)"] = (run["fineflow_spacy_en"], english)
    injected = fineflow_on_datatrove_signatures(ff, dt_keys, upstream, shards, fingerprint, folder)
    variants["datatrove's band keys (clustering only)"] = (injected, None)
    columns = ["id", "url", "text", "language", "content_type"]
    docs = {row["id"]: row for row in table.select(columns).to_pylist()}
    doc_languages = {d: docs[d]["language"] for d in docs}
    limit = max_text_chars()
    dt_view = None
    run["fidelity"] = {}
    for label, (result, splitters) in variants.items():
        cmp = compare(fineflow_membership(result), dt_members)
        if splitters is not None:
            ff_keys = fineflow_band_keys(result)
            cmp["signatures"] = signature_agreement(ff_keys, dt_keys, doc_languages)
        if detailed and splitters is not None:
            status = cmp["signatures"]["_status"]
            if dt_view is None:  # words only for the documents of differing groups (both variants)
                wanted: set[str] = set()
                for other, other_splitters in variants.values():
                    if other_splitters is None:
                        continue
                    other_cmp = cmp if other is result else compare(fineflow_membership(other), dt_members)
                    wanted |= {d for g in difference_groups(other_cmp) for d in sorted(g)[:50]}
                wanted = set(sorted(wanted)[:INSPECT_LIMIT]) if len(wanted) > INSPECT_LIMIT else wanted
                print(f"[{replicas}x] datatrove's normalization of every document, words of {len(wanted)} ...", file=sys.stderr, flush=True)
                dt_view = inspect_datatrove(docs, wanted, folder, args.datatrove_python)
            cmp["signatures"]["causes"] = signature_causes(status, docs, dt_view, splitters, limit)
            cmp["differences"] = explain_differences(cmp, status, docs, dt_view, splitters, limit)
        elif cmp["_differing"]:
            groups = difference_groups(cmp)
            status = cmp.get("signatures", {}).get("_status")
            cmp["differences"] = {"groups": len(groups)}
            if status is not None:
                cmp["differences"]["groups_with_identical_signatures"] = sum(
                    all(status[d] in ("same", "both_none") for d in g) for g in groups
                )
        run["fidelity"][label] = cmp
        print(f"[{replicas}x] {label}: agreement {cmp['agreement']:.4%}", file=sys.stderr)
    return run


def write_record(out: Path, args, source, cache, host: dict, runs: dict, orchestrated) -> None:
    """Write the results JSON for the scales measured so far (rewritten after each one)."""
    largest = runs[max(runs, key=lambda key: int(key.rstrip("x")))]
    speedup = largest["datatrove"]["total_seconds"] / largest["fineflow"]["total_seconds"]
    record = {
        "corpus": str(args.corpus.resolve()),
        "source": source,
        "input_cache": str(cache),
        "minhash": {"n_grams": N_GRAMS, "bands": BANDS, "rows": ROWS, "seed": SEED, "hash": "xxhash64"},
        "perturbation_seed": args.seed,
        "machine": host,
        "targets": {"agreement": FIDELITY_TARGET, "speedup_at_largest_scale": SPEED_TARGET},
        "speedup_at_largest_scale": round(speedup, 3),
        "runs": strip_private(runs),
        "orchestration_1x": orchestrated,
        "tables": {"fidelity": fidelity_table(runs), "speed": speed_table(runs)},
    }
    out.write_text(json.dumps(record, indent=1, default=str))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--datatrove-worker":
        datatrove_worker(sys.argv[2], sys.argv[3], sys.argv[4], "--dump-signatures" in sys.argv[5:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--datatrove-inspect":
        datatrove_inspect(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--fineflow-worker":
        fineflow_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7])
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of *.warc.gz")
    parser.add_argument("--replicas", default="1,16", help="comma-separated replication factors")
    parser.add_argument("--datatrove-python", default=DEFAULT_DATATROVE_PYTHON, help="python of the datatrove 0.10.1 environment")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/dedup-<timestamp>.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the copies' perturbations")
    parser.add_argument("--no-orchestration", action="store_true", help="skip the Prefect + Dask run at 1x")
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="keep intermediate files in this folder")
    args = parser.parse_args()
    replicas = [int(r) for r in args.replicas.split(",") if r.strip()]
    if not Path(args.datatrove_python).exists():
        parser.error(f"no datatrove python at {args.datatrove_python} (see the module docstring to create one)")

    host = machine_info(("fineflow", "polars", "xxhash", "spacy", "numpy"))
    cache, source = extract_documents(args.corpus.resolve())
    work = args.keep or Path(tempfile.mkdtemp(prefix="dedup-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    runs, orchestrated = {}, None
    out = args.out or RESULTS_DIR / f"dedup-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for factor in replicas:
            runs[f"{factor}x"] = bench_scale(factor, cache, args, work, args.seed)
            # Saved after every scale: the 16x run takes most of an hour, and a later failure
            # should not cost the scales already measured.
            write_record(out, args, source, cache, host, runs, None)
        if 1 in replicas and not args.no_orchestration:
            print("[1x] orchestrated run (fineflow run: crawl -> dedup, Prefect + Dask) ...", file=sys.stderr, flush=True)
            (work / "orchestration").mkdir()
            try:
                fineflow_cli = Path(sys.executable).with_name("fineflow")
                orchestrated = orchestration(args.corpus.resolve(), work / "orchestration", fineflow_cli, args.dask_workers)
            except RuntimeError as error:
                orchestrated = {"error": str(error)[-2000:]}
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    speed, fidelity = speed_table(runs), fidelity_table(runs)
    print("\n### Fidelity (cluster membership vs datatrove 0.10.1)\n")
    print(fidelity)
    print("\n### Speed and memory (single process, no Prefect/Dask)\n")
    print(speed)
    if orchestrated and "error" not in orchestrated:
        one = runs["1x"]["fineflow"]["total_seconds"]
        print(
            f"\nOrchestrated 1x (`fineflow run`, crawl -> dedup, Prefect + Dask, {orchestrated['dask_workers']} workers): "
            f"whole run {orchestrated['wall_s']:.1f} s, crawl stage {orchestrated['crawl_s']:.1f} s, dedup stage "
            f"{orchestrated['dedup_s']:.1f} s (compute only, one process: {one:.1f} s); documents kept: "
            f"{orchestrated['dedup_docs_out']:,} (compute only: {runs['1x']['fidelity']['per language (default)']['fineflow']['docs'] - runs['1x']['fidelity']['per language (default)']['fineflow']['removed']:,})."
        )
    write_record(out, args, source, cache, host, runs, orchestrated)
    print(f"\nraw numbers: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
