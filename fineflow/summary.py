"""A stage's summary: what every stage reports, plus its kind's own fields (``fineflow.registry``).

``output`` and ``rejects`` are the kind's document step's data/ and rejects/ folders: what a
user loads with datasets, polars or DuckDB, and what the next stage reads.
"""

from __future__ import annotations

from typing import Any

from fineflow import examples, registry
from fineflow.counters import merge_counts


def stage_summary(
    kind: registry.StageKind, name: str, steps: list[dict[str, Any]], seconds: float, inputs: list[dict] | None = None
) -> dict[str, Any]:
    first = steps[0]
    by_step = {step["step"]: step for step in steps}
    documents = by_step[kind.document_step]
    artifacts = [url for step in steps for url in step.get("artifacts", [])]
    return {
        "name": name,
        "kind": kind.kind,
        "docs_in": first["docs_in"],
        "docs_out": documents["docs_out"],
        "rejected": documents.get("rejected", 0),
        "shards": sum(s["shards"] for s in steps),
        "cached_shards": sum(s["cached_shards"] for s in steps),
        "seconds": round(seconds, 2),
        "output": documents["output"],
        "rejects": documents.get("rejects"),
        **({"artifacts": artifacts} if artifacts else {}),
        "input": inputs or [],  # the stages (or folders) it read: the DAG's edges
        "skips": merge_counts(s.get("skips", {}) for s in steps),
        "languages": documents.get("languages", {}),
        "text_chars": documents.get("text_chars"),  # characters of text kept (None for runs cached before it was counted)
        "warnings": [warning for step in steps for warning in step.get("warnings", [])],
        # input columns derived from the text that a stage rewriting it dropped (column -> documents)
        **({"stale_columns_dropped": documents["stale_columns_dropped"]} if documents.get("stale_columns_dropped") else {}),
        **({"inputs": first["inputs"]} if first.get("inputs") else {}),
        # why documents were dropped, by language, and a few of them (any document step: fineflow.documents)
        **{key: documents[key] for key in ("drops_by_language", examples.FIELD) if documents.get(key)},
        **(kind.call("summary", by_step) or {}),
        "steps": steps,
    }
