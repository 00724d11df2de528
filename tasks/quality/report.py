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
            "cache_entries": annotate.get("cache_entries", 0), **{k: annotate[k] for k in _LLM_KEYS if k in annotate},
            "file": annotate["output"] + "/" + "00000.parquet" if annotate.get("output") else None,
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


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    found = []
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
