"""Benchmark the tokenize stage against datatrove 0.10.1: tokens per CPU-second, peak RSS, identical ids.

All sides get the SAME documents: the texts of web-small extracted by fineflow's crawl step
(trafilatura; the Parquet cache ``bench/results/filter-input-<crawl fingerprint>.parquet`` that
``filter_bench.py`` makes, made here if missing), cut into ``--shards`` Parquet shards of
consecutive documents, and the SAME tokenizer: GPT-2. fineflow uses its packaged GPT-2 files
(``encoder.json`` + ``vocab.bpe``); every other side gets a ``tokenizer.json`` built from those
files by fineflow's Hugging Face engine (``encoders._hf_tokenizer(...)[0].save``).

Three phases; in each, every side runs in its own subprocess (one core: ``RAYON_NUM_THREADS=1``,
``TOKENIZERS_PARALLELISM=false``) and the sides take turns over the same steps (one shard each;
side A runs step k while the others wait, then side B..., the first side rotating per step), so
other load on the machine falls on all alike. CPU time is ``time.process_time`` of the side's
process around each step (all its threads); tokenizer loading is timed apart, before the steps.

1. ``encode`` - the encoders alone, texts in memory, ids returned as Python lists:
   fineflow ``Encoder.encode_texts`` with engine tiktoken (what ``auto`` picks for GPT-2) and with
   engine hf; gigatoken 0.10's HF-compatible mode (``gigatoken.Tokenizer(tokenizer.json).as_hf()``,
   ``add_special_tokens=False``) and its native ``encode_batch_list(parallel=False)``. The ids of
   every document are saved and compared with fineflow's tiktoken engine: the identical-ids check
   that engine ``auto`` relies on.
2. ``count`` - the count step: fineflow's ``count_shard`` (``write: none``; it also counts words,
   adds ``source_domain``, aggregates and commits Parquet) per shard, then the stats step; against
   datatrove ``ParquetReader -> TokensCounter(count_eos_token=True) -> ParquetWriter`` per rank.
   Per-document counts of both are compared by id.
3. ``write`` - the write path: fineflow's ``count_shard`` with ``write: megatron`` per shard, then
   the stats and merge steps (one global shuffle into one ``.bin/.idx``); against datatrove
   ``ParquetReader -> DocumentTokenizer(eos_token="<|endoftext|>", shuffled)`` per rank, then
   ``DocumentTokenizerMerger``. The written documents are compared as multisets of token sequences
   (both shuffle, differently), and with the encode phase's ids + EOS.

Tokens per CPU-second count the input's GPT-2 tokens without the end-of-document token (18.7 M on
web-small), the same number for every side. Peak RSS is the side's process ``VmHWM`` at its end;
the encode phase's workers hold every text and every id, so its RSS is not a per-worker figure.

Every document is counted: ``max_chars`` is raised above fineflow's default (2,000,000 characters;
web-small has 4 longer texts, which a default run sends to rejects).

Usage:
    .venv/bin/python bench/tokenize_bench.py [--corpus DIR] [--limit N] [--shards 8] [--phases encode,count,write]
        [--datatrove-python PY] [--gigatoken-python PY] [--fineflow-engines auto[,hf]] [--out FILE]

Environments (never installed into fineflow's):
    datatrove: ``bench/.venv-datatrove`` as in filter_bench.py, plus pyarrow for its ParquetReader:
        VIRTUAL_ENV=bench/.venv-datatrove uv pip install "datatrove[processing]==0.10.1" pyarrow==26.0.1 ...
    gigatoken (optional; skipped when absent):
        python3 -m venv bench/.venv-gigatoken && bench/.venv-gigatoken/bin/pip install gigatoken==0.10.0 numpy
(``--datatrove-python`` default ``$DATATROVE_PYTHON`` or ``bench/.venv-datatrove/bin/python``;
``--gigatoken-python`` default ``$GIGATOKEN_PYTHON`` or ``bench/.venv-gigatoken/bin/python``.)
Workers import only the standard library, numpy and their tool; fineflow's run under this interpreter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from common import machine_info  # bench/common.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "web-small"
DEFAULT_DATATROVE_PYTHON = os.environ.get("DATATROVE_PYTHON", str(ROOT / "bench" / ".venv-datatrove" / "bin" / "python"))
DEFAULT_GIGATOKEN_PYTHON = os.environ.get("GIGATOKEN_PYTHON", str(ROOT / "bench" / ".venv-gigatoken" / "bin" / "python"))
ONE_CORE = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
EOS = "<|endoftext|>"
EOS_ID = 50256
MAX_CHARS = 100_000_000
# Not in web-small: how each side encodes a special token's string inside a document's text.
PROBES = ["the end<|endoftext|>next document"]
WARMUP_DOCS = 20
SEED = 0
SHOWN_DIFFERENCES = 4
PHASES = ("encode", "count", "write")


# ---------------------------------------------------------------------------------------------
# workers (each side's subprocess; standard library + numpy + its tool at top level)
# ---------------------------------------------------------------------------------------------


def _memory() -> dict:
    """This process' current and peak resident set (MB), from /proc."""
    found = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return {"rss_mb": found.get("VmRSS"), "peak_rss_mb": found.get("VmHWM")}


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _encode_side(side: str, config: dict):
    """(encode(texts) -> list of id lists, versions) for an encode-phase side."""
    if side.startswith("fineflow-"):
        from importlib.metadata import version

        from fineflow.tasks.tokenize.config import TokenizerSpec
        from fineflow.tasks.tokenize.encoders import describe, load_encoder

        engine = side.removeprefix("fineflow-")
        encoder = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2", engine=engine)))
        assert encoder.engine == engine
        library = "tiktoken" if engine == "tiktoken" else "tokenizers"
        return encoder.encode_texts, {library: version(library)}
    if side.startswith("gigatoken-"):
        from importlib.metadata import version

        import gigatoken

        tokenizer = gigatoken.Tokenizer(config["tokenizer_json"])
        versions = {"gigatoken": version("gigatoken")}
        if side == "gigatoken-hf":
            compatible = tokenizer.as_hf()
            return lambda texts: compatible(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"], versions
        return lambda texts: tokenizer.encode_batch_list(texts, parallel=False), versions
    raise ValueError(side)


class _Protocol:
    """The parent's lines on stdin; the replies on the real stdout (libraries' prints go to stderr)."""

    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, message: dict) -> None:
        self.out.write(json.dumps(message) + "\n")

    def steps(self):
        for line in sys.stdin:
            line = line.strip()
            if line == "end":
                return
            yield int(line)


def encode_worker(side: str, config: dict) -> None:
    import numpy as np

    protocol = _Protocol()
    chunks = [[d["text"] for d in _read_jsonl(path)] for path in config["chunks"]]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    encode, versions = _encode_side(side, config)
    load = {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
    encode([d["text"] for d in _read_jsonl(config["warm_chunk"])])  # first calls (regex compilation, caches), untimed
    lengths, arrays = [], []
    probes = [[int(i) for i in row] for row in encode(PROBES)]
    protocol.send({"ready": True, "load": load, "versions": versions, "probes": probes, **_memory()})
    for k in protocol.steps():
        texts = chunks[k]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        ids = encode(texts)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        step_tokens = 0
        for row in ids:  # kept for the identical-ids check, untimed
            row = np.asarray(row, dtype=np.uint32)
            lengths.append(len(row))
            arrays.append(row)
            step_tokens += len(row)
        protocol.send({"step": k, "cpu_s": cpu, "wall_s": wall, "tokens": step_tokens})
    np.savez(config["ids_out"], lengths=np.asarray(lengths, np.int64),
             tokens=np.concatenate(arrays) if arrays else np.array([], np.uint32))
    protocol.send({"end": True, **_memory()})


def datatrove_worker(phase: str, config: dict) -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    protocol = _Protocol()
    from collections import deque
    from importlib.metadata import version

    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens import DocumentTokenizer, DocumentTokenizerMerger, TokensCounter
    from datatrove.pipeline.writers import ParquetWriter

    try:
        from loguru import logger as loguru_logger

        loguru_logger.remove()
    except ImportError:
        pass

    work, shards, tokenizer_json = Path(config["work"]), config["shards"], config["tokenizer_json"]
    reader = ParquetReader(config["input_folder"], glob_pattern="part-*.parquet", text_key="text", id_key="id")
    if phase == "count":
        counter = TokensCounter(tokenizer_json, count_eos_token=True)
        steps = [reader, counter, ParquetWriter(str(work / "counted"))]
        tokenizing = counter
    else:
        tokenizing = DocumentTokenizer(
            output_folder=str(work / "tokenized"), local_working_dir=str(work / "scratch"),
            tokenizer_name_or_path=tokenizer_json, eos_token=EOS, save_filename="bench", seed=SEED,
        )
        steps = [reader, tokenizing]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    _ = tokenizing.tokenizer  # loads tokenizer.json (a cached property), as the first document would
    load = {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
    # Warm-up, untimed: a rank over the first documents (lazy imports, first calls), its own output.
    warm_reader = ParquetReader(config["warm_folder"], glob_pattern="part-*.parquet", text_key="text", id_key="id")
    if phase == "count":
        warm = [warm_reader, counter, ParquetWriter(str(work / "warm-counted"))]
    else:
        warm = [warm_reader, DocumentTokenizer(
            output_folder=str(work / "warm-tokenized"), local_working_dir=str(work / "warm-scratch"),
            tokenizer_name_or_path=tokenizer_json, eos_token=EOS, save_filename="warm", seed=SEED,
        )]
    data = None
    for step in warm:
        data = step(data, 0, 1)
    if data is not None:
        deque(data, maxlen=0)
    versions = {"datatrove": version("datatrove"), "tokenizers": version("tokenizers"), "pyarrow": version("pyarrow")}
    probes = [encoding.ids for encoding in tokenizing.tokenizer.encode_batch(PROBES)]  # as the step calls it
    protocol.send({"ready": True, "load": load, "versions": versions, "probes": probes, **_memory()})
    for k in protocol.steps():
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if k < shards:  # one rank, as datatrove's executor runs it (the step instances are reused)
            data = None
            for step in steps:
                data = step(data, k, shards)
            if data is not None:
                deque(data, maxlen=0)
            what = "rank"
        else:  # the final step: the merger (write phase); nothing for count
            if phase == "write":
                merger = DocumentTokenizerMerger(
                    input_folder=str(work / "tokenized"), output_folder=str(work / "merged"),
                    save_filename="merged", seed=SEED, progress=False,
                )
                deque(merger(None, 0, 1) or [], maxlen=0)
            what = "merge" if phase == "write" else "none"
        protocol.send({"step": k, "what": what, "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0})
    protocol.send({"end": True, **_memory()})


def fineflow_worker(phase: str, engine: str, config: dict) -> None:
    protocol = _Protocol()
    from importlib.metadata import version

    from fineflow import registry
    from fineflow.manifest import write_manifest
    from fineflow.planning import plan_stage
    from fineflow.steps import Source, StageInputs, run_shard
    from fineflow.tasks.tokenize.config import TokenizerSpec
    from fineflow.tasks.tokenize.encoders import describe, load_encoder

    work, shards = Path(config["work"]), config["shards"]
    stage = {
        "stage": "tokenize", "tokenizers": {"gpt2": {"packaged": "gpt2", "engine": engine}},
        "write": "megatron" if phase == "write" else "none", "max_chars": MAX_CHARS, "seed": SEED,
    }
    inputs = StageInputs((Source("bench", "bench-input", config["input_folder"], shards),))
    wall0, cpu0 = time.perf_counter(), time.process_time()  # planning hashes the files and loads the writer's encoder
    plans = {plan.step: plan for plan in plan_stage(registry.validate_stage(stage), str(work), inputs, "tokenize")}
    encoder = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2", engine=engine)))  # cached: count_shard reuses it
    load = {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
    # Warm-up, untimed: the same stage over the first documents, in its own storage root.
    warm_inputs = StageInputs((Source("bench", "bench-warm", config["warm_folder"], 1),))
    for plan in plan_stage(registry.validate_stage(stage), str(work / "warm"), warm_inputs, "tokenize"):
        for shard in plan.shards:
            run_shard(plan.function, shard, plan.params, plan.location)
    versions = {"fineflow": version("fineflow"), "engine": encoder.engine,
                encoder.engine if encoder.engine == "tiktoken" else "tokenizers":
                version("tiktoken" if encoder.engine == "tiktoken" else "tokenizers")}
    probes = [encoder.document(row) for row in encoder.encode_texts(PROBES)]  # as the step writes them
    protocol.send({"ready": True, "load": load, "versions": versions, "probes": probes, **_memory()})
    results: dict[str, list] = {step: [] for step in plans}
    for k in protocol.steps():
        wall0, cpu0 = time.perf_counter(), time.process_time()
        timings = {}
        if k < shards:
            plan = plans["count"]
            results["count"].append(run_shard(plan.function, plan.shards[k], plan.params, plan.location))
            what = "count"
        else:  # the final steps, each timed: stats, and groups + merge with a writer
            for step in ("stats", "groups", "merge"):
                if step in plans:
                    plan = plans[step]
                    c0 = time.process_time()
                    results[step] += [run_shard(plan.function, s, plan.params, plan.location) for s in plan.shards]
                    timings[step] = time.process_time() - c0
            what = "+".join(timings)
        protocol.send({"step": k, "what": what, "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
                       "parts_cpu_s": timings})
    for step, plan in plans.items():  # untimed: the manifests, so the output can be inspected
        if results[step]:
            write_manifest(plan.location, plan.fingerprint.components, results[step], plan.name)
    protocol.send({"end": True, "folders": {step: plan.location.folder for step, plan in plans.items()}, **_memory()})


def worker_main(argv: list[str]) -> None:
    side, phase, config_path = argv
    config = json.loads(Path(config_path).read_text())
    if phase == "encode":
        encode_worker(side, config)
    elif side == "datatrove":
        datatrove_worker(phase, config)
    else:
        fineflow_worker(phase, side.removeprefix("fineflow-"), config)


# ---------------------------------------------------------------------------------------------
# parent: input, lockstep runs
# ---------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, side: str, python: str, phase: str, config: dict, work: Path) -> None:
        self.side = side
        path = work / f"{phase}-{side}.json"
        path.write_text(json.dumps(config))
        env = {**os.environ, **ONE_CORE, "PYTHONWARNINGS": "ignore"}
        self.process = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--worker", side, phase, str(path)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env,
        )

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.side} worker ended (exit code {self.process.wait()})")
        return json.loads(line)

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_lockstep(phase: str, sides: dict[str, str], configs: dict[str, dict], steps: int, work: Path) -> dict:
    """Start every side's worker, run the steps in turns, return each side's record."""
    workers = {side: Worker(side, python, phase, configs[side], work) for side, python in sides.items()}
    try:
        records = {}
        for side, worker in workers.items():
            ready = worker.receive()
            records[side] = {"load": ready["load"], "versions": ready["versions"], "ready_rss_mb": ready["rss_mb"],
                             "probes": ready.get("probes"), "steps": []}
        names = list(workers)
        for k in range(steps):
            order = names[k % len(names):] + names[: k % len(names)]  # the first side rotates
            for side in order:
                workers[side].send(str(k))
                records[side]["steps"].append(workers[side].receive())
            print(f"  [{phase}] step {k + 1}/{steps}: " + ", ".join(
                f"{side} {records[side]['steps'][-1]['cpu_s']:.1f} s" for side in names), file=sys.stderr, flush=True)
        for side, worker in workers.items():
            worker.send("end")
            end = worker.receive()
            records[side].update(peak_rss_mb=end["peak_rss_mb"], end_rss_mb=end["rss_mb"], folders=end.get("folders"))
            if worker.process.wait() != 0:
                raise RuntimeError(f"{side} worker failed with exit code {worker.process.returncode}")
        return records
    finally:
        for worker in workers.values():
            worker.close()


def prepare_input(docs: list[dict], shards: int, work: Path) -> dict:
    """``part-NNNNN.parquet`` shards of consecutive documents and the same as JSONL (the encode
    phase's), and a one-shard warm-up input of the first documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(part: list[dict], folder: Path, n: int) -> str:
        folder.mkdir(exist_ok=True)
        table = pa.table({key: pa.array([d[key] for d in part], pa.string()) for key in ("id", "url", "text", "language")})
        pq.write_table(table, folder / f"part-{n:05d}.parquet")
        path = work / f"{folder.name}-{n:05d}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for d in part:
                f.write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")
        return str(path)

    size = -(-len(docs) // shards)
    chunks = [write(docs[n * size : (n + 1) * size], work / "input", n) for n in range(shards)]
    warm_chunk = write(docs[:WARMUP_DOCS], work / "warm", 0)
    return {"input_folder": str(work / "input"), "chunks": chunks, "warm_folder": str(work / "warm"), "warm_chunk": warm_chunk}


def save_tokenizer_json(path: Path) -> None:
    from fineflow.tasks.tokenize.config import TokenizerSpec
    from fineflow.tasks.tokenize.encoders import _hf_tokenizer, describe

    tokenizer, _ = _hf_tokenizer(describe(TokenizerSpec(packaged="gpt2", engine="hf")))
    tokenizer.save(str(path))


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def _load_ids(path: Path) -> list:
    import numpy as np

    data = np.load(path)
    ends = np.cumsum(data["lengths"])
    return np.split(data["tokens"], ends[:-1]) if len(ends) else []


def _decode(ids) -> str:
    from fineflow.tasks.tokenize.config import TokenizerSpec
    from fineflow.tasks.tokenize.encoders import describe, load_encoder

    encoder = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2", engine="tiktoken")))
    return encoder.decode([int(i) for i in ids])


def compare_ids(docs: list[dict], reference: str, ids: dict[str, list]) -> dict:
    """Per side: documents whose ids differ from the reference side's, with a few examples."""
    import numpy as np

    out = {}
    base = ids[reference]
    for side, rows in ids.items():
        if side == reference:
            continue
        differing, examples = 0, []
        for i, (a, b) in enumerate(zip(base, rows)):
            if len(a) == len(b) and np.array_equal(a, b):
                continue
            differing += 1
            if len(examples) < 20:
                n = min(len(a), len(b))
                at = int(np.flatnonzero(a[:n] != b[:n])[0]) if n and (a[:n] != b[:n]).any() else n
                examples.append({
                    "id": docs[i]["id"], "url": docs[i]["url"], "tokens": [len(a), len(b)], "first_difference": at,
                    reference: [int(x) for x in a[max(0, at - 3) : at + 6]], side: [int(x) for x in b[max(0, at - 3) : at + 6]],
                    "text_there": _decode(a[max(0, at - 3) : at + 6]),
                })
        out[side] = {"documents": len(rows), "differing_documents": differing, "examples": examples}
    return out


def _doc_hashes(tokens, ends) -> Counter:
    import numpy as np

    hashes = Counter()
    start = 0
    for end in ends:
        hashes[hashlib.blake2b(np.asarray(tokens[start:end], dtype="<u4").tobytes(), digest_size=16).digest()] += 1
        start = int(end)
    return hashes


def written_documents(ff_merge_folder: str, dt_work: Path, reference_ids: list | None) -> dict:
    """The written documents of both tools as multisets of token sequences; with the encode phase's ids + EOS."""
    import struct

    import numpy as np

    def megatron(prefix: str):
        index = Path(prefix + ".idx").read_bytes()
        dtype = {8: "<u2", 4: "<i4"}[index[17]]
        (count,) = struct.unpack_from("<Q", index, 18)
        lengths = np.frombuffer(index, "<i4", count, 34)
        return np.fromfile(prefix + ".bin", dtype), np.cumsum(lengths.astype(np.int64))

    ff = Counter()
    ff_tokens = ff_files = 0
    for idx in sorted(Path(ff_merge_folder, "artifacts").glob("*.idx")):
        tokens, ends = megatron(str(idx)[:-4])
        ff += _doc_hashes(tokens, ends)
        ff_tokens += len(tokens)
        ff_files += 1
    dt = Counter()
    dt_tokens = dt_files = 0
    for ds in sorted((dt_work / "merged").glob("*.ds")):
        size = int(Path(f"{ds}.metadata").read_text().splitlines()[0].rsplit("|", 1)[1])
        tokens = np.fromfile(ds, {2: "<u2", 4: "<u4"}[size])
        ends = np.fromfile(f"{ds}.index", "<u8").astype(np.int64)
        dt += _doc_hashes(tokens, ends)
        dt_tokens += len(tokens)
        dt_files += 1
    result = {
        "fineflow": {"files": ff_files, "documents": sum(ff.values()), "tokens": ff_tokens},
        "datatrove": {"files": dt_files, "documents": sum(dt.values()), "tokens": dt_tokens},
        "same_documents": ff == dt,
        "only_fineflow": sum((ff - dt).values()),
        "only_datatrove": sum((dt - ff).values()),
    }
    if reference_ids is not None:
        expected = Counter()
        for row in reference_ids:
            expected += _doc_hashes(np.append(row, EOS_ID), [len(row) + 1])
        result["fineflow_equals_encode_phase_ids_plus_eos"] = ff == expected
        result["datatrove_equals_encode_phase_ids_plus_eos"] = dt == expected
    return result


def compare_counts(ff_count_folder: str, dt_work: Path) -> dict:
    """Per-document counts (with EOS) of fineflow's count step and datatrove's TokensCounter, by id."""
    import pyarrow.parquet as pq

    ff = {}
    for path in sorted(Path(ff_count_folder, "data").glob("part-*.parquet")):
        table = pq.read_table(path, columns=["id", "n_tokens_gpt2"])
        ff.update(zip(table["id"].to_pylist(), table["n_tokens_gpt2"].to_pylist()))
    dt = {}
    for path in sorted((dt_work / "counted").glob("*.parquet")):
        table = pq.read_table(path)
        for doc_id, metadata in zip(table["id"].to_pylist(), table["metadata"].to_pylist()):
            dt[doc_id] = metadata["token_count"]
    differing = [doc_id for doc_id in ff if dt.get(doc_id) != ff[doc_id]]
    return {
        "fineflow_documents": len(ff), "datatrove_documents": len(dt), "differing": len(differing),
        "examples": [{"id": d, "fineflow": ff[d], "datatrove": dt.get(d)} for d in differing[:10]],
        "fineflow_tokens": sum(ff.values()), "datatrove_tokens": sum(dt.values()),
    }


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def summarize(record: dict, shards: int, raw_tokens: int, text_bytes: int, documents: int) -> dict:
    steps = record["steps"]
    per_shard = [s for s in steps if s["step"] < shards]
    final = [s for s in steps if s["step"] >= shards]
    cpu_shards = sum(s["cpu_s"] for s in per_shard)
    cpu_final = sum(s["cpu_s"] for s in final)
    cpu = cpu_shards + cpu_final
    wall = sum(s["wall_s"] for s in steps)
    return {
        "cpu_s": round(cpu, 2),
        "cpu_s_per_shard_steps": round(cpu_shards, 2),
        "cpu_s_final_steps": round(cpu_final, 2),
        "final_parts_cpu_s": {k: round(v, 2) for s in final for k, v in (s.get("parts_cpu_s") or {}).items()},
        "wall_s": round(wall, 2),
        "wall_over_cpu": round(wall / cpu, 2) if cpu else None,
        "tokens_per_cpu_s": raw_tokens / cpu if cpu else None,
        "tokens_per_cpu_s_shard_steps": raw_tokens / cpu_shards if cpu_shards else None,
        "mb_per_cpu_s": text_bytes / 1e6 / cpu if cpu else None,
        "docs_per_cpu_s": documents / cpu if cpu else None,
        "load_cpu_s": round(record["load"]["cpu_s"], 3),
        "ready_rss_mb": record["ready_rss_mb"],
        "peak_rss_mb": record["peak_rss_mb"],
    }


LABELS = {
    "fineflow-tiktoken": "fineflow `encode_texts`, engine tiktoken (auto)",
    "fineflow-hf": "fineflow `encode_texts`, engine hf",
    "gigatoken-hf": "gigatoken 0.10 HF-compatible (`as_hf()`)",
    "gigatoken-native": "gigatoken 0.10 native `encode_batch_list`",
    "fineflow-auto:count": "fineflow count step, engine auto (tiktoken)",
    "fineflow-hf:count": "fineflow count step, engine hf",
    "datatrove:count": "datatrove ParquetReader → TokensCounter → ParquetWriter",
    "fineflow-auto:write": "fineflow count (write megatron) + stats + merge, engine auto (tiktoken)",
    "fineflow-hf:write": "fineflow count (write megatron) + stats + merge, engine hf",
    "datatrove:write": "datatrove ParquetReader → DocumentTokenizer + DocumentTokenizerMerger",
}


def _n(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def markdown(summary: dict, checks: dict, raw_tokens: int, documents: int, text_bytes: int) -> str:
    lines = [
        f"GPT-2 over {documents:,} documents ({text_bytes / 1e6:.1f} MB of UTF-8 text, {raw_tokens:,} tokens without EOS); "
        "one process per side, one core; tokens per CPU-second of the side's process.",
        "",
        "| phase | side | tokens/s per core | MB/s per core | CPU s (shard steps + final) | wall / CPU | ratio to datatrove | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase, sides in summary.items():
        reference = sides.get("datatrove")
        for side, s in sides.items():
            label = LABELS.get(f"{side}:{phase}") or LABELS.get(side, side)
            ratio = "–"
            if reference and s["tokens_per_cpu_s"] and side != "datatrove":
                ratio = f"{s['tokens_per_cpu_s'] / reference['tokens_per_cpu_s']:.2f}×"
            elif phase == "encode" and "fineflow-hf" in sides and side != "fineflow-hf":
                ratio = f"{s['tokens_per_cpu_s'] / sides['fineflow-hf']['tokens_per_cpu_s']:.2f}× HF"
            parts = f"{s['cpu_s_per_shard_steps']:.1f} + {s['cpu_s_final_steps']:.1f}" if phase != "encode" else f"{s['cpu_s']:.1f}"
            lines.append(
                f"| {phase} | {label} | {_n(s['tokens_per_cpu_s'])} | {_n(s['mb_per_cpu_s'], 2)} | {parts} "
                f"| {_n(s['wall_over_cpu'], 2)} | {ratio} | {_n(s['peak_rss_mb'])} MB |"
            )
    lines.append("")
    if "ids" in checks:
        lines.append("Identical ids, every document, against fineflow's tiktoken engine:")
        lines.append("")
        for side, c in checks["ids"].items():
            lines.append(f"- {side}: {c['differing_documents']:,} of {c['documents']:,} documents differ")
    if "counts" in checks:
        for engine, c in checks["counts"].items():
            lines.append(f"- count step ({engine}) vs datatrove TokensCounter(count_eos_token=True), per document by id: "
                         f"{c['differing']:,} of {c['fineflow_documents']:,} differ")
    if "written" in checks:
        for engine, c in checks["written"].items():
            extra = ""
            if "fineflow_equals_encode_phase_ids_plus_eos" in c:
                extra = (f"; fineflow = encode-phase ids + EOS: {c['fineflow_equals_encode_phase_ids_plus_eos']}, "
                         f"datatrove: {c['datatrove_equals_encode_phase_ids_plus_eos']}")
            lines.append(f"- written documents ({engine}), as multisets of token sequences: fineflow "
                         f"{c['fineflow']['documents']:,} docs / {c['fineflow']['tokens']:,} tokens, datatrove "
                         f"{c['datatrove']['documents']:,} / {c['datatrove']['tokens']:,}; same: {c['same_documents']}{extra}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of *.warc.gz files")
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    parser.add_argument("--shards", type=int, default=8, help="input shards = timed steps per phase")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated: encode,count,write")
    parser.add_argument("--fineflow-engines", default="auto", help="fineflow engines in the count and write phases (auto,hf)")
    parser.add_argument("--datatrove-python", default=DEFAULT_DATATROVE_PYTHON)
    parser.add_argument("--gigatoken-python", default=DEFAULT_GIGATOKEN_PYTHON)
    parser.add_argument("--extract-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default: bench/results/tokenize-<timestamp>.json)")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    engines = [e for e in args.fineflow_engines.split(",") if e]

    from importlib.metadata import version

    from filter_bench import extracted_documents  # its cached crawl of web-small (trafilatura)

    started = time.perf_counter()
    docs, input_info = extracted_documents(args.corpus.resolve(), args.extract_workers)
    docs = [d for d in docs if isinstance(d["text"], str)]
    if args.limit:
        docs = docs[: args.limit]
    text_bytes = sum(len(d["text"].encode("utf-8")) for d in docs)
    host = machine_info(("fineflow", "tokenizers", "tiktoken", "pyarrow", "numpy"))
    print(f"{len(docs):,} documents, {text_bytes / 1e6:.1f} MB; load average {host['load_average']}", file=sys.stderr, flush=True)
    gigatoken = Path(args.gigatoken_python).exists()
    if not gigatoken:
        print(f"no gigatoken environment at {args.gigatoken_python}: its sides are skipped", file=sys.stderr)

    records: dict[str, dict] = {}
    checks: dict[str, dict] = {}
    ids: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="tokenize-bench-") as tmp:
        work = Path(tmp)
        inputs = prepare_input(docs, args.shards, work)
        tokenizer_json = work / "tokenizer.json"
        save_tokenizer_json(tokenizer_json)
        base = {**inputs, "shards": args.shards, "tokenizer_json": str(tokenizer_json)}

        if "encode" in phases:
            sides = {"fineflow-tiktoken": sys.executable, "fineflow-hf": sys.executable}
            if gigatoken:
                sides |= {"gigatoken-hf": args.gigatoken_python, "gigatoken-native": args.gigatoken_python}
            configs = {side: {**base, "ids_out": str(work / f"ids-{side}.npz")} for side in sides}
            print(f"encode phase: {', '.join(sides)}", file=sys.stderr, flush=True)
            records["encode"] = run_lockstep("encode", sides, configs, args.shards, work)
            ids = {side: _load_ids(work / f"ids-{side}.npz") for side in sides}
            checks["ids"] = compare_ids(docs, "fineflow-tiktoken", ids)

        for phase in ("count", "write"):
            if phase not in phases:
                continue
            sides = {f"fineflow-{engine}": sys.executable for engine in engines} | {"datatrove": args.datatrove_python}
            configs = {side: {**base, "work": str(work / f"{phase}-{side}")} for side in sides}
            for config in configs.values():
                Path(config["work"]).mkdir()
            print(f"{phase} phase: {', '.join(sides)}", file=sys.stderr, flush=True)
            records[phase] = run_lockstep(phase, sides, configs, args.shards + 1, work)
            dt_work = Path(configs["datatrove"]["work"])
            for engine in engines:
                folders = records[phase][f"fineflow-{engine}"]["folders"]
                if phase == "count":
                    checks.setdefault("counts", {})[engine] = compare_counts(folders["count"], dt_work)
                else:
                    checks.setdefault("written", {})[engine] = written_documents(
                        folders["merge"], dt_work, ids.get("fineflow-tiktoken"))

    reference = ids.get("fineflow-tiktoken")
    if reference is not None:
        raw_tokens = int(sum(len(row) for row in reference))
    else:  # from a count output: counts include one EOS per document
        raw_tokens = checks["counts"][engines[0]]["fineflow_tokens"] - len(docs) if "counts" in checks else None
    summary = {phase: {side: summarize(r, args.shards, raw_tokens, text_bytes, len(docs)) for side, r in sides.items()}
               for phase, sides in records.items()}
    table = markdown(summary, checks, raw_tokens, len(docs), text_bytes)
    for side, c in checks.get("ids", {}).items():
        for example in c["examples"][:SHOWN_DIFFERENCES]:
            print(f"- ids differ, {side}: {json.dumps(example, ensure_ascii=False)}", file=sys.stderr)
    print()
    print(table)

    probes = {f"{phase}/{side}": r.get("probes") for phase, sides in records.items() for side, r in sides.items()}
    print(f"\nspecial-token string in the text, {PROBES[0]!r} (count/write sides: with what the step adds):", file=sys.stderr)
    for name, ids in probes.items():
        print(f"  {name}: {ids[0] if ids else None}", file=sys.stderr)

    out = args.out or RESULTS_DIR / f"tokenize-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "input": {**input_info, "documents": len(docs), "text_bytes": text_bytes, "raw_gpt2_tokens": raw_tokens,
                  "limit": args.limit, "shards": args.shards},
        "machine": {**host, "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"fineflow": version("fineflow"),
                     **{f"{phase}/{side}": r["versions"] for phase, sides in records.items() for side, r in sides.items()}},
        "method": {
            "timer": "time.process_time of each side's own process around each step, one core (RAYON_NUM_THREADS=1, "
                     "TOKENIZERS_PARALLELISM=false); sides take turns over the same steps, the first side rotating",
            "tokens": "GPT-2 tokens of the input without end-of-document tokens, the same number for every side",
            "peak_rss": "VmHWM of the side's process at its end (encode phase: holds every text and id)",
            "max_chars": MAX_CHARS,
            "tokenizer_json": "fineflow.tasks.tokenize.encoders._hf_tokenizer(describe(TokenizerSpec(packaged='gpt2')))[0].save()",
        },
        "special_token_probe": {"texts": PROBES, "ids": probes},
        "summary": summary,
        "checks": checks,
        "steps": {phase: {side: r["steps"] for side, r in sides.items()} for phase, sides in records.items()},
        "total_wall_s": round(time.perf_counter() - started, 1),
        "table": table,
    }
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    print(f"\nresult: {out} ({record['total_wall_s']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
