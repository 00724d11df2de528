"""Benchmark the filter stage against datatrove 0.10.1's FineWeb filters: decision agreement and speed.

Both tools get the SAME extracted documents (fineflow's crawl step, trafilatura, over
``--corpus``; cached in ``bench/results/filter-input-<crawl fingerprint>.parquet`` so re-runs
skip extraction) and decide keep/drop for:

* each filter ALONE over every document: URL, language, Gopher repetition, Gopher quality,
  C4 (FineWeb's settings: ``filter_no_terminal_punct=False``), FineWeb quality;
* the full chain URL -> language(en, > 0.65) -> Gopher repetition -> Gopher quality -> C4 ->
  FineWeb quality, where C4's rewritten text is what FineWeb quality sees (in both tools).

Reported:

1. Decision agreement per filter and for the chain, on English documents (``language == "en"``,
   the headline number; target >= 98 %) and on all documents, with the reason agreement among
   documents both tools drop. Every disagreement is saved (doc id, both decisions, datatrove's
   reason, fineflow's reason, fineflow's signal values, URL and a text excerpt).
2. Speed: documents per CPU-second (``time.process_time`` around the filtering loop only, one
   process, one thread, after a warm-up that loads tokenizers/blocklists) for each side, per
   filter and for the chain, and the ratio fineflow / datatrove. Also the time to load the URL
   blocklists on each side. The two tools take turns over the same steps of 250 documents
   (datatrove's worker runs step k while this process waits, then fineflow runs step k), so
   other load on the machine falls on both alike; absolute numbers still depend on that load.

Like for like:

* Word splitting: datatrove's filters take a ``language`` argument (its word tokenizer); the
  worker passes each document's language as the FineWeb2 code of that ISO 639-1 code's default
  row in datatrove's ``tokenizer_assignment.csv`` (``zh`` -> ``cmn_Hani``, ``ar`` -> ``arb_Arab``;
  datatrove 0.10.1 maps the bare codes ``zh`` and ``ar`` to spaCy's ``xx`` tokenizer because its
  "FALSE" flags are truthy strings), else the code itself, falling back to ``en`` where datatrove
  has no tokenizer or it needs a package that is not installed (``ja``, ``ko``, ``vi`` here; listed
  in the result as ``datatrove.language_fallbacks``). fineflow picks its splitter from the
  document's language. English documents are split by spaCy's English tokenizer on both sides.
* Language filter: datatrove's ``LanguageFilter`` re-runs fastText; instead the worker applies
  its rule to the language/score the crawl stored (keep when language == "en" and score > 0.65),
  which is what ``LanguageFilter(languages=["en"], language_threshold=0.65)`` decides for lid.176.
* URL filter: both read fineflow's default lists (``tasks/filter/blocklists/default/``);
  datatrove gets them as ``URLFilter(use_integrated_lists=False, extra_domains=..., ...)``.
* fineflow computes every signal of every configured filter for every document in a listed
  language, then decides (signals and decide are separate steps in the pipeline); datatrove
  stops at the first failing filter. The chain timings include that difference; the per-filter
  timings do not have it.
* Caches: before each filter's timed run fineflow's word splitters are rebuilt (emptying their
  per-chunk cache) and warmed up, and datatrove's ``split_into_parts`` cache is cleared, so no
  filter profits from an earlier filter having split the same texts; caching across different
  documents within a run counts, as it would in a pipeline.
* A datatrove filter that raises (e.g. Gopher quality on a text with no words divides by zero)
  counts as a drop with reason ``exception:<type>``; a real datatrove run would crash there.

Usage:
    .venv/bin/python bench/filter_bench.py [--corpus DIR] [--limit N] [--datatrove-python PY] [--out FILE]

datatrove runs in its own virtual environment (it must not be installed into fineflow's), as a
subprocess of this same file (``--datatrove-worker IN.jsonl OUT.jsonl [--lockstep]``: it reads
documents with id, text, url, language and language_score and writes one line of decisions per
document, then a ``_meta`` line with its timings). Create that environment with:
    uv venv bench/.venv-datatrove && VIRTUAL_ENV=bench/.venv-datatrove uv pip install \\
        "datatrove[processing]==0.10.1" spacy jieba pyahocorasick tldextract nltk
and point ``--datatrove-python`` (or ``DATATROVE_PYTHON``) at ``bench/.venv-datatrove/bin/python``
(default: ``$DATATROVE_PYTHON`` or ``bench/.venv-datatrove/bin/python``).

The worker side imports only the standard library and datatrove; everything fineflow is
imported inside functions run by fineflow's interpreter.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from common import datatrove_url_filter, machine_info  # bench/common.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_LISTS = ROOT / "tasks" / "filter" / "blocklists" / "default"
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "web-small"
DEFAULT_DATATROVE_PYTHON = os.environ.get("DATATROVE_PYTHON", str(ROOT / "bench" / ".venv-datatrove" / "bin" / "python"))

FILTERS = ("url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality")
CHAIN = "chain"
TARGET_LANGUAGE, LANGUAGE_THRESHOLD = "en", 0.65
WARMUP_DOCS = 20
# The timed loops run in steps of CHUNK_DOCS documents, alternating between the two tools (datatrove
# runs step k, then fineflow runs step k, never both at once), so load from other processes on the
# machine falls on both alike. The fast filters (URL, language) run each group in one step,
# repeated until MIN_TIMED_S (at most MAX_REPEATS times), keeping the fastest run.
CHUNK_DOCS = 250
FAST_FILTERS = ("url", "language")
MIN_TIMED_S, MAX_REPEATS = 1.0, 20
MAX_SAVED_DISAGREEMENTS = 300  # per filter, in the JSON
SHOWN_DISAGREEMENTS = 4  # per filter, on stderr
EXCERPT_CHARS = 400

# fineflow's filter options for each benchmarked filter (defaults are datatrove 0.10's).
FINEFLOW_FILTERS = {
    "url": {"name": "url"},
    "language": {"name": "language", "languages": [TARGET_LANGUAGE], "min_score": LANGUAGE_THRESHOLD},
    "gopher_repetition": {"name": "gopher_repetition"},
    "gopher_quality": {"name": "gopher_quality"},
    "c4": {"name": "c4", "filter_no_terminal_punct": False},
    "fineweb_quality": {"name": "fineweb_quality"},
}
# Signal columns that explain each filter's decision on the fineflow side.
SIGNAL_PREFIXES = {
    "url": ("url_",),
    "language": (),
    "gopher_repetition": ("gopher_rep_",),
    "gopher_quality": ("gopher_qual_",),
    "c4": ("c4_",),
    "fineweb_quality": ("fineweb_",),
}
# datatrove's reason names -> fineflow's (the rest are spelled the same).
DATATROVE_REASONS = {
    "gopher_short_doc": "short_doc",
    "gopher_long_doc": "long_doc",
    "gopher_below_avg_threshold": "below_avg_word_length",
    "gopher_above_avg_threshold": "above_avg_word_length",
    "gopher_too_many_hashes": "too_many_hashes",
    "gopher_too_many_ellipsis": "too_many_ellipsis",
    "gopher_too_many_bullets": "too_many_bullets",
    "gopher_too_many_end_ellipsis": "too_many_end_ellipsis",
    "gopher_below_alpha_threshold": "below_alpha_words_ratio",
    "gopher_enough_stop_words": "stop_words",
    "not_en": "not_listed",
}


def schedule(languages: list[str | None]) -> list[tuple[str, str, list[int]]]:
    """The timed steps, (filter, group, document indices), identical on both sides."""
    english = [i for i, lang in enumerate(languages) if lang == TARGET_LANGUAGE]
    other = [i for i, lang in enumerate(languages) if lang != TARGET_LANGUAGE]
    steps = []
    for name in (*FILTERS, CHAIN):
        for group, indices in (("en", english), ("other", other)):
            size = max(len(indices), 1) if name in FAST_FILTERS else CHUNK_DOCS
            for start in range(0, len(indices), size):
                steps.append((name, group, indices[start : start + size]))
    return steps


def execute(steps, run, n_docs: int, label: str, before=None, after=None, begin=None) -> tuple[dict, dict]:
    """Run every step (``run(name, indices) -> (per-document results, CPU seconds)``); sum the CPU time per filter and group.

    ``begin(name)`` runs (untimed) before a filter's first step; ``before(k)``/``after(k)`` around step k."""
    decisions = {name: [None] * n_docs for name in (*FILTERS, CHAIN)}
    timing = {name: {"cpu_s_en": 0.0, "cpu_s_other": 0.0, "repeats": 1} for name in (*FILTERS, CHAIN)}
    for k, (name, group, indices) in enumerate(steps):
        if begin and (k == 0 or steps[k - 1][0] != name):
            begin(name)
        if before:
            before(k)
        out, cpu = run(name, indices)
        total, repeats = cpu, 1
        while name in FAST_FILTERS and total < MIN_TIMED_S and repeats < MAX_REPEATS:
            again = run(name, indices)[1]
            cpu, total, repeats = min(cpu, again), total + again, repeats + 1
        if after:
            after(k)
        for i, result in zip(indices, out):
            decisions[name][i] = result
        timing[name][f"cpu_s_{group}"] += cpu
        timing[name]["repeats"] = max(timing[name]["repeats"], repeats)
        if k + 1 == len(steps) or steps[k + 1][0] != name:
            timing[name]["cpu_s"] = timing[name]["cpu_s_en"] + timing[name]["cpu_s_other"]
            print(f"  [{label}] {name}: {timing[name]['cpu_s']:.1f} CPU s", file=sys.stderr, flush=True)
    return decisions, timing


# ---------------------------------------------------------------------------------------------
# datatrove side (runs under the datatrove interpreter: standard library + datatrove only)
# ---------------------------------------------------------------------------------------------


def datatrove_worker(in_path: str, out_path: str, lists_dir: str, lockstep: bool) -> None:
    """Decide every document with datatrove; with ``lockstep``, run each timed step when the parent
    sends its number on stdin and answer "done" (the protocol owns the real stdout; anything a
    library prints goes to stderr)."""
    import logging
    import warnings

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # tldextract logs its failed suffix-list download offline
    from importlib.metadata import version

    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        URLFilter,
    )
    from datatrove.utils._import_utils import ASSETS_PATH
    from datatrove.utils.text import split_into_parts
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    try:  # datatrove logs through loguru
        from loguru import logger as loguru_logger

        loguru_logger.remove()
    except ImportError:
        pass

    docs = [json.loads(line) for line in Path(in_path).read_text(encoding="utf-8").splitlines()]
    lists = Path(lists_dir)

    def make_url_filter() -> URLFilter:
        return datatrove_url_filter(lists)

    # Loading the lists: construction plus the first check (tldextract loads its suffix list lazily).
    wall0, cpu0 = time.perf_counter(), time.process_time()
    url_filter = make_url_filter()
    url_filter.filter(Document(text="", id="probe", metadata={"url": "https://www.example.com/"}))
    url_loading = {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}

    # Which language each document's word tokenizer is loaded for. A bare ISO 639-1 code is
    # first mapped to the code_3_script of its default row in datatrove's tokenizer_assignment.csv
    # (zh -> cmn_Hani, what FineWeb2 passes): datatrove 0.10.1 resolves bare codes wrongly, its
    # "FALSE" flags being truthy strings, so "zh" and "ar" would get SpaCyTokenizer("xx").
    default_codes: dict[str, str] = {}
    with open(Path(ASSETS_PATH) / "tokenizer_assignment.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["code_1"] and row["type"] and row["default_code_1"] == "TRUE" and row["default_script"] == "TRUE":
                default_codes.setdefault(row["code_1"], f"{row['code_3']}_{row['script']}")
    fallbacks: dict[str, str] = {}
    resolved: dict[str, str] = {}

    def tokenizer_language(language: str | None) -> str:
        language = language or "und"
        if language not in resolved:
            choice, errors = None, []
            base = language.split("-")[0]
            for candidate in dict.fromkeys(
                [default_codes.get(language, language), default_codes.get(base, base), language, base]
            ):
                try:
                    load_word_tokenizer(candidate).word_tokenize("A probe sentence. 一个 probe.")
                    choice = candidate
                    break
                except Exception as error:  # unknown language, or its tokenizer's package is missing
                    errors.append(f"{candidate}: {type(error).__name__}: {str(error)[:100]}")
            if choice is None:
                choice = "en"
                fallbacks[language] = "en; " + " | ".join(errors)
            resolved[language] = choice
        return resolved[language]

    languages = [tokenizer_language(d["language"]) for d in docs]

    factories = {
        "gopher_repetition": lambda lang: GopherRepetitionFilter(language=lang),
        "gopher_quality": lambda lang: GopherQualityFilter(language=lang),
        "c4": lambda lang: C4QualityFilter(filter_no_terminal_punct=False, language=lang),
        "fineweb_quality": lambda lang: FineWebQualityFilter(language=lang),
    }
    instances: dict[tuple[str, str], object] = {}

    def instance(name: str, lang: str):
        key = (name, lang)
        if key not in instances:
            instances[key] = factories[name](lang)
        return instances[key]

    def language_rule(d: dict) -> bool | tuple[bool, str]:
        # LanguageFilter(languages=["en"], language_threshold=0.65) on the stored lid.176 result.
        score = d["language_score"] if d["language_score"] is not None else 0.0
        if d["language"] == TARGET_LANGUAGE and score > LANGUAGE_THRESHOLD:
            return True
        return False, "not_en" if d["language"] != TARGET_LANGUAGE else "low_score"

    def apply(name: str, doc, d: dict, lang: str) -> tuple[bool, str | None]:
        try:
            if name == "url":
                result = url_filter.filter(doc)
            elif name == "language":
                result = language_rule(d)
            else:
                result = instance(name, lang).filter(doc)
        except Exception as error:  # noqa: BLE001 - a crash is a finding, reported as a drop
            return False, f"exception:{type(error).__name__}"
        if result is True:
            return True, None
        if isinstance(result, tuple):
            return False, result[1] if len(result) > 1 else None
        return bool(result), None

    def apply_chain(doc, d: dict, lang: str) -> tuple[bool, str | None]:
        for name in FILTERS:
            keep, reason = apply(name, doc, d, lang)
            if not keep:
                return False, f"{name}:{reason}"
        return True, None

    def run(name: str, indices: list[int]) -> tuple[list[tuple[bool, str | None]], float]:
        documents = [
            Document(text=docs[i]["text"], id=docs[i]["id"], metadata={"url": docs[i]["url"]}) for i in indices
        ]
        langs = [languages[i] for i in indices]
        records = [docs[i] for i in indices]
        split_into_parts.cache_clear()  # no word splits carried over from the warm-up or the last run
        out = []
        started = time.process_time()
        if name == CHAIN:
            for doc, d, lang in zip(documents, records, langs):
                out.append(apply_chain(doc, d, lang))
        else:
            for doc, d, lang in zip(documents, records, langs):
                out.append(apply(name, doc, d, lang))
        return out, time.process_time() - started

    # Warm-up: every tokenizer and filter instance the measured loops will use.
    warm = list(range(min(WARMUP_DOCS, len(docs))))
    first_of_language = {}
    for i, lang in enumerate(languages):
        first_of_language.setdefault(lang, i)
    warm += [i for i in first_of_language.values() if i not in warm]
    wall0 = time.perf_counter()
    for name in (*FILTERS, CHAIN):
        run(name, warm)
    warmup_s = time.perf_counter() - wall0

    def wait_for(k: int) -> None:
        line = sys.stdin.readline()
        if line.strip() != str(k):
            raise SystemExit(f"datatrove worker: expected step {k}, got {line!r}")

    steps = schedule([d["language"] for d in docs])
    if lockstep:
        protocol.write("ready\n")
        decisions, timing = execute(
            steps, run, len(docs), "datatrove", wait_for, lambda k: protocol.write(f"done {k}\n")
        )
    else:
        decisions, timing = execute(steps, run, len(docs), "datatrove")

    with open(out_path, "w", encoding="utf-8") as out:
        for i, d in enumerate(docs):
            row = {"id": d["id"], "datatrove_language": languages[i]}
            row.update({name: decisions[name][i] for name in decisions})
            out.write(json.dumps(row) + "\n")
        meta = {
            "_meta": {
                "datatrove": version("datatrove"),
                "spacy": version("spacy"),
                "python": platform.python_version(),
                "timing": timing,
                "url_list_loading": url_loading,
                "warmup_wall_s": warmup_s,
                "language_fallbacks": dict(sorted(fallbacks.items())),
                "tokenizer_languages": dict(sorted(resolved.items())),
            }
        }
        out.write(json.dumps(meta) + "\n")


# ---------------------------------------------------------------------------------------------
# input documents (fineflow's crawl step, cached)
# ---------------------------------------------------------------------------------------------


def _extract_one(function: str, shard: dict, params: dict, location) -> dict:
    from fineflow.steps import run_shard
    from fineflow.tasks.crawl.sandbox import thread_extractor

    try:
        return run_shard(function, shard, params, location)
    finally:
        thread_extractor(params["extractor"], params["extraction_timeout_s"]).close()


def extracted_documents(corpus: Path, workers: int) -> tuple[list[dict], dict]:
    """(documents, info) of the corpus' WARC files, extracted once and cached as parquet."""
    import concurrent.futures
    import multiprocessing

    import pyarrow as pa
    import pyarrow.parquet as pq

    from fineflow.steps import PlanContext
    from fineflow.tasks.crawl.config import CrawlStage
    from fineflow.tasks.crawl.plan import plan_crawl

    files = sorted(str(p) for p in corpus.glob("*.warc.gz"))
    if not files:
        raise SystemExit(f"no *.warc.gz files in {corpus}")
    columns = ["id", "url", "text", "language", "language_score"]
    config = CrawlStage.model_validate(
        {"stage": "crawl", "inputs": files, "extractor": "trafilatura", "include_text_plain": True}
    )
    with tempfile.TemporaryDirectory(prefix="filter-bench-crawl-") as tmp:
        plans = plan_crawl(config, PlanContext(root=tmp, name="crawl", kind="crawl"))
        key = "-".join(plan.fingerprint.value for plan in plans)
        cache = RESULTS_DIR / f"filter-input-{key}.parquet"
        info = {"corpus": str(corpus), "files": len(files), "cache": str(cache), "crawl_fingerprint": key}
        if not cache.exists():
            print(
                f"extracting {len(files)} WARC files (trafilatura) into {cache.name} ...", file=sys.stderr, flush=True
            )
            started = time.perf_counter()
            tables = []
            context = multiprocessing.get_context("spawn")
            for plan in plans:
                with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                    jobs = [
                        pool.submit(_extract_one, plan.function, s, plan.params, plan.location) for s in plan.shards
                    ]
                    for job in jobs:
                        job.result()
                for shard in plan.shards:
                    tables.append(pq.read_table(plan.location.shard_url(shard["shard"]), columns=columns))
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(tables), cache)
            info["extraction_wall_s"] = round(time.perf_counter() - started, 1)
    table = pq.read_table(cache, columns=columns)
    return table.to_pylist(), info


# ---------------------------------------------------------------------------------------------
# fineflow side
# ---------------------------------------------------------------------------------------------


def fineflow_side(docs: list[dict]):
    """Build and warm up fineflow's filters; return ``(run(name, indices) -> (results, CPU s), info)``,
    a result being ``(reason or None, signal values)``."""
    from fineflow.languages import canonical_language
    from fineflow.tasks.filter import url_filter as ff_url_filter
    from fineflow.tasks.filter.config import FilterStage
    from fineflow.tasks.filter.decide import Decider
    from fineflow.tasks.filter.plan import build_params
    from fineflow.tasks.filter.signals import SignalSettings, document_signals, splitter_name

    def build(filters: list[dict]) -> tuple[SignalSettings, Decider]:
        signal_params, decide_params = build_params(FilterStage.model_validate({"stage": "filter", "filters": filters}))
        return SignalSettings.from_params(signal_params), Decider(decide_params)

    # Loading the lists (the same files datatrove gets), uncached, plus the first check.
    ff_url_filter._load.cache_clear()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    settings, _ = build([FINEFLOW_FILTERS["url"]])
    next(f.state for f in settings.filters if f.rule.name == "url").check("https://www.example.com/")  # the loaded blocklist
    url_loading = {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}

    inputs = [
        (d["text"], d["url"], canonical_language(d["language"]) if d["language"] else None, d["language_score"])
        for d in docs
    ]

    def loop(settings: SignalSettings, decider: Decider, indices: list[int]) -> tuple[list, float]:
        out = []
        started = time.process_time()
        for i in indices:
            text, url, language, score = inputs[i]
            r = document_signals(text, url, language, score, settings)
            row = {"input_problem": r.problem, "language": r.language, "language_score": r.language_score, **r.values}
            out.append((decider.reason(row), r.values))
        return out, time.process_time() - started

    from fineflow.tasks.text import words as words_module

    splitters = {
        raw: splitter_name(settings.splitters, canonical_language(raw)) for raw in sorted({d["language"] for d in docs if d["language"]})
    }

    runs = {name: [FINEFLOW_FILTERS[name]] for name in FILTERS}
    runs[CHAIN] = [FINEFLOW_FILTERS[name] for name in FILTERS]
    configured = {name: build(filters) for name, filters in runs.items()}

    warm = list(range(min(WARMUP_DOCS, len(docs))))
    first_of_language: dict = {}
    for i, (_, _, language, _) in enumerate(inputs):
        first_of_language.setdefault(language, i)
    warm += [i for i in first_of_language.values() if i not in warm]
    wall0 = time.perf_counter()
    for settings, decider in configured.values():
        loop(settings, decider, warm)
    warmup_s = time.perf_counter() - wall0

    def run(name: str, indices: list[int]) -> tuple[list, float]:
        return loop(*configured[name], indices)

    def begin(name: str) -> None:
        """Fresh word splitters (and their caches) for each filter, then a warm-up: every filter
        sees these documents for the first time, as in a pipeline, not after the previous filter
        has split the same texts; caching across different documents still counts."""
        words_module.load_splitter.cache_clear()
        loop(*configured[name], warm)

    return run, begin, {"url_list_loading": url_loading, "warmup_wall_s": warmup_s, "splitters": splitters}


def run_both(docs: list[dict], python: str, work: Path) -> tuple[list[dict], dict, dict]:
    """datatrove (a lockstep subprocess) and fineflow (this process) over the same steps, alternating."""
    in_path, out_path = work / "docs.jsonl", work / "datatrove.jsonl"
    with open(in_path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({k: d[k] for k in ("id", "text", "url", "language", "language_score")}) + "\n")
    command = [python, str(Path(__file__).resolve()), "--datatrove-worker", str(in_path), str(out_path), "--lockstep"]
    worker = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        print("preparing fineflow's filters (and datatrove's, in its process) ...", file=sys.stderr, flush=True)
        ff_run, ff_begin, ff_info = fineflow_side(docs)

        def expect(reply: str) -> None:
            line = worker.stdout.readline()
            if line.strip() != reply:
                raise RuntimeError(
                    f"datatrove worker answered {line!r} instead of {reply!r} (exit code {worker.poll()})"
                )

        expect("ready")

        def datatrove_step(k: int) -> None:  # datatrove runs step k, then fineflow does
            worker.stdin.write(f"{k}\n")
            worker.stdin.flush()
            expect(f"done {k}")

        steps = schedule([d["language"] for d in docs])
        print(f"timing {len(steps)} steps, alternating datatrove / fineflow ...", file=sys.stderr, flush=True)
        ff_decisions, ff_timing = execute(steps, ff_run, len(docs), "fineflow", before=datatrove_step, begin=ff_begin)
        worker.stdin.close()
        if worker.wait() != 0:
            raise RuntimeError(f"datatrove worker failed with exit code {worker.returncode}")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    rows = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines()]
    return rows[:-1], rows[-1]["_meta"], {"decisions": ff_decisions, "timing": ff_timing, **ff_info}


# ---------------------------------------------------------------------------------------------
# comparison and report
# ---------------------------------------------------------------------------------------------


def _normalize_datatrove_reason(name: str, reason: str | None) -> str | None:
    if reason is None:
        return None
    if name == CHAIN:
        filter_name, _, rule = reason.partition(":")
        return f"{filter_name}:{DATATROVE_REASONS.get(rule, rule)}"
    return DATATROVE_REASONS.get(reason, reason)


def _normalize_fineflow_reason(name: str, reason: str | None) -> str | None:
    if reason is None or name == CHAIN or reason.startswith("input:"):
        return reason
    return reason.partition(":")[2]  # "gopher_quality:stop_words" -> "stop_words" for a filter alone


def _relevant_signals(name: str, ff_reason: str | None, dt_reason: str | None, values: dict) -> dict:
    if name == CHAIN:
        involved = {r.partition(":")[0] for r in (ff_reason, dt_reason) if r}
        prefixes = tuple(p for f in involved for p in SIGNAL_PREFIXES.get(f, ()))
    else:
        prefixes = SIGNAL_PREFIXES[name]
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in values.items() if k.startswith(prefixes)}


GROUPS = ("en", "comparable", "all")


def _groups(doc: dict, fallbacks: dict) -> tuple[str, ...]:
    """English; documents in a language datatrove has a tokenizer for here ("comparable"); all."""
    if doc["language"] == TARGET_LANGUAGE:
        return ("en", "comparable", "all")
    return ("all",) if doc["language"] in fallbacks else ("comparable", "all")


def compare(docs: list[dict], dt_rows: list[dict], ff: dict, fallbacks: dict) -> dict:
    groups_of = [_groups(d, fallbacks) for d in docs]
    report: dict[str, dict] = {}
    for name in (*FILTERS, CHAIN):
        stats = {group: Counter() for group in GROUPS}
        disagreements = []
        reason_pairs: dict[str, Counter[str]] = {group: Counter() for group in GROUPS}
        for i, d in enumerate(docs):
            dt_keep, dt_reason_raw = dt_rows[i][name]
            ff_reason_raw, values = ff["decisions"][name][i]
            ff_keep = ff_reason_raw is None
            dt_reason = _normalize_datatrove_reason(name, dt_reason_raw)
            ff_reason = _normalize_fineflow_reason(name, ff_reason_raw)
            for group in groups_of[i]:
                s = stats[group]
                s["docs"] += 1
                s["agree"] += dt_keep == ff_keep
                s["datatrove_drops"] += not dt_keep
                s["fineflow_drops"] += not ff_keep
                s["both_drop"] += (not dt_keep) and (not ff_keep)
                s["both_drop_same_reason"] += (not dt_keep) and (not ff_keep) and dt_reason == ff_reason
                s["only_datatrove_drops"] += (not dt_keep) and ff_keep
                s["only_fineflow_drops"] += dt_keep and not ff_keep
                s["datatrove_exceptions"] += bool(dt_reason and "exception:" in dt_reason)
            if dt_keep != ff_keep or (not dt_keep and dt_reason != ff_reason):
                for group in groups_of[i]:
                    reason_pairs[group][f"{dt_reason} | {ff_reason}"] += 1
            if dt_keep != ff_keep:
                disagreements.append(
                    {
                        "id": d["id"],
                        "language": d["language"],
                        "datatrove_tokenizer_language": dt_rows[i]["datatrove_language"],
                        "fineflow_splitter": ff["splitters"].get(d["language"]),
                        "datatrove_keep": dt_keep,
                        "fineflow_keep": ff_keep,
                        "datatrove_reason": dt_reason_raw,
                        "fineflow_reason": ff_reason_raw,
                        "fineflow_signals": _relevant_signals(name, ff_reason_raw, dt_reason, values),
                        "url": d["url"],
                        "text_chars": len(d["text"] or ""),
                        "text_excerpt": (d["text"] or "")[:EXCERPT_CHARS],
                    }
                )
        groups = {}
        for group, s in stats.items():
            n = max(s["docs"], 1)
            both = max(s["both_drop"], 1)
            groups[group] = {
                **dict(s),
                "agreement": s["agree"] / n,
                "reason_agreement_when_both_drop": s["both_drop_same_reason"] / both if s["both_drop"] else None,
            }
        disagreements.sort(key=lambda x: (x["language"] != TARGET_LANGUAGE, x["id"]))
        report[name] = {
            **groups,
            "disagreements_total": len(disagreements),
            "reason_pairs_where_different": {g: dict(c.most_common(40)) for g, c in reason_pairs.items()},
            "disagreements": disagreements[:MAX_SAVED_DISAGREEMENTS],
        }
    return report


def speed(docs: list[dict], dt_meta: dict, ff: dict) -> dict:
    n_all = len(docs)
    n_en = sum(d["language"] == TARGET_LANGUAGE for d in docs)
    out = {}
    for name in (*FILTERS, CHAIN):
        dt, fw = dt_meta["timing"][name], ff["timing"][name]

        def rate(n: int, seconds: float) -> float | None:
            return n / seconds if seconds > 0 else None

        row = {
            "datatrove_cpu_s": round(dt["cpu_s"], 3),
            "fineflow_cpu_s": round(fw["cpu_s"], 3),
            "datatrove_docs_per_cpu_s": rate(n_all, dt["cpu_s"]),
            "fineflow_docs_per_cpu_s": rate(n_all, fw["cpu_s"]),
            "datatrove_en_docs_per_cpu_s": rate(n_en, dt["cpu_s_en"]),
            "fineflow_en_docs_per_cpu_s": rate(n_en, fw["cpu_s_en"]),
        }
        for suffix in ("", "_en"):
            a, b = row[f"fineflow{suffix}_docs_per_cpu_s"], row[f"datatrove{suffix}_docs_per_cpu_s"]
            row[f"ratio{suffix}"] = a / b if a and b else None
        out[name] = row
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None) -> str:
    return "–" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:,.1f}")


def markdown_tables(agreement: dict, speeds: dict, dt_meta: dict, ff: dict, n_docs: int, n_en: int) -> str:
    names = {
        "url": "URL",
        "language": "language (en, > 0.65)",
        "gopher_repetition": "Gopher repetition",
        "gopher_quality": "Gopher quality",
        "c4": "C4 (no terminal-punct rule)",
        "fineweb_quality": "FineWeb quality",
        CHAIN: "**chain** (URL → language → Gopher rep. → Gopher qual. → C4 → FineWeb qual.)",
    }
    lines = [
        f"Decision agreement (keep/drop), each filter alone on every document; {n_en:,} English of {n_docs:,} documents. "
        + (
            f"Last column: documents except those in languages whose datatrove tokenizer needs a package not installed "
            f"({', '.join(sorted(dt_meta['language_fallbacks']))}; datatrove splits them as English)."
            if dt_meta["language_fallbacks"]
            else "Last column: every document (datatrove had a tokenizer for every language)."
        ),
        "",
        "| filter | agreement, English | dropped by datatrove / fineflow (English) | only datatrove / only fineflow drops (English) "
        "| same reason when both drop (English) | agreement, all documents | only datatrove / only fineflow drops (all) "
        "| agreement, languages datatrove can split here |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in (*FILTERS, CHAIN):
        en, al, co = agreement[name]["en"], agreement[name]["all"], agreement[name]["comparable"]
        lines.append(
            f"| {names[name]} | {_pct(en['agreement'])} | {en['datatrove_drops']:,} / {en['fineflow_drops']:,} "
            f"| {en['only_datatrove_drops']:,} / {en['only_fineflow_drops']:,} | {_pct(en['reason_agreement_when_both_drop'])} "
            f"| {_pct(al['agreement'])} | {al['only_datatrove_drops']:,} / {al['only_fineflow_drops']:,} | {_pct(co['agreement'])} ({co['docs']:,}) |"
        )
    lines += [
        "",
        "Speed: documents per CPU-second, one process, one thread, filtering loop only (after warm-up). "
        "fineflow's numbers include its whole per-document path (input checks, every configured signal, the decision); "
        "datatrove's chain stops at the first failing filter.",
        "",
        "| filter | datatrove 0.10.1, all docs | fineflow, all docs | fineflow / datatrove | datatrove, English docs | fineflow, English docs | fineflow / datatrove (English) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in (*FILTERS, CHAIN):
        s = speeds[name]
        ratio = "–" if s["ratio"] is None else f"{s['ratio']:.2f}×"
        ratio_en = "–" if s["ratio_en"] is None else f"{s['ratio_en']:.2f}×"
        if name == "language":  # datatrove's side is a stored-score comparison, not LanguageFilter's fastText
            ratio = ratio_en = "n/a (datatrove side emulated)"
        lines.append(
            f"| {names[name]} | {_num(s['datatrove_docs_per_cpu_s'])} | {_num(s['fineflow_docs_per_cpu_s'])} | {ratio} "
            f"| {_num(s['datatrove_en_docs_per_cpu_s'])} | {_num(s['fineflow_en_docs_per_cpu_s'])} | {ratio_en} |"
        )
    dl, fl = dt_meta["url_list_loading"], ff["url_list_loading"]
    lines += [
        "",
        "URL blocklist loading (construct + first check; fineflow's default sample lists):",
        "",
        "| | wall | CPU |",
        "|---|---|---|",
        f"| datatrove `URLFilter(use_integrated_lists=False, ...)` | {1000 * dl['wall_s']:.0f} ms | {1000 * dl['cpu_s']:.0f} ms |",
        f"| fineflow `load_blocklist` | {1000 * fl['wall_s']:.0f} ms | {1000 * fl['cpu_s']:.0f} ms |",
    ]
    return "\n".join(lines)


def show_disagreements(agreement: dict) -> None:
    for name in (*FILTERS, CHAIN):
        items = agreement[name]["disagreements"]
        if not items:
            continue
        print(
            f"\n## {name}: {agreement[name]['disagreements_total']} disagreement(s); first {min(len(items), SHOWN_DISAGREEMENTS)}:",
            file=sys.stderr,
        )
        for x in items[:SHOWN_DISAGREEMENTS]:
            print(
                f"- {x['id']} [{x['language']}] datatrove={'keep' if x['datatrove_keep'] else 'drop'} ({x['datatrove_reason']}) "
                f"fineflow={'keep' if x['fineflow_keep'] else 'drop'} ({x['fineflow_reason']}) signals={json.dumps(x['fineflow_signals'])}",
                file=sys.stderr,
            )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--datatrove-worker":
        worker = argparse.ArgumentParser()
        worker.add_argument("--datatrove-worker", nargs=2, metavar=("IN_JSONL", "OUT_JSONL"), required=True)
        worker.add_argument("--blocklists", default=str(DEFAULT_LISTS))
        worker.add_argument(
            "--lockstep", action="store_true", help="run each timed step when its number arrives on stdin"
        )
        args = worker.parse_args()
        datatrove_worker(*args.datatrove_worker, args.blocklists, args.lockstep)
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of *.warc.gz files")
    parser.add_argument("--limit", type=int, default=None, help="only the first N extracted documents")
    parser.add_argument(
        "--datatrove-python", default=DEFAULT_DATATROVE_PYTHON, help="python of a datatrove 0.10.1 environment"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result JSON (default: bench/results/filter-<timestamp>.json)"
    )
    parser.add_argument(
        "--extract-workers", type=int, default=os.cpu_count() or 1, help="processes for the one-time extraction"
    )
    args = parser.parse_args()

    from importlib.metadata import version

    docs, input_info = extracted_documents(args.corpus.resolve(), args.extract_workers)
    docs = [d for d in docs if isinstance(d["text"], str)]
    if args.limit:
        docs = docs[: args.limit]
    n_en = sum(d["language"] == TARGET_LANGUAGE for d in docs)
    print(f"{len(docs):,} documents ({n_en:,} English)", file=sys.stderr, flush=True)
    host = machine_info(("fineflow", "spacy", "numpy"))

    with tempfile.TemporaryDirectory(prefix="filter-bench-") as tmp:
        dt_rows, dt_meta, ff = run_both(docs, args.datatrove_python, Path(tmp))

    agreement = compare(docs, dt_rows, ff, dt_meta["language_fallbacks"])
    speeds = speed(docs, dt_meta, ff)
    table = markdown_tables(agreement, speeds, dt_meta, ff, len(docs), n_en)
    show_disagreements(agreement)
    print()
    print(table)

    out = args.out or RESULTS_DIR / f"filter-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "input": {
            **input_info,
            "documents": len(docs),
            "english_documents": n_en,
            "limit": args.limit,
            "languages": dict(Counter(d["language"] for d in docs).most_common()),
        },
        "machine": {**host, "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": {
            "fineflow": version("fineflow"),
            "spacy (fineflow env)": version("spacy"),
            "datatrove": dt_meta["datatrove"],
            "spacy (datatrove env)": dt_meta["spacy"],
            "python (datatrove env)": dt_meta["python"],
        },
        "method": {
            "timer": "time.process_time around the filtering loop, one process, one thread, after a warm-up; "
            f"steps of {CHUNK_DOCS} documents alternate between datatrove and fineflow (never both at once); "
            f"URL and language run each group in one step, repeated until {MIN_TIMED_S} s (at most {MAX_REPEATS} times), fastest kept",
            "language_filter_datatrove": "emulated on the stored lid.176 language/score: keep if language == 'en' and score > 0.65",
            "word_splitting": "datatrove gets each document's language (fallback en, see datatrove.language_fallbacks); "
            "fineflow picks its splitter from the document's language",
            "c4": "C4QualityFilter(filter_no_terminal_punct=False); fineflow c4 with filter_no_terminal_punct: false",
            "url_lists": str(DEFAULT_LISTS),
            "datatrove_exceptions": "a datatrove filter that raised counts as a drop with reason exception:<type>",
        },
        "datatrove": {
            "url_list_loading": dt_meta["url_list_loading"],
            "warmup_wall_s": dt_meta["warmup_wall_s"],
            "language_fallbacks": dt_meta["language_fallbacks"],
            "tokenizer_languages": dt_meta["tokenizer_languages"],
            "timing": dt_meta["timing"],
        },
        "fineflow": {
            "url_list_loading": ff["url_list_loading"],
            "warmup_wall_s": ff["warmup_wall_s"],
            "splitters": ff["splitters"],
            "timing": ff["timing"],
        },
        "speed": speeds,
        "agreement": agreement,
        "table": table,
    }
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    print(f"\nresult: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
