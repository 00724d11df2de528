"""What the filter stage adds to the run summary and to its Prefect artifacts."""

from __future__ import annotations

from typing import Any

from fineflow.registry import Table


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    decide = steps["decide"]
    return {key: decide[key] for key in ("drop_reasons", "drops_by_language") if key in decide}


def drop_tables(summary: dict[str, Any]) -> list[Table]:
    """Two tables: documents dropped per reason, and kept/dropped per language with its top reasons."""
    reasons = summary.get("drop_reasons", {})
    total = max(summary["docs_in"], 1)
    by_reason = Table(
        key="drop-reasons",
        rows=[
            {"reason": reason, "documents": count, "share of input": f"{100 * count / total:.1f}%"}
            for reason, count in sorted(reasons.items(), key=lambda item: -item[1])
        ]
        or [{"reason": "-", "documents": 0, "share of input": "0%"}],
        description=f"{summary['name']}: why documents were dropped; rejects at {summary.get('rejects')}",
    )
    by_language = summary.get("drops_by_language", {})
    kept = summary.get("languages", {})
    rows = []
    for lang in sorted(set(by_language) | set(kept), key=lambda code: -(kept.get(code, 0) + sum(by_language.get(code, {}).values()))):
        dropped = by_language.get(lang, {})
        n_dropped = sum(dropped.values())
        top = sorted(dropped.items(), key=lambda item: -item[1])[:3]
        rows.append(
            {
                "language": lang,
                "kept": kept.get(lang, 0),
                "dropped": n_dropped,
                "drop rate": f"{100 * n_dropped / max(kept.get(lang, 0) + n_dropped, 1):.0f}%",
                "top reasons": ", ".join(f"{r}={n}" for r, n in top) or "-",
            }
        )
    languages = Table(
        key="languages",
        rows=rows or [{"language": "-", "kept": 0, "dropped": 0, "drop rate": "-", "top reasons": "-"}],
        description=f"{summary['name']}: documents kept and dropped per language",
    )
    return [by_reason, languages]
