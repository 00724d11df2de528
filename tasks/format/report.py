"""What the format stage adds to the run summary, its Prefect artifacts and the HTML report:
documents and characters changed per formatter (and per language)."""

from __future__ import annotations

from typing import Any

from fineflow import examples
from fineflow.registry import Table


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    step = steps["format"]
    return {key: step[key] for key in ("formatted", "drop_reasons", "drops_by_language", examples.CHANGE_FIELD) if key in step}


def _totals(per_language: dict[str, dict[str, int]]) -> tuple[int, int]:
    return sum(t.get("documents", 0) for t in per_language.values()), sum(t.get("chars", 0) for t in per_language.values())


def format_tables(summary: dict[str, Any]) -> list[Table]:
    """Two tables: per formatter, then per formatter and language: documents and characters changed."""
    formatted = summary.get("formatted", {})
    total = max(summary["docs_in"], 1)
    rows = []
    for name, per_language in formatted.items():
        documents, chars = _totals(per_language)
        rows.append({"formatter": name, "documents changed": documents, "share of input": f"{100 * documents / total:.1f}%",
                     "characters changed": chars})
    rows += [{"formatter": f"dropped: {reason}", "documents changed": n, "share of input": f"{100 * n / total:.1f}%",
              "characters changed": "-"} for reason, n in summary.get("drop_reasons", {}).items()]
    stale = summary.get("stale_columns_dropped", {})
    note = f"; stale text-derived input columns dropped: {', '.join(stale)}" if stale else ""
    by_formatter = Table(
        key="formatters",
        rows=rows or [{"formatter": "-", "documents changed": 0, "share of input": "0%", "characters changed": 0}],
        description=f"{summary['name']}: documents and characters each formatter changed{note}",
    )
    kept = summary.get("languages", {})
    by_language = Table(
        key="formatters-by-language",
        rows=[
            {"formatter": name, "language": lang, "documents changed": tally.get("documents", 0),
             "of kept in language": kept.get(lang, 0), "characters changed": tally.get("chars", 0)}
            for name, per_language in formatted.items()
            for lang, tally in sorted(per_language.items(), key=lambda item: -item[1].get("documents", 0))
        ] or [{"formatter": "-", "language": "-", "documents changed": 0, "of kept in language": 0, "characters changed": 0}],
        description=f"{summary['name']}: documents and characters changed per formatter and language",
    )
    return [by_formatter, by_language]


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """Documents changed per formatter and language (grouped bars), when any was changed."""
    formatted = summary.get("formatted", {})
    if not any(_totals(per)[0] for per in formatted.values()):
        return []
    import plotly.graph_objects as go

    from fineflow.report import LAYOUT

    languages = sorted({lang for per in formatted.values() for lang in per})
    figure = go.Figure([
        go.Bar(name=name, x=languages, y=[per.get(lang, {}).get("documents", 0) for lang in languages],
               customdata=[per.get(lang, {}).get("chars", 0) for lang in languages],
               hovertemplate="%{x}: %{y} documents, %{customdata} characters changed<extra>" + name + "</extra>")
        for name, per in formatted.items()
    ])
    figure.update_layout(title=f"{summary['name']}: documents changed per formatter and language", barmode="group",
                         xaxis_title="language", yaxis_title="documents changed", **LAYOUT)
    return [("formatters", figure)]
