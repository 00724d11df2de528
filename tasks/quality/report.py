"""What the quality stage adds to the run summary, its Prefect artifacts and the HTML report."""

from __future__ import annotations

import json
from typing import Any

import plotly.graph_objects as go

from fineflow import storage
from fineflow.registry import Table
from fineflow.report import LAYOUT
from fineflow.tasks.quality.buckets import LEVEL_NAMES
from fineflow.tasks.quality.calibrate import fallbacks, plural

_LLM_KEYS = ("llm_requests", "llm_retries", "llm_cache_hits", "llm_prompt_tokens", "llm_completion_tokens",
             "llm_seconds", "llm_requests_per_s", "llm_tokens_per_s")
_METRICS = ("trained_on", "held_out", "positives", "precision", "recall", "f1", "accuracy", "spearman")


def _evaluations(train: dict[str, Any]) -> dict[str, Any]:
    """Each classifier's held-out evaluation, read from its committed ``<name>.eval.json``."""
    found = {}
    for url in train.get("artifacts", []):
        if url.endswith(".eval.json"):
            try:
                report = json.loads(storage.read_bytes(url))
            except (FileNotFoundError, ValueError):
                continue
            found[report["classifier"]] = {**report, "file": url}
    return found


def _calibration(per_language: dict[str, Any]) -> dict[str, Any]:
    """Per-language thresholds: the floor, each language's counts per scorer, and why a language uses the global ones."""
    min_docs, min_distinct = per_language["min_docs"], per_language["min_distinct_scores"]
    rows = []
    for name, by_language in sorted(per_language["scorers"].items()):
        for language, entry in sorted(by_language.items()):
            why = None
            if not entry["own_thresholds"]:
                why = (f"{plural(entry['documents'], 'document')} (< min_docs {min_docs})" if entry["documents"] < min_docs
                       else f"{plural(entry['distinct_scores'], 'distinct score')} (< min_distinct_scores {min_distinct})")
            rows.append({"language": language, "scorer": name, "documents": entry["documents"],
                         "distinct_scores": entry["distinct_scores"],
                         "thresholds": "own" if entry["own_thresholds"] else "global", "why": why})
    return {"min_docs": min_docs, "min_distinct_scores": min_distinct, "fallbacks": fallbacks(per_language), "languages": rows}


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    decide, calibrate = steps["decide"], steps["calibrate"]
    fields: dict[str, Any] = {
        "drop_reasons": decide.get("drop_reasons", {}),
        "percentiles": calibrate.get("percentiles", {}),
        "mean_score": calibrate.get("mean_score", {}),
    }
    if calibrate.get("score_histogram"):
        fields["score_histogram"] = calibrate["score_histogram"]
    if decide.get("cut_lines"):
        fields["cut_lines"] = decide["cut_lines"]
    if "per_language" in calibrate:
        fields["calibration"] = _calibration(calibrate["per_language"])
    if "docs_by_level" in decide:
        fields["levels"] = {LEVEL_NAMES[int(level)]: {"documents": n, "kept": decide.get("kept_by_level", {}).get(level, 0)}
                            for level, n in sorted(decide["docs_by_level"].items())}
    if "annotate" in steps:
        annotate = steps["annotate"]
        fields["annotation"] = {
            "documents": annotate.get("docs_in", 0), "annotated": annotate.get("annotated", 0),
            "unparsed": annotate.get("unparsed", {}), "score_histogram": annotate.get("score_histogram", {}),
            **{k: annotate[k] for k in _LLM_KEYS if k in annotate},
            # one file per task (their rows sorted by group and key: annotate.read_annotations)
            "files": annotate["output"] + "/part-*.parquet" if annotate.get("output") else None,
        }
    if "train" in steps:
        fields["classifiers"] = _evaluations(steps["train"])
    return fields


def quality_tables(summary: dict[str, Any]) -> list[Table]:
    tables = []
    classifiers = summary.get("classifiers", {})
    if classifiers:
        rows = [{"classifier": name, "model": c.get("model"), **{k: c.get(k) for k in _METRICS}}
                for name, c in classifiers.items()]
        tables.append(Table(key="classifiers", rows=rows,
                            description=f"{summary['name']}: held-out agreement of each classifier with its labels"))
    annotation = summary.get("annotation")
    if annotation:
        rows = [{"what": key, "value": value if not isinstance(value, dict) else json.dumps(value)}
                for key, value in annotation.items()]
        tables.append(Table(key="annotation", rows=rows, description=f"{summary['name']}: LLM annotation of the sample"))
    calibration = summary.get("calibration")
    if calibration:
        tables.append(Table(key="calibration", rows=[{**row, "why": row["why"] or "-"} for row in calibration["languages"]],
                            description=f"{summary['name']}: per-language thresholds; a language with fewer than "
                            f"{calibration['min_docs']} documents or {calibration['min_distinct_scores']} distinct scores "
                            "uses the global ones"))
    levels = summary.get("levels")
    if levels:
        tables.append(Table(key="levels", rows=[{"level": name, **values} for name, values in levels.items()],
                            description=f"{summary['name']}: documents per Nemotron-CC quality level"))
    return tables


SMALL_HELD_OUT = 100  # below this many held-out documents, precision/recall/F1 move by tens of points per document


def cautions(summary: dict[str, Any]) -> list[str]:
    """What makes the stage's numbers less than they look: a classifier judged on a few held-out
    documents, a language whose thresholds fell back to the global ones."""
    found = []
    for name, evaluation in summary.get("classifiers", {}).items():
        held_out = evaluation.get("held_out")
        if held_out is not None and held_out < SMALL_HELD_OUT:
            found.append(f"classifier {name} was evaluated on {plural(held_out, 'held-out document')} (< {SMALL_HELD_OUT}): "
                         "its precision, recall and F1 are rough estimates")
    found += [f"threshold fallback: {line}" for line in (summary.get("calibration") or {}).get("fallbacks", [])]
    return found


def _histogram(summary: dict[str, Any], name: str, histogram: dict[str, Any]) -> go.Figure:
    """One scorer's scores in bins, with a dashed line where each keep rule cuts (per language, where they differ)."""
    low, width = histogram["low"], histogram["width"]
    bins = sorted(histogram["counts"].items())
    chart = go.Figure(go.Bar(x=[low + (int(i) + 0.5) * width for i, _ in bins], y=[n for _, n in bins],
                             width=width or None, name="documents", hovertemplate="score %{x:.4g}: %{y} documents<extra></extra>"))
    for rule, lines in summary.get("cut_lines", {}).get(name, {}).items():
        for value, documents in lines.items():
            label = f"{rule}: {float(value):.4g}" + (f" ({documents} docs)" if len(lines) > 1 else "")
            chart.add_vline(x=float(value), line_dash="dash", line_color="#d62728", annotation_text=label,
                            annotation_position="top")
    chart.update_layout(title=f"{summary['name']}: distribution of {name}'s scores; keep at or above the dashed line",
                        xaxis_title=f"quality_{name}", yaxis_title="documents", bargap=0.05, showlegend=False, **LAYOUT)
    return chart


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    found = [(f"quality-scores-{name}", _histogram(summary, name, histogram))
             for name, histogram in sorted(summary.get("score_histogram", {}).items()) if histogram.get("counts")]
    classifiers = summary.get("classifiers", {})
    if classifiers:  # grouped bars (a plotly table draws no marks in some viewers); x names the held-out size
        names = [f"{name} ({c.get('model')}, held out: {c.get('held_out')})" for name, c in classifiers.items()]
        chart = go.Figure([go.Bar(name=metric, x=names, y=[c.get(metric) for c in classifiers.values()])
                           for metric in ("precision", "recall", "f1", "spearman")])
        chart.update_layout(title=f"{summary['name']}: classifiers' held-out agreement with their labels",
                            barmode="group", yaxis={"range": [-1, 1] if any((c.get("spearman") or 0) < 0 for c in classifiers.values()) else [0, 1]},
                            **LAYOUT)
        found.append(("quality-classifiers", chart))
    calibration = summary.get("calibration")
    if calibration and calibration["languages"]:
        chart = go.Figure()
        for what, thresholds in (("own thresholds", "own"), ("global thresholds (below the floor)", "global")):
            rows = [row for row in calibration["languages"] if row["thresholds"] == thresholds]
            chart.add_trace(go.Bar(name=what, x=[f"{row['language']} ({row['scorer']})" for row in rows],
                                   y=[row["documents"] for row in rows], text=[row["why"] or "" for row in rows]))
        chart.update_layout(title=f"{summary['name']}: documents per language; with fewer than {calibration['min_docs']} "
                            f"or fewer than {calibration['min_distinct_scores']} distinct scores, the global thresholds",
                            **LAYOUT)
        found.append(("quality-calibration", chart))
    levels = summary.get("levels")
    if levels:
        chart = go.Figure([go.Bar(name=what, x=list(levels), y=[v[what] for v in levels.values()])
                           for what in ("documents", "kept")])
        chart.update_layout(title=f"{summary['name']}: documents per quality level", barmode="group", **LAYOUT)
        found.append(("quality-levels", chart))
    return found
