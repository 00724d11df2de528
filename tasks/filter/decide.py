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

from fineflow.documents import commit_shard, read_input, read_table, set_columns
from fineflow.tasks.common.condition import Condition
from fineflow.tasks.filter import rules
from fineflow.tasks.filter.rule import Rule

STEP_VERSION = "1"
LIBRARIES = ("pyarrow",)


class MisalignedSignals(RuntimeError):
    pass


class Decider:
    """Thresholds per filter and language, resolved once per (filter, language)."""

    def __init__(self, params: dict) -> None:
        self.filters = [(rules.for_spec(spec), spec) for spec in params["filters"]]
        self.conditions = {spec["name"]: Condition.model_validate(spec["where"]) for spec in params["filters"] if spec.get("where")}
        self.per_language = params.get("per_language", {})
        self._cache: dict[tuple[str, str], dict] = {}

    def thresholds(self, rule: Rule, spec: dict, lang: str) -> dict:
        key = (rule.name, lang)
        if key not in self._cache:
            overrides = self.per_language.get(lang) or self.per_language.get(lang.split("-")[0]) or {}
            self._cache[key] = rule.limits(spec, overrides.get(rule.name, {}))
        return self._cache[key]

    def condition_columns(self) -> list[str]:
        return sorted({condition.column for condition in self.conditions.values()})

    def reason(self, row: dict, inputs: dict | None = None) -> str | None:
        """The first failing filter of a signals row; ``inputs``: the document's condition columns."""
        if row.get("input_problem"):
            return f"input:{row['input_problem']}"
        lang = row.get("language") or "und"
        for rule, spec in self.filters:
            condition = self.conditions.get(rule.name)
            if condition is not None and not condition.met((inputs or {}).get(condition.column)):
                continue  # not judged by this rule (Nemotron-CC: heuristics on low-quality documents only)
            if rule.measured_by and row.get(rule.measured_by) is None:
                continue  # not measured: a language the language filter drops anyway, or one the rule skips
            failed = rule.decide(row, self.thresholds(rule, spec, lang))
            if failed:
                return f"{rule.name}:{failed}"
        return None


def _clean_text(column: pa.ChunkedArray) -> pa.Array:
    """Texts safe to write: invalid UTF-8 (kept so the reject is visible) becomes U+FFFD."""
    raw = pc.cast(column, pa.binary()).to_pylist()
    return pa.array([None if b is None else b.decode("utf-8", errors="replace") for b in raw], type=pa.string())


def decide_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    docs = read_input(shard)
    signals = read_table([shard["signals"]])
    if docs.num_rows != signals.num_rows or docs.column("id").to_pylist() != signals.column("id").to_pylist():
        raise MisalignedSignals(f"shard {shard['shard']}: signals do not match the documents of {shard['input']}")
    decider = Decider(params)
    rows = signals.to_pylist()
    wanted = decider.condition_columns()
    missing = [name for name in wanted if name not in docs.column_names]
    if missing:
        raise ValueError(f"shard {shard['shard']}: where: the input has no column {missing[0]!r}")
    inputs = docs.select(wanted).to_pylist() if wanted else [None] * len(rows)
    reasons = [decider.reason(row, cells) for row, cells in zip(rows, inputs)]
    keep = pa.array([r is None for r in reasons], pa.bool_())

    # The effective text and language replace the input's (C4 rewrites; a filter-stage LID relabels).
    text = pc.coalesce(signals.column("text"), docs.column("text").cast(pa.string()))
    kept = docs.set_column(docs.schema.get_field_index("text"), "text", text)
    for name in ("language", "language_score"):
        kept = kept.set_column(kept.schema.get_field_index(name), name, signals.column(name).cast(docs.schema.field(name).type))
    kept = kept.filter(keep)

    dropped_mask = pc.invert(keep)
    rejects = docs.filter(dropped_mask)
    if any(r.get("input_problem") == "invalid_unicode" for r in rows):
        rejects = rejects.set_column(rejects.schema.get_field_index("text"), "text", _clean_text(rejects.column("text")))
    # Every shard's rejects have the same columns, none dropped or not; reading another stage's
    # rejects, this verdict and these signals replace the ones the documents came with.
    signal_columns = [name for name in signals.column_names if name not in ("id", "text", "language", "language_score")]
    rejects = set_columns(
        rejects,
        {
            "drop_reason": pa.array([r for r in reasons if r is not None], pa.string()),
            **{name: signals.column(name).filter(dropped_mask) for name in signal_columns},
        },
    )

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
