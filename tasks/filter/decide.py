"""filter's second step, ``decide``: apply thresholds to the stored signals.

Reads one upstream shard and its signals shard (row-aligned), keeps a document when every
configured filter passes (thresholds per document language where a language config overrides
them), and writes kept documents (with C4's rewritten text and the effective language) and
rejects: every input column, ``drop_reason`` (``<filter>:<rule>`` of the first failing filter,
or ``input:<problem>``) and the document's signals.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_table
from fineflow.tasks.filter import c4, fineweb_quality, gopher_quality, gopher_repetition, language, url_filter, zh_hant

STEP_VERSION = "1"
# a signal every measured document has, per filter
MEASURED_BY = {
    "gopher_repetition": "gopher_rep_dup_line_frac",
    "gopher_quality": "gopher_qual_words",
    "c4": "c4_sentences",
    "fineweb_quality": "fineweb_non_empty_lines",
}


class MisalignedSignals(RuntimeError):
    pass


def _int_keys(mapping: dict) -> dict[int, float]:
    return {int(k): v for k, v in mapping.items()}


class Decider:
    """Thresholds per filter and language, resolved once per (filter, language)."""

    def __init__(self, params: dict) -> None:
        self.filters = params["filters"]
        self.per_language = params.get("per_language", {})
        self._cache: dict[tuple[str, str], dict] = {}

    def thresholds(self, spec: dict, lang: str) -> dict:
        key = (spec["name"], lang)
        if key not in self._cache:
            merged = dict(spec)
            overrides = self.per_language.get(lang) or self.per_language.get(lang.split("-")[0]) or {}
            merged.update(overrides.get(spec["name"], {}))
            for name in ("top_n_grams", "dup_n_grams"):
                if name in merged:
                    merged[name] = _int_keys(merged[name])
            self._cache[key] = merged
        return self._cache[key]

    def reason(self, row: dict) -> str | None:
        if row.get("input_problem"):
            return f"input:{row['input_problem']}"
        lang = row.get("language") or "und"
        for spec in self.filters:
            kind = spec["name"]
            if kind in MEASURED_BY and row.get(MEASURED_BY[kind]) is None:
                continue  # not measured: a language the language filter drops anyway
            limits = self.thresholds(spec, lang)
            if kind == "url":
                rule = url_filter.decide(row["url_block"], row["url_soft_words"], row["url_subword"], limits["soft_word_threshold"])
            elif kind == "language":
                threshold = limits["min_score"] if limits.get("per_language_scores", True) else spec["min_score"]
                rule = language.decide(lang, row.get("language_score"), limits.get("languages"), threshold, limits.get("inclusive", False))
            elif kind == "gopher_repetition":
                rule = gopher_repetition.decide(row, limits)
            elif kind == "gopher_quality":
                rule = gopher_quality.decide(row, limits, limits.get("stop_word_mode") or "distinct")
            elif kind == "c4":
                rule = c4.decide(row, limits)
            elif kind == "fineweb_quality":
                rule = fineweb_quality.decide(row, limits, strict=limits.get("strict", True))
            elif kind == "zh_hant":
                applies = row.get(zh_hant.PREFIX + "traditional_chars") is not None
                rule = zh_hant.decide(row) if applies else None
            else:
                raise ValueError(f"unknown filter {kind!r}")
            if rule:
                return f"{kind}:{rule}"
        return None


def _clean_text(column: pa.ChunkedArray) -> pa.Array:
    """Texts safe to write: invalid UTF-8 (kept so the reject is visible) becomes U+FFFD."""
    raw = pc.cast(column, pa.binary()).to_pylist()
    return pa.array([None if b is None else b.decode("utf-8", errors="replace") for b in raw], type=pa.string())


def decide_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    docs = read_table([shard["input"]])
    signals = read_table([shard["signals"]])
    if docs.num_rows != signals.num_rows or docs.column("id").to_pylist() != signals.column("id").to_pylist():
        raise MisalignedSignals(f"shard {shard['shard']}: signals do not match the documents of {shard['input']}")
    decider = Decider(params)
    rows = signals.to_pylist()
    reasons = [decider.reason(row) for row in rows]
    keep = pa.array([r is None for r in reasons], pa.bool_())

    # The effective text and language replace the input's (C4 rewrites; a filter-stage LID relabels).
    text = pc.coalesce(signals.column("text"), docs.column("text").cast(pa.string()))
    kept = docs.set_column(docs.schema.get_field_index("text"), "text", text)
    for name in ("language", "language_score"):
        kept = kept.set_column(kept.schema.get_field_index(name), name, signals.column(name).cast(docs.schema.field(name).type))
    kept = kept.filter(keep)

    dropped_mask = pc.invert(keep)
    rejects = docs.filter(dropped_mask)
    if rejects.num_rows:
        if any(r.get("input_problem") == "invalid_unicode" for r in rows):
            rejects = rejects.set_column(rejects.schema.get_field_index("text"), "text", _clean_text(rejects.column("text")))
        rejects = rejects.append_column("drop_reason", pa.array([r for r in reasons if r is not None], pa.string()))
        signal_columns = [name for name in signals.column_names if name not in ("id", "text", "language", "language_score")]
        for name in signal_columns:
            rejects = rejects.append_column(name, signals.column(name).filter(dropped_mask))

    by_reason: Counter[str] = Counter(r for r in reasons if r)
    dropped_languages: dict[str, Counter[str]] = defaultdict(Counter)
    for row, reason in zip(rows, reasons):
        if reason is not None:
            dropped_languages[row.get("language") or "und"][reason] += 1

    return commit_shard(  # it counts the kept documents' languages and characters
        shard["shard"],
        output_url,
        kept,
        rejects_url,
        rejects,
        drop_reasons=dict(sorted(by_reason.items())),
        drops_by_language={lang: dict(sorted(c.items())) for lang, c in sorted(dropped_languages.items())},
        seconds=round(time.perf_counter() - started, 3),
    )
