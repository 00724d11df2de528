"""What the rephrase stage adds to the run summary, its Prefect artifacts and the HTML report:
per task, the documents chosen, rewritten and rejected (by reason), the inputs sent and read
from the response cache, tokens generated; a few source / synthetic pairs."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from fineflow.examples import artifact_examples
from fineflow.registry import Table
from fineflow.report import LAYOUT

MAX_EXAMPLES = 6


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    choose, generate = steps["choose"], steps["generate"]
    tasks: dict[str, dict[str, Any]] = {}
    for name, chosen in (choose.get("by_task") or {}).items():
        done = (generate.get("by_task") or {}).get(name, {})
        tasks[name] = {"candidates": chosen.get("candidates", 0), "chosen": chosen.get("chosen", 0),
                       "source_tokens": chosen.get("source_tokens", 0), "rewritten": done.get("kept", 0),
                       "rejected": done.get("documents", 0) - done.get("kept", 0), "inputs": done.get("inputs", 0),
                       "kept_inputs": done.get("kept_inputs", 0), "cached_inputs": done.get("cached_inputs", 0),
                       "output_tokens": done.get("output_tokens", 0), "input_reasons": done.get("input_reasons", {}),
                       "drop_reasons": done.get("drop_reasons", {}),
                       "selection_skips": (steps["select"].get("skipped") or {}).get(name, {})}
    seconds = generate.get("llm_seconds", 0.0)
    return {"tasks": tasks, "native": generate.get("native", 0), "synthetic": generate.get("synthetic", 0),
            "drop_reasons": generate.get("drop_reasons", {}), "llm_requests": generate.get("llm_requests", 0),
            "llm_cache_hits": generate.get("llm_cache_hits", 0), "llm_completion_tokens": generate.get("llm_completion_tokens", 0),
            "llm_seconds": seconds,
            "generated_tokens_per_s": round(generate.get("llm_completion_tokens", 0) / seconds, 1) if seconds else None,
            "examples": artifact_examples(generate, "task", MAX_EXAMPLES)}


def rephrase_tables(summary: dict[str, Any]) -> list[Table]:
    rows = [{"task": name, "candidates": t["candidates"], "chosen": t["chosen"], "rewritten": t["rewritten"],
             "rejected": t["rejected"], "inputs": t["inputs"], "kept_inputs": t["kept_inputs"],
             "cached_inputs": t["cached_inputs"], "output_tokens": t["output_tokens"],
             "input_failures": ", ".join(f"{r} {n}" for r, n in sorted(t["input_reasons"].items())) or "-"}
            for name, t in summary.get("tasks", {}).items()]
    tables = []
    if rows:
        tables.append(Table(key="tasks", rows=rows, description=f"{summary['name']}: per task, documents chosen, rewritten "
                                                              "and rejected; inputs sent, kept and read from the cache; "
                                                              "tokens generated; why inputs failed"))
    if summary.get("examples"):
        tables.append(Table(key="examples", rows=summary["examples"], description=f"{summary['name']}: source and synthetic"))
    return tables


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    tasks = summary.get("tasks", {})
    if not tasks:
        return []
    chart = go.Figure([go.Bar(name=label, x=list(tasks), y=[t[key] for t in tasks.values()])
                       for label, key in (("chosen", "chosen"), ("rewritten", "rewritten"), ("rejected", "rejected"))])
    chart.update_layout(title=f"{summary['name']}: documents per task", barmode="group", **LAYOUT)
    return [("rephrase-tasks", chart)]
