"""What the decontaminate stage adds to the run summary, its Prefect artifacts and the HTML report.

``contamination``: per benchmark, what its index holds (files, items, items too short to have an
n-gram, distinct n-grams), what the scan found (documents, paragraphs and n-gram positions matched,
documents per language) and how many of its items were found; a benchmark that matched nothing is
listed with zeros, never left out.
"""

from __future__ import annotations

from typing import Any

from fineflow.registry import Table

_SCAN_COUNTS = ("documents_contaminated", "documents_dropped", "documents_rewritten", "documents_emptied",
                "paragraphs_removed", "undecodable")


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    index, scan, items = steps["index"], steps["scan"], steps.get("items", {})
    found = scan.get("contamination", {})
    contamination = {
        name: {**built, **{key: found.get(name, {}).get(key, 0) for key in ("documents", "paragraphs", "ngrams_matched")},
               "items_found": items.get("items_found", {}).get(name, 0), "languages": found.get(name, {}).get("languages", {})}
        for name, built in index.get("benchmarks", {}).items()
    }
    # docs_in: the scan's (the stage's first step, the index, reads no documents)
    fields: dict[str, Any] = {"docs_in": scan.get("docs_in", 0), "contamination": contamination, "index_entries": index.get("index_entries", 0),
                              "index_bytes": index.get("index_bytes", 0)}
    fields |= {key: scan.get(key, 0) for key in _SCAN_COUNTS}
    if "drop_reasons" in scan:
        fields["drop_reasons"] = scan["drop_reasons"]
    return fields


def contamination_tables(summary: dict[str, Any]) -> list[Table]:
    """One row per benchmark: its index and what was found of it."""
    rows = [
        {
            "benchmark": name,
            "items": found.get("items", 0),
            "items found": found.get("items_found", 0),
            "items too short": found.get("items_too_short", 0),
            "n-grams": found.get("ngrams", 0),
            "documents matched": found.get("documents", 0),
            "n-grams matched": found.get("ngrams_matched", 0),
            "paragraphs matched": found.get("paragraphs", 0),
            "languages": ", ".join(f"{code} {n}" for code, n in sorted(found.get("languages", {}).items())) or "-",
        }
        for name, found in summary.get("contamination", {}).items()
    ]
    removed = ", ".join(f"{key.replace('_', ' ')}: {summary[key]}" for key in _SCAN_COUNTS if summary.get(key))
    return [
        Table(
            key="contamination",
            rows=rows,
            description=f"{summary['name']}: benchmark n-grams found in the documents ({removed or 'nothing matched'}); "
            f"rejects at {summary.get('rejects')}",
        )
    ]


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """Items found, documents and paragraphs matched per benchmark (grouped bars; zeros shown)."""
    contamination = summary.get("contamination")
    if not contamination:
        return []
    import plotly.graph_objects as go

    from fineflow.report import LAYOUT

    names = list(contamination)
    figure = go.Figure([
        go.Bar(name=label, x=names, y=[contamination[n].get(key, 0) for n in names], text=[contamination[n].get(key, 0) for n in names])
        for key, label in (("items_found", "benchmark items found"), ("documents", "documents matched"),
                           ("paragraphs", "paragraphs matched"))
    ])
    figure.update_layout(
        title=f"{summary['name']}: contamination by benchmark ({summary.get('documents_contaminated', 0)} documents)",
        xaxis_title="benchmark", yaxis_title="count", xaxis_type="category", barmode="group", **LAYOUT,
    )
    return [("contamination", figure)]
