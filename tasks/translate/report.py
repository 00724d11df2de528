"""What the translate stage adds to the run summary, its Prefect artifacts and the HTML report:
pass rates per check and target language, the segment cache's hit rate, translations cut at their
token budget (retried, and still cut after the retry), side-by-side examples."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from fineflow.examples import artifact_examples
from fineflow.registry import Table
from fineflow.report import LAYOUT
from fineflow.tasks.translate.qc import CHECKS

MAX_EXAMPLES = 6


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    choose, translate, decide = steps["choose"], steps["translate"], steps["decide"]
    translated = decide.get("translated", {})
    failed = decide.get("failed_checks", {})
    targets = {}
    # A target whose every document failed (truncated, refused) has no measured one but is listed.
    for target in sorted(set(translated) | set(translate.get("by_target", {}))):
        documents = translated.get(target, 0)
        work = translate.get("by_target", {}).get(target, {})
        segments = work.get("segments", 0)
        targets[target] = {
            "documents": documents, "passed": decide.get("passed", {}).get(target, 0),
            "pass_rate": {check: round(1 - failed.get(target, {}).get(check, 0) / documents, 4) if documents else None
                          for check in CHECKS},
            "segments": segments, "cache_hits": work.get("cache_hits", 0), "sent": work.get("sent", 0),
            "cache_hit_rate": round(work.get("cache_hits", 0) / segments, 4) if segments else None,
            # segments sent again for a cut translation; documents rejected for one still cut
            "retried": work.get("retried", 0), "truncated_documents": work.get("truncated", 0),
        }
    return {
        "selected": choose.get("chosen", 0), "candidates": choose.get("candidates", 0),
        "source_tokens": choose.get("source_tokens", 0), "selected_by_language": choose.get("chosen_by_language", {}),
        "selection_skips": steps["select"].get("skipped", {}),
        "targets": targets, "drop_reasons": decide.get("drop_reasons", {}),
        "segments": translate.get("segments", 0), "cache_hits": translate.get("cache_hits", 0), "sent": translate.get("sent", 0),
        "retried": translate.get("retried", 0), "truncated_segments": translate.get("truncated", 0),
        "backend_seconds": translate.get("backend_seconds", 0.0), "examples": artifact_examples(translate, "target", MAX_EXAMPLES),
    }


def translate_tables(summary: dict[str, Any]) -> list[Table]:
    rows = [{"target": target, "documents": t["documents"], "passed": t["passed"], "segments": t["segments"],
             "cache_hit_rate": t["cache_hit_rate"], "retried": t.get("retried", 0),
             "truncated_documents": t.get("truncated_documents", 0),
             **{f"pass {check}": t["pass_rate"][check] for check in CHECKS}}
            for target, t in summary.get("targets", {}).items()]
    tables = []
    if rows:
        tables.append(Table(key="qc", rows=rows, description=f"{summary['name']}: translations per target language, pass rate "
                                                            "per check, segment cache hit rate, segments retried for a cut translation and "
                                                            "documents rejected for one still cut"))
    if summary.get("examples"):
        tables.append(Table(key="examples", rows=summary["examples"], description=f"{summary['name']}: side by side"))
    return tables


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    targets = summary.get("targets", {})
    if not targets:
        return []
    chart = go.Figure([go.Bar(name=check, x=list(targets), y=[t["pass_rate"][check] for t in targets.values()])
                       for check in CHECKS])
    chart.update_layout(title=f"{summary['name']}: pass rate per quality check and target language", barmode="group",
                        yaxis={"range": [0, 1]}, **LAYOUT)
    found = [("translate-qc", chart)]
    examples = summary.get("examples") or []
    if examples:  # side by side: the first characters of a few sources and their translations
        table = go.Figure(go.Table(
            header={"values": ["target", "source", "translation"]},
            cells={"values": [[e["target"] for e in examples], [e["source"][:300] for e in examples],
                              [e["translation"][:300] for e in examples]], "align": "left"},
            columnwidth=[1, 6, 6]))
        table.update_layout(title=f"{summary['name']}: examples", **{**LAYOUT, "height": 120 + 90 * len(examples)})
        found.append(("translate-examples", table))
    return found
