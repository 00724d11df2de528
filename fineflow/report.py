"""The HTML report of a run: one self-contained page built from the run's ``summary.json``.

Charts are plotly figures with plotly.js inlined once in the page (no CDN: the report opens
offline, from object storage or a laptop): the documents and characters kept by each stage,
documents per language after each stage, why documents were dropped or skipped, and the dedup
stage's cluster sizes. Stages added later (quality buckets, token counts) add charts here.
"""

from __future__ import annotations

import html
import json
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from fineflow import storage

REPORT_NAME = "report.html"
CHART_IDS = ("funnel", "characters", "languages", "drops", "clusters")
_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 50, "b": 60}, "height": 380, "template": "plotly_white"}


def run_folder(root: str, run_id: str) -> str:
    return storage.join(root, "_runs", run_id)


def load_summary(folder: str) -> dict[str, Any]:
    try:
        return json.loads(storage.read_bytes(storage.join(folder, "summary.json")))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} has no summary.json: not the folder of a finished run") from None
    except (ValueError, UnicodeDecodeError):  # damaged: not JSON (any more)
        raise FileNotFoundError(f"{folder}/summary.json is damaged (not valid JSON); re-run the pipeline to write it again") from None


def _funnel(summary: dict) -> go.Figure:
    stages = summary["stages"]
    labels = [f"{stages[0]['name']} input (records)"] + [f"after {s['name']}" for s in stages]
    values = [stages[0]["docs_in"]] + [s["docs_out"] for s in stages]
    figure = go.Figure(go.Funnel(y=labels, x=values, textinfo="value+percent initial"))
    figure.update_layout(title="Documents kept by each stage", **_LAYOUT)
    return figure


def _characters(summary: dict) -> go.Figure | None:
    stages = [s for s in summary["stages"] if s.get("text_chars") is not None]
    if not stages:
        return None
    figure = go.Figure(go.Bar(x=[s["name"] for s in stages], y=[s["text_chars"] / 1e6 for s in stages], texttemplate="%{y:.2f}"))
    figure.update_layout(title="Text kept after each stage (million characters)", yaxis_title="M characters", **_LAYOUT)
    return figure


def _languages(summary: dict) -> go.Figure:
    languages = sorted({lang for s in summary["stages"] for lang in s.get("languages", {})},
                       key=lambda lang: -summary["stages"][0].get("languages", {}).get(lang, 0))
    figure = go.Figure(
        [go.Bar(name=s["name"], x=languages, y=[s.get("languages", {}).get(lang, 0) for lang in languages]) for s in summary["stages"]]
    )
    figure.update_layout(title="Documents per language after each stage", barmode="group", **_LAYOUT)
    return figure


def _drops(summary: dict) -> go.Figure | None:
    rows = []
    for stage in summary["stages"]:
        counts = {**{f"skip: {k}": v for k, v in stage.get("skips", {}).items()}, **stage.get("drop_reasons", {})}
        rows += [(stage["name"], reason, count) for reason, count in counts.items() if count]
    if not rows:
        return None
    rows.sort(key=lambda row: row[2])
    figure = go.Figure(
        [
            go.Bar(name=name, orientation="h", y=[f"{n}: {r}" for n, r, _ in rows if n == name], x=[c for n, _, c in rows if n == name])
            for name in dict.fromkeys(n for n, _, _ in rows)
        ]
    )
    layout = {**_LAYOUT, "height": max(300, 26 * len(rows) + 120), "margin": {**_LAYOUT["margin"], "l": 320}}
    figure.update_layout(title="Documents dropped or skipped, by reason", **layout)
    return figure


def _clusters(summary: dict) -> go.Figure | None:
    dedup = next((s for s in summary["stages"] if s.get("cluster_sizes")), None)
    if dedup is None:
        return None
    sizes = dedup["cluster_sizes"]
    figure = go.Figure(go.Bar(x=list(sizes), y=list(sizes.values()), text=list(sizes.values())))
    figure.update_layout(
        title=f"Duplicate clusters by size ({dedup.get('clusters', sum(sizes.values()))} clusters)",
        xaxis_title="documents in the cluster", yaxis_title="clusters", xaxis_type="category", **_LAYOUT,
    )
    return figure


def _stage_table(summary: dict) -> str:
    head = "<tr><th>stage</th><th>docs in</th><th>docs out</th><th>tasks (cached)</th><th>seconds</th><th>output</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(s['name'])}</td><td>{s['docs_in']:,}</td><td>{s['docs_out']:,}</td>"
        f"<td>{s['shards']} ({s['cached_shards']})</td><td>{s['seconds']}</td><td><code>{html.escape(s['output'])}</code></td></tr>"
        for s in summary["stages"]
    )
    return f"<table>{head}{rows}</table>"


def _warnings(summary: dict) -> str:
    warnings = summary.get("warnings") or []
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(warning)}</li>" for warning in warnings)
    return f'<section class="warnings"><h2>Warnings</h2><ul>{items}</ul></section>'


def build_report(summary: dict[str, Any]) -> str:
    """The whole page as one string."""
    figures = {
        "funnel": _funnel(summary),
        "characters": _characters(summary),
        "languages": _languages(summary),
        "drops": _drops(summary),
        "clusters": _clusters(summary),
    }
    charts = "\n".join(
        f'<section class="chart">{figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}")}</section>'
        for name, figure in figures.items()
        if figure is not None
    )
    title = f"fineflow run {summary['run_id']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child, td:last-child {{ text-align: left; }} code {{ font-size: 85%; }}
section.chart {{ margin: 1.5rem 0; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(summary.get('pipeline', 'pipeline'))}: run <code>{html.escape(summary['run_id'])}</code></h1>
<p>Storage <code>{html.escape(summary.get('storage', ''))}</code>; {summary.get('seconds', 0)} s.</p>
{_stage_table(summary)}
{_warnings(summary)}
{charts}
</body></html>
"""


def write_report(folder: str) -> str:
    """Build the report of the run in ``folder`` (its ``_runs/<id>``) and write it there; return its URL."""
    url = storage.join(folder, REPORT_NAME)
    storage.write_bytes(url, build_report(load_summary(folder)).encode("utf-8"))
    return url
