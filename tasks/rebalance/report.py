"""What the rebalance stage adds to the run summary, its Prefect artifacts and the HTML report:
the mix (target vs achieved per cell), epochs per cell, and the rehydration weight curves."""

from __future__ import annotations

import json
from typing import Any

import plotly.graph_objects as go

from fineflow import storage
from fineflow.registry import Table
from fineflow.report import LAYOUT
from fineflow.tasks.rebalance.solve import MIX

_MIX_COLUMNS = ("cell", "target", "achieved", "shortfall", "infeasible", "documents", "available_documents", "copies",
                "unique_tokens", "epochs", "max_repeats", "max_epochs", "weight")
MAX_CURVES = 24  # languages drawn in the rehydration chart


def _mix(solve: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    url = next((u for u in solve.get("artifacts", []) if u.endswith(f"/{MIX}")), None)
    if url is None:
        return {}, None
    try:
        return json.loads(storage.read_bytes(url)), url
    except (FileNotFoundError, ValueError):
        return {}, url


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    mix, url = _mix(steps["solve"])
    apply = steps["apply"]
    return {
        "mix": mix.get("mix", []),
        "mix_file": url,
        "token_column": mix.get("tokens"),
        "target_tokens": mix.get("target_tokens"),
        "achieved_tokens": mix.get("achieved_tokens"),
        "unique_tokens": mix.get("unique_tokens"),
        "infeasible": mix.get("infeasible", []),
        "copies": apply.get("copies", 0),
        "drop_reasons": apply.get("drop_reasons", {}),
        **({"rehydration": mix["rehydration"]} if "rehydration" in mix else {}),
        **({"quality_weights": mix["quality"]} if "quality" in mix else {}),
    }


def mix_tables(summary: dict[str, Any]) -> list[Table]:
    tables = []
    if summary.get("mix"):
        rows = [{column: cell.get(column) for column in _MIX_COLUMNS} for cell in summary["mix"]]
        tables.append(Table(key="mix", rows=rows, description=f"{summary['name']}: target vs achieved tokens per cell "
                                                              f"({summary.get('token_column')}); weight: share of the written tokens"))
    if summary.get("rehydration"):
        rows = [{"language": language, "source": curve["source"], "why": curve.get("reason") or "",
                 "documents": curve.get("documents"), "global_removal_rate": curve.get("global_removal_rate"),
                 "weights": json.dumps(curve["weights"])} for language, curve in summary["rehydration"].items()]
        tables.append(Table(key="rehydration", rows=rows,
                            description=f"{summary['name']}: rehydration weights by duplicate-cluster size per language"))
    return tables


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    found = []
    cells = summary.get("mix", [])
    if cells:
        names = [cell["cell"] + (f" ({cell['infeasible']})" if cell.get("infeasible") else "") for cell in cells]
        chart = go.Figure([go.Bar(name="target", x=names, y=[c["target"] for c in cells]),
                           go.Bar(name="achieved", x=names, y=[c["achieved"] for c in cells]),
                           go.Bar(name="unique", x=names, y=[c["unique_tokens"] for c in cells])])
        chart.update_layout(title=f"{summary['name']}: tokens per cell, target vs achieved ({summary.get('token_column')})",
                            barmode="group", yaxis_title="tokens", **LAYOUT)
        found.append(("rebalance-mix", chart))
        chart = go.Figure([go.Bar(name="epochs (achieved / unique tokens)", x=names, y=[c["epochs"] for c in cells]),
                           go.Bar(name="most repeats of a document", x=names, y=[c["max_repeats"] for c in cells]),
                           go.Scatter(name="max_epochs", x=names, y=[c["max_epochs"] for c in cells], mode="markers")])
        chart.update_layout(title=f"{summary['name']}: epochs per cell", barmode="group", **LAYOUT)
        found.append(("rebalance-epochs", chart))
    curves = summary.get("rehydration") or {}
    if curves:
        chart = go.Figure()
        for language, curve in list(curves.items())[:MAX_CURVES]:
            starts = [int(s) for s in curve["weights"]]
            weights = list(curve["weights"].values())
            label = language if curve["source"] == "data" else f"{language} (fallback: {curve['source']})"
            # A step curve: each weight holds from its start size to the next one.
            chart.add_trace(go.Scatter(name=label, x=[*starts, max(starts) * 2], y=[*weights, weights[-1]],
                                       mode="lines+markers", line={"shape": "hv", "dash": "solid" if curve["source"] == "data" else "dot"}))
        chart.update_layout(title=f"{summary['name']}: rehydration weight by duplicate-cluster size", xaxis_type="log",
                            xaxis_title="cluster size", yaxis_title="weight (copies)", **LAYOUT)
        found.append(("rebalance-rehydration", chart))
    return found
