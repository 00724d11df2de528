"""translate's ``translate`` step (map): every chosen document of a shard into every target.

Each chosen document is segmented once (``segment.py``); per (source, target) language pair
the shard's distinct segments go through the segment cache and the backend (``backends.py``);
each document is reassembled and measured (``qc.py``, lid.176 on the output). Every
translation is written, passing or not: ``decide`` applies the thresholds.

One row per (source document, target): ``id`` is ``<source id>#<target>``, ``language`` the
target, ``source_id``, ``source_language`` and ``translation_model`` say where it came from, and
the source's columns that earlier stages derived from its text are kept as ``source_<column>``
(later stages compute their own on the translation).

A document that cannot be translated is still one row per target, with ``translate_failure``
(``undecodable``: its text is not UTF-8; ``refused``/``unreadable``: the backend refused a segment
or answered what cannot be read; ``truncated``: a segment's translation was still cut at its token
budget after one retry with twice the room) and the specifics in ``translate_failure_detail``; ``decide``
rejects it with that reason. The other documents of the shard go on.
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
from fineflow.documents import DOCUMENT_SCHEMA, commit_shard, read_input, read_table, undecodable_rows
from fineflow.fingerprint import digest
from fineflow.llm import CACHE_SCHEME, LLMClient, LLMServer, ResponseCache
from fineflow.tasks.text import langid
from fineflow.tasks.translate import backends, qc, window
from fineflow.tasks.translate.segment import Piece, reassemble, segment_document, segments

STEP_VERSION = f"4+{qc.CALIBRATION}"  # 4: truncated translations retried, then failures; coverage with the shipped calibration
LIBRARIES = ("sentencex", "httpx", "ctranslate2", "llama_cpp", "tokenizers", "fasttext")

KEPT_COLUMNS = [f.name for f in DOCUMENT_SCHEMA if f.name not in ("id", "text", "language", "language_score")]
MEASURES = [("translate_segments", pa.int64()), ("translate_coverage", pa.float64()), ("translate_sentence_ratio", pa.float64()),
            ("translate_sentence_share", pa.float64()), ("translate_truncated", pa.int64()),
            ("translate_runaway", pa.int64()), ("translate_copy", pa.float64()), ("translate_length_ratio", pa.float64()),
            ("translate_repetition", pa.float64()), ("translate_segment_repetition", pa.float64()),
            ("translate_detected", pa.string()), ("translate_failure", pa.string()), ("translate_failure_detail", pa.string())]
FAILURE_COLUMNS = ("translate_failure", "translate_failure_detail")
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


def cache_record(params: dict, source: str, target: str) -> dict:
    """What a segment-cache namespace holds, for ``fineflow cache list`` (its namespace.json)."""
    identity = params["model_id"]
    server = (identity.get("decoding") or {}).get("server") or identity["kind"]
    return {"scheme": CACHE_SCHEME, "model": params["model_name"], "decoding": {"server": server},
            "identity": identity, "pair": [source, target]}


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


def segmenter(params: dict):  # noqa: ANN201
    """``split(text, language) -> pieces`` with the stage's mode and windows: the hard window in
    the model's tokens for ctranslate2 (its tokenizer is at hand), else by ``window.estimate``."""
    spec, backend = params["segment"], params["backend"]
    count = _counter(spec)
    count_input = _counter(backend) if backend["kind"] == "ctranslate2" else window.estimate
    limit = backend["max_input_tokens"] or window.DEFAULT_INPUT_TOKENS[backend["kind"]]

    def split(text: str, language: str) -> list[Piece]:
        return segment_document(text, language, spec["mode"], spec["window_tokens"], count, limit, count_input)

    return split


def translate_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    documents, undecodable = undecodable_rows(read_input(shard))
    chosen = read_table([params["chosen"]])
    rows = pc.filter(chosen["row"], pc.equal(chosen["shard"], shard["shard"])).to_pylist() if chosen.num_rows else []
    schema = output_schema(documents.schema)
    picked = documents.take(pa.array(rows, pa.int64())).to_pylist() if rows else []
    broken = {index: undecodable[row] for index, row in enumerate(rows) if row in undecodable}
    split_document = segmenter(params)
    # An undecodable text is not segmented nor sent: its rows say why (decide rejects them).
    split = [[] if index in broken else split_document(doc["text"], doc["language"] or "en") for index, doc in enumerate(picked)]
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
                cache = ResponseCache(cache_folder(params, source, target), params["flush_every"],
                                      record=cache_record(params, source, target))
                before = (stats.segments, stats.cache_hits, stats.sent, stats.retried)
                found, failures = backends.translate_all(spec, backend, cache, texts, source, target, stats)
                per_target[target]["segments"] += stats.segments - before[0]
                per_target[target]["cache_hits"] += stats.cache_hits - before[1]
                per_target[target]["sent"] += stats.sent - before[2]
                per_target[target]["retried"] += stats.retried - before[3]
                for i in indexes:
                    if i in broken:
                        out.append(_untranslated(picked[i], "undecodable", broken[i], source, target, params, schema))
                    else:
                        out.append(_translated(picked[i], split[i], found, failures, source, target, params, schema))
                    per_target[target]["documents"] += 1
                    if out[-1].get("translate_failure"):
                        per_target[target][out[-1]["translate_failure"]] += 1
                    elif len(examples[target]) < EXAMPLES_PER_TARGET:
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
                        retried=stats.retried, truncated=stats.truncated,
                        backend_seconds=round(stats.seconds, 3), seconds=round(time.perf_counter() - started, 3),
                        **{k: v for k, v in stats.extra.items() if isinstance(v, int | float)})


def _failure(sources: list[str], failures: dict[str, backends.Failure]) -> tuple[str, str] | None:
    """The document's failure (its first failing segment's reason) and how many segments failed."""
    failed = [failures[key] for key in map(backends.segment_key, sources) if key in failures]
    if not failed:
        return None
    return failed[0].reason, f"{len(failed)} of {len(sources)} segments; first: {failed[0].detail}"


def _translated(doc: dict, pieces: list, found: dict[str, str], failures: dict[str, backends.Failure], source: str,
                target: str, params: dict, schema: pa.Schema) -> dict:
    sources = segments(pieces)
    translations = [backends.clean(found.get(backends.segment_key(text))) for text in sources]
    text = reassemble(pieces, translations)
    failure = _failure(sources, failures)
    if failure is not None:  # not measured: decide rejects it for the failure
        return _untranslated(doc, *failure, source, target, params, schema, text)
    found_measures = qc.measure(sources, translations, source, target, params["segment"]["mode"], params["runaway_ratio"])
    measures = {f"translate_{name}": value for name, value in found_measures.items()}
    detected, score = langid.identify(text) if text.strip() else ("und", 0.0)
    return _row(doc, text, source, target, params, schema, language_score=float(score) if detected in (target, target.split("-")[0]) else 0.0,
                translate_detected=detected, **measures)


def _untranslated(doc: dict, failure: str, detail: str, source: str, target: str, params: dict, schema: pa.Schema,
                  text: str | None = None) -> dict:
    """The row of a document left untranslated: the text as far as it got (else the source's)."""
    return _row(doc, doc["text"] if text is None else text, source, target, params, schema, language_score=0.0,
                translate_failure=failure, translate_failure_detail=detail)


def _row(doc: dict, text: str, source: str, target: str, params: dict, schema: pa.Schema, **measures: Any) -> dict:
    row: dict[str, Any] = {"id": target_id(doc["id"], target), "text": text, "language": target,
                           "source_id": doc["id"], "source_language": source, "translation_model": params["model_name"],
                           **measures}
    for name in schema.names:
        if name in row:
            continue
        if name in KEPT_COLUMNS:
            row[name] = doc.get(name)
        elif name.startswith("source_") and name.removeprefix("source_") in doc:
            row[name] = doc[name.removeprefix("source_")]
    return row
