"""The HTML report of a run: one self-contained page built from the run's ``summary.json``.

Charts are plotly figures with plotly.js inlined once in the page (no CDN: the report opens
offline, from object storage or a laptop): the documents, characters and (where a stage counted
them) tokens kept by each stage,
documents per language after each stage, why documents were dropped or skipped, the pipeline's
DAG with document counts on its edges (when it is not a straight line), and the charts each
stage kind contributes through the registry (dedup's cluster sizes, quality's score distributions
with their cut lines, ...). Then why documents were dropped, per stage: reason × language counts
(a table and a chart) and a few example documents per reason, masked (``fineflow.examples``);
and, at the top, the kinds' cautions (a classifier judged on a few documents, a threshold that
fell back to the global one).
"""

from __future__ import annotations

import html
import json
from typing import Any

import plotly.graph_objects as go
import yaml
from plotly.offline import get_plotlyjs

from fineflow import examples, registry, storage
from fineflow.masking import mask_pii

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


def reason_label(stage: str, reason: str) -> str:
    """A drop reason under its stage's name, the name once: ``quality:reference`` of the stage ``quality``
    stays as it is, ``exact_duplicate`` of ``dedup`` reads ``dedup: exact_duplicate``."""
    return reason if reason.startswith(f"{stage}:") else f"{stage}: {reason}"


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
            go.Bar(name=name, orientation="h", y=[reason_label(n, r) for n, r, _ in rows if n == name],
                   x=[c for n, _, c in rows if n == name])
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


def _ordered(by_language: dict[str, dict[str, int]]) -> tuple[list[str], list[str]]:
    """Reasons and languages of a stage's ``drops_by_language``, most documents first."""
    reasons: dict[str, int] = {}
    for counts in by_language.values():
        for reason, n in counts.items():
            reasons[reason] = reasons.get(reason, 0) + n
    languages = sorted(by_language, key=lambda lang: (-sum(by_language[lang].values()), lang))
    return sorted(reasons, key=lambda r: (-reasons[r], r)), languages


def _drops_by_language(stage: dict) -> go.Figure | None:
    """A document-dropping stage's drops per language, stacked by reason."""
    by_language = stage.get("drops_by_language") or {}
    reasons, languages = _ordered(by_language)
    if not reasons:
        return None
    figure = go.Figure([go.Bar(name=reason, x=languages, y=[by_language[lang].get(reason, 0) for lang in languages])
                        for reason in reasons])
    figure.update_layout(title=f"{stage['name']}: documents dropped per language, by reason", barmode="stack",
                         xaxis_title="language", yaxis_title="documents", showlegend=True, **LAYOUT)  # one reason: named too
    return figure


def _drops_table(stage: dict) -> str:
    """The same counts as a table: a row per reason, a column per language, totals at the ends."""
    by_language = stage.get("drops_by_language") or {}
    reasons, languages = _ordered(by_language)
    if not reasons:
        return ""
    kept = stage.get("languages", {})
    head = "<tr><th>reason</th>" + "".join(f"<th>{html.escape(lang)}</th>" for lang in languages) + "<th>all</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(reason)}</td>"
        + "".join(f"<td>{by_language[lang].get(reason, 0) or ''}</td>" for lang in languages)
        + f"<td>{sum(by_language[lang].get(reason, 0) for lang in languages):,}</td></tr>"
        for reason in reasons
    )
    dropped = [sum(by_language[lang].values()) for lang in languages]
    rates = "".join(f"<td>{100 * n / max(n + kept.get(lang, 0), 1):.0f}%</td>" for lang, n in zip(languages, dropped))
    rows += (f"<tr><th>dropped</th>{''.join(f'<td>{n:,}</td>' for n in dropped)}<td>{sum(dropped):,}</td></tr>"
             f"<tr><th>kept</th>{''.join(f'<td>{kept.get(lang, 0):,}</td>' for lang in languages)}"
             f"<td>{sum(kept.get(lang, 0) for lang in languages):,}</td></tr>"
             f"<tr><th>drop rate</th>{rates}<td></td></tr>")
    return (f'<h3>{html.escape(stage["name"])}: documents dropped by reason and language</h3>'
            f'<table class="drops" id="drops-{html.escape(stage["name"])}">{head}{rows}</table>')


def _examples(stage: dict) -> str:
    """A few dropped documents per reason (chosen by id hash, masked and cut when collected: fineflow.examples)."""
    found = stage.get(examples.FIELD) or {}
    if not found:
        return ""
    parts = []
    ordered = sorted(found.items(), key=lambda item: (-stage.get("drop_reasons", {}).get(item[0], 0), item[0]))
    for position, (reason, picked) in enumerate(ordered):
        items = "".join(
            f"<li><code>{html.escape(mask_pii(e.get('id', '')))}</code> [{html.escape(e.get('language') or 'und')}] "
            f"<code>{html.escape(mask_pii(e.get('url') or ''))}</code>"
            + (f" <em>{html.escape(mask_pii(e['detail']))}</em>" if e.get("detail") else "")
            + f"<pre>{html.escape(mask_pii(e.get('text') or ''))}</pre></li>"
            for e in picked
        )
        count = stage.get("drop_reasons", {}).get(reason)
        parts.append(f"<details{' open' if position == 0 else ''}><summary>{html.escape(reason_label(stage['name'], reason))}"
                     f"{f' ({count:,} documents)' if count else ''}</summary><ul>{items}</ul></details>")
    return (f'<h3>{html.escape(stage["name"])}: examples of dropped documents</h3>'
            f'<div class="examples" id="examples-{html.escape(stage["name"])}">{"".join(parts)}</div>')


def _change_examples(stage: dict) -> str:
    """A few documents per change a rewriting stage made (e.g. per formatter): the text around the first
    change, before and after, masked when collected (fineflow.examples.change_example) and again here."""
    found = stage.get(examples.CHANGE_FIELD) or {}
    if not found:
        return ""
    parts = []
    for position, (what, picked) in enumerate(sorted(found.items())):
        items = "".join(
            f"<li><code>{html.escape(mask_pii(e.get('id', '')))}</code> [{html.escape(e.get('language') or 'und')}]"
            f"<div class=\"change\"><pre class=\"before\">{html.escape(mask_pii(e.get('before') or ''))}</pre>"
            f"<pre class=\"after\">{html.escape(mask_pii(e.get('after') or ''))}</pre></div></li>"
            for e in picked
        )
        parts.append(f"<details{' open' if position == 0 else ''}><summary>{html.escape(what)}</summary><ul>{items}</ul></details>")
    return (f'<h3>{html.escape(stage["name"])}: examples of changed documents (before, after)</h3>'
            f'<div class="examples" id="changes-{html.escape(stage["name"])}">{"".join(parts)}</div>')


def _why(summary: dict) -> str:
    """Per document-dropping stage: drops by reason × language (table and chart) and example documents."""
    body = "".join(
        _drops_table(stage) + _charts({f"drops-by-language-{stage['name']}": _drops_by_language(stage)}) + _examples(stage)
        + _change_examples(stage)
        for stage in summary["stages"]
    )
    return f'<section class="why"><h2>Why documents were dropped or changed</h2>{body}</section>' if body else ""


def cautions(summary: dict) -> list[str]:
    """Each stage kind's caveats on its results (registry ``cautions``), prefixed by the stage's name."""
    found = []
    kinds = registry.kinds()
    for stage in summary["stages"]:
        kind = kinds.get(stage.get("kind", stage["name"]))
        if kind is not None and kind.cautions is not None:
            found += [f"{stage['name']}: {caution}" for caution in kind.call("cautions", stage)]
    return found


def _cautions(summary: dict) -> str:
    found = cautions(summary)
    if not found:
        return ""
    items = "".join(f"<li>{html.escape(caution)}</li>" for caution in found)
    return f'<section class="cautions"><h2>Read with care</h2><ul>{items}</ul></section>'


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


def _charts(figures: dict[str, go.Figure | None]) -> str:
    return "\n".join(
        f'<section class="chart">{figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}")}</section>'
        for name, figure in figures.items()
        if figure is not None
    )


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
    title = f"fineflow run {summary['run_id']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child, td:last-child {{ text-align: left; }} code {{ font-size: 85%; }}
section.chart {{ margin: 1.5rem 0; }}
section.cautions, section.warnings {{ background: #fff4ce; border-left: 6px solid #e0a800; padding: 0.5rem 1rem; }}
table.drops td:first-child {{ font-family: monospace; }} table.drops th {{ text-align: right; }}
div.examples pre {{ white-space: pre-wrap; background: #f6f6f6; padding: 0.5rem; font-size: 85%; max-height: 12rem; overflow: auto; }}
div.change {{ display: grid; grid-template-columns: 1fr 1fr; gap: 0.5rem; }}
div.change pre.before {{ background: #fbeaea; }} div.change pre.after {{ background: #eaf6ea; }}
details summary {{ cursor: pointer; font-family: monospace; margin: 0.3rem 0; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(summary.get('pipeline', 'pipeline'))}: run <code>{html.escape(summary['run_id'])}</code></h1>
<p>Storage <code>{html.escape(summary.get('storage', ''))}</code>; {summary.get('seconds', 0)} s.</p>
{_stage_table(summary)}
{_cautions(summary)}
{_warnings(summary)}
{_charts(figures)}
{_why(summary)}
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
