"""Per-stage summary (for --summary-json) and its Prefect table artifact."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_table_artifact

from fineflow.counters import merge_counts


def stage_summary(name: str, steps: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    first, last = steps[0], steps[-1]
    rejects = [s["rejects"] for s in steps if s.get("rejects")]
    return {
        "name": name,
        "docs_in": first["docs_in"],
        "docs_out": last["docs_out"],
        "shards": sum(s["shards"] for s in steps),
        "cached_shards": sum(s["cached_shards"] for s in steps),
        "seconds": round(seconds, 2),
        "output": last["output"],
        "rejects": rejects[-1] if rejects else None,
        "skips": merge_counts(s.get("skips", {}) for s in steps),
        "languages": last.get("languages", {}),
        "steps": steps,
    }


def publish_stage_table(summary: dict[str, Any]) -> None:
    rows = []
    for step in summary["steps"]:
        rows.append(
            {
                "step": step["step"],
                "docs in": step["docs_in"],
                "docs out": step["docs_out"],
                "rejects": step["rejects"],
                "skips": ", ".join(f"{k}={v}" for k, v in sorted(step.get("skips", {}).items())) or "-",
                "MB in": round(step.get("bytes_in", 0) / 1e6, 2),
                "text MB out": round(step.get("text_chars", 0) / 1e6, 2),
                "tasks (cached)": f"{step['shards']} ({step['cached_shards']})",
                "seconds": step["seconds"],
            }
        )
    create_table_artifact(
        key=f"{summary['name']}-stats",
        table=rows,
        description=f"{summary['name']}: documents in/out, skips by reason, bytes, time; output {summary['output']}",
    )
