"""The HTML report of a run: one self-contained page built from the run's ``summary.json``.

Charts are plotly figures with plotly.js inlined once in the page (no CDN: the report opens
offline, from object storage or a laptop): the documents, characters and (where a stage counted
them) tokens kept by each stage,
documents per language after each stage, why documents were dropped or skipped, the pipeline's
DAG with document counts on its edges (when it is not a straight line), and the charts each
stage kind contributes through the registry (dedup's cluster sizes, ...).
"""

from __future__ import annotations

import html
import json
from typing import Any

import plotly.graph_objects as go
import yaml
from plotly.offline import get_plotlyjs

from fineflow import registry, storage

REPORT_NAME = "report.html"
LAYOUT = {"margin": {"l": 60, "r": 20, "t": 50, "b": 60}, "height": 380, "template": "plotly_white"}


def run_folder(root: str, run_id: str) -> str:
    return storage.join(root, "_runs", run_id)


def load_summary(folder: str) -> dict[str, Any]:
    try:
        return json.loads(storage.read_bytes(storage.join(folder, "summary.json")))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} has no summary.json: not the folder of a finished run") from None
    except (ValueError, UnicodeDecodeError):  # damaged: not JSON (any more)
        raise FileNotFoundError(f"{folder}/summary.json is damaged (not valid JSON); re-run the pipeline to write it again") from None


def _tokens_after(summary: dict) -> dict[str, dict[str, int]]:
    """Tokens per tokenizer counted on each stage's output: a stage that counts tokens (its
    ``tokens``) reports them for the stage it read (its one input) and for its own output."""
    by_name = {s["name"]: s for s in summary["stages"]}
    found: dict[str, dict[str, int]] = {}
    for stage in summary["stages"]:
        if not stage.get("tokens"):
            continue
        found.setdefault(stage["name"], {}).update(stage["tokens"])
        sources = stage.get("input") or []
        if len(sources) == 1 and sources[0]["stage"] in by_name and not sources[0].get("rejects") and not stage.get("rejected"):
            found.setdefault(sources[0]["stage"], {}).update(stage["tokens"])
    return found


def _funnel(summary: dict) -> go.Figure:
    stages = summary["stages"]
    tokens = _tokens_after(summary)

    def label(name: str) -> str:
        counted = tokens.get(name)
        return f"after {name}" + (f" ({', '.join(f'{n:,} {t} tokens' for t, n in counted.items())})" if counted else "")

    labels = [f"{stages[0]['name']} input (records)"] + [label(s["name"]) for s in stages]
    values = [stages[0]["docs_in"]] + [s["docs_out"] for s in stages]
    figure = go.Figure(go.Funnel(y=labels, x=values, textinfo="value+percent initial"))
    figure.update_layout(title="Documents kept by each stage", **LAYOUT)
    return figure


def _characters(summary: dict) -> go.Figure | None:
    stages = [s for s in summary["stages"] if s.get("text_chars") is not None]
    if not stages:
        return None
    figure = go.Figure(go.Bar(x=[s["name"] for s in stages], y=[s["text_chars"] / 1e6 for s in stages], texttemplate="%{y:.2f}"))
    figure.update_layout(title="Text kept after each stage (million characters)", yaxis_title="M characters", **LAYOUT)
    return figure


def _tokens(summary: dict) -> go.Figure | None:
    tokens = _tokens_after(summary)
    if not tokens:
        return None
    names = [s["name"] for s in summary["stages"] if s["name"] in tokens]
    tokenizers = list(dict.fromkeys(t for counted in tokens.values() for t in counted))
    figure = go.Figure([go.Bar(name=t, x=[f"after {n}" for n in names], y=[tokens[n].get(t) for n in names]) for t in tokenizers])
    figure.update_layout(title="Tokens after each stage where they were counted, per tokenizer", barmode="group", **LAYOUT)
    return figure


def _languages(summary: dict) -> go.Figure:
    languages = sorted({lang for s in summary["stages"] for lang in s.get("languages", {})},
                       key=lambda lang: -summary["stages"][0].get("languages", {}).get(lang, 0))
    figure = go.Figure(
        [go.Bar(name=s["name"], x=languages, y=[s.get("languages", {}).get(lang, 0) for lang in languages]) for s in summary["stages"]]
    )
    figure.update_layout(title="Documents per language after each stage", barmode="group", **LAYOUT)
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
    layout = {**LAYOUT, "height": max(300, 26 * len(rows) + 120), "margin": {**LAYOUT["margin"], "l": 320}}
    figure.update_layout(title="Documents dropped or skipped, by reason", **layout)
    return figure


def _edges(summary: dict) -> list[tuple[str, str, int]]:
    """(from, to, documents) for every input a stage read, from the stages' ``input`` records."""
    by_name = {s["name"]: s for s in summary["stages"]}
    edges = []
    for stage in summary["stages"]:
        for source in stage.get("input") or []:
            producer = by_name.get(source["stage"])
            if producer is None:
                count = stage["docs_in"] if len(stage["input"]) == 1 else 0
                edges.append((source["stage"], stage["name"], count))
            elif source.get("rejects"):
                edges.append((f"{producer['name']}.rejects", stage["name"], producer.get("rejected", 0)))
            else:
                edges.append((producer["name"], stage["name"], producer["docs_out"]))
    return edges


def _is_line(summary: dict) -> bool:
    stages = summary["stages"]
    if not any(s.get("input") for s in stages):
        return True  # a summary from before pipelines were DAGs
    expected = [(a["name"], b["name"]) for a, b in zip(stages, stages[1:])]
    return [(a, b) for a, b, _ in _edges(summary)] == expected


def _dag(summary: dict) -> go.Figure | None:
    """The pipeline as a Sankey diagram: a link per input, as wide as the documents it carried."""
    if _is_line(summary):
        return None  # the funnel already shows a straight line
    edges = _edges(summary)
    nodes = list(dict.fromkeys([s["name"] for s in summary["stages"]] + [n for a, b, _ in edges for n in (a, b)]))
    figure = go.Figure(
        go.Sankey(
            node={"label": nodes, "pad": 20},
            link={
                "source": [nodes.index(a) for a, _, _ in edges],
                "target": [nodes.index(b) for _, b, _ in edges],
                "value": [max(n, 1) for _, _, n in edges],  # an empty edge still shows
                "label": [f"{n:,} documents" for _, _, n in edges],
                "customdata": [n for _, _, n in edges],
                "hovertemplate": "%{source.label} → %{target.label}: %{customdata:,} documents<extra></extra>",
            },
        )
    )
    figure.update_layout(title="Pipeline DAG: documents along each input", **LAYOUT)
    return figure


def _stage_figures(summary: dict) -> dict[str, go.Figure]:
    """Charts the stage kinds contribute (registry ``figures``), keyed by chart id."""
    figures: dict[str, go.Figure] = {}
    kinds = registry.kinds()
    for stage in summary["stages"]:
        kind = kinds.get(stage.get("kind", stage["name"]))
        if kind is None or kind.figures is None:
            continue
        for chart, figure in kind.call("figures", stage):
            figures[chart if chart not in figures else f"{chart}-{stage['name']}"] = figure  # a second stage of a kind
    return figures


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
        "tokens": _tokens(summary),
        "languages": _languages(summary),
        "drops": _drops(summary),
        "dag": _dag(summary),
        **_stage_figures(summary),
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


def _load_run_plugins(folder: str) -> None:
    """The run's plug-in stage kinds, so their charts are drawn by ``fineflow report`` too."""
    try:
        config = yaml.safe_load(storage.read_bytes(storage.join(folder, "config.yaml"))) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return
    if config.get("plugins"):
        try:
            registry.load_plugins(config["plugins"], config.get("plugins_from"))
        except registry.RegistryError:
            pass  # the plug-in is gone: its stages are reported without their own charts


def write_report(folder: str) -> str:
    """Build the report of the run in ``folder`` (its ``_runs/<id>``) and write it there; return its URL."""
    _load_run_plugins(folder)
    url = storage.join(folder, REPORT_NAME)
    storage.write_bytes(url, build_report(load_summary(folder)).encode("utf-8"))
    return url
