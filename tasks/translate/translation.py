"""translate's ``translate`` step (map): every chosen document of a shard into every target.

Each chosen document is segmented once (``segment.py``); per (source, target) language pair
the shard's distinct segments go through the segment cache and the backend (``backends.py``);
each document is reassembled and measured (``qc.py``, lid.176 on the output). Every
translation is written, passing or not: ``decide`` applies the thresholds.

One row per (source document, target): ``id`` is ``<source id>#<target>``, ``language`` the
target, ``source_id``, ``source_language`` and ``translation_model`` say where it came from, and
the source's columns that earlier stages derived from its text are kept as ``source_<column>``
(later stages compute their own on the translation).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import DOCUMENT_SCHEMA, commit_shard, read_input, read_table
from fineflow.fingerprint import digest
from fineflow.llm import LLMClient, LLMServer, ResponseCache
from fineflow.tasks.text import langid
from fineflow.tasks.translate import backends, qc
from fineflow.tasks.translate.segment import reassemble, segment_document, segments

STEP_VERSION = "1"
LIBRARIES = ("sentencex", "httpx", "ctranslate2", "llama_cpp", "tokenizers", "fasttext")

KEPT_COLUMNS = [f.name for f in DOCUMENT_SCHEMA if f.name not in ("id", "text", "language", "language_score")]
MEASURES = [("translate_segments", pa.int64()), ("translate_coverage", pa.float64()), ("translate_runaway", pa.int64()),
            ("translate_copy", pa.float64()), ("translate_length_ratio", pa.float64()), ("translate_repetition", pa.float64()),
            ("translate_detected", pa.string())]
EXAMPLES_PER_TARGET = 2


def target_id(source_id: str, target: str) -> str:
    return f"{source_id}#{target}"


def output_schema(source: pa.Schema) -> pa.Schema:
    """The translated documents' columns, from the source's (the same for every shard)."""
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("text", pa.string()), pa.field("language", pa.string()),
              pa.field("language_score", pa.float32())]
    fields += [source.field(name) for name in KEPT_COLUMNS if name in source.names]
    fields += [pa.field("source_id", pa.string()), pa.field("source_language", pa.string()),
               pa.field("translation_model", pa.string())]
    fields += [pa.field(f"source_{f.name}", f.type) for f in source
               if f.name not in KEPT_COLUMNS and f.name not in ("id", "text", "language", "language_score")]
    fields += [pa.field(name, kind) for name, kind in MEASURES]
    return pa.schema(fields)


def cache_folder(params: dict, source: str, target: str) -> str:
    """The segment cache of one model, prompt, decoding and language pair (shared across runs)."""
    space = digest({"model": params["model_id"], "pair": [source, target]}, chars=24)
    return storage.join(params["cache"], space)


def _backend(spec: dict) -> Any:
    if spec["kind"] == "openai":
        return LLMClient(LLMServer.model_validate(spec["server"]))
    return backends.build(spec)


def _counter(spec: dict | None):  # noqa: ANN202
    if not spec or not spec.get("tokenizer"):
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(storage.local_file(spec["tokenizer"]))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def translate_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    documents = read_input(shard)
    chosen = read_table([params["chosen"]])
    rows = pc.filter(chosen["row"], pc.equal(chosen["shard"], shard["shard"])).to_pylist() if chosen.num_rows else []
    schema = output_schema(documents.schema)
    picked = documents.take(pa.array(rows, pa.int64())).to_pylist() if rows else []
    segment_spec = params["segment"]
    count = _counter(segment_spec)
    split = [segment_document(doc["text"], doc["language"] or "en", segment_spec["mode"], segment_spec["window_tokens"], count)
             for doc in picked]
    spec = params["backend"]
    out: list[dict] = []
    examples: dict[str, list[dict]] = defaultdict(list)
    per_target: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    stats = backends.Stats()
    backend = _backend(spec) if picked else None
    try:
        for target in params["targets"]:
            by_source: dict[str, list[int]] = defaultdict(list)
            for index, doc in enumerate(picked):
                if (doc["language"] or "und") == target:
                    per_target[target]["same_language"] += 1
                else:
                    by_source[doc["language"] or "und"].append(index)
            for source, indexes in sorted(by_source.items()):
                texts = sorted({text for i in indexes for text in segments(split[i])})
                cache = ResponseCache(cache_folder(params, source, target), params["flush_every"])
                before = (stats.segments, stats.cache_hits, stats.sent)
                found = backends.translate_all(spec, backend, cache, texts, source, target, stats)
                per_target[target]["segments"] += stats.segments - before[0]
                per_target[target]["cache_hits"] += stats.cache_hits - before[1]
                per_target[target]["sent"] += stats.sent - before[2]
                for i in indexes:
                    out.append(_translated(picked[i], split[i], found, source, target, params, schema))
                    per_target[target]["documents"] += 1
                    if len(examples[target]) < EXAMPLES_PER_TARGET:
                        examples[target].append({"source_id": picked[i]["id"], "source": picked[i]["text"][:400],
                                                 "translation": out[-1]["text"][:400]})
    finally:
        if isinstance(backend, LLMClient):
            backend.close()
    table = pa.Table.from_pylist(out, schema=schema)
    artifact = commit_artifact(output_url, f"examples-{shard['shard']:05d}.json", json.dumps(examples, ensure_ascii=False).encode())
    return commit_shard(shard["shard"], output_url, table, docs_in=len(rows), artifacts=[artifact],
                        by_target={t: dict(v) for t, v in per_target.items()}, segments=stats.segments,
                        cache_hits=stats.cache_hits, sent=stats.sent, sent_chars=stats.sent_chars, failed=stats.failed,
                        backend_seconds=round(stats.seconds, 3), seconds=round(time.perf_counter() - started, 3),
                        **{k: v for k, v in stats.extra.items() if isinstance(v, int | float)})


def _translated(doc: dict, pieces: list, found: dict[str, str], source: str, target: str, params: dict,
                schema: pa.Schema) -> dict:
    sources = segments(pieces)
    translations = [backends.clean(found.get(backends.segment_key(text))) for text in sources]
    text = reassemble(pieces, translations)
    measures = qc.measure(sources, translations, target, params["segment"]["mode"] != "sentences", params["runaway_ratio"])
    measures["translate_repetition"] = qc.repetition(text)
    detected, score = langid.identify(text) if text.strip() else ("und", 0.0)
    row: dict[str, Any] = {"id": target_id(doc["id"], target), "text": text, "language": target,
                           "language_score": float(score) if detected == target else 0.0,
                           "source_id": doc["id"], "source_language": source, "translation_model": params["model_name"],
                           "translate_detected": detected, **measures}
    for name in schema.names:
        if name in row:
            continue
        if name in KEPT_COLUMNS:
            row[name] = doc.get(name)
        elif name.startswith("source_") and name.removeprefix("source_") in doc:
            row[name] = doc[name.removeprefix("source_")]
    return row
