"""A stage's Prefect table artifacts: its steps' counts, and the tables its kind contributes."""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import create_table_artifact

from fineflow import registry


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lower-case letters, digits and dashes) from a stage name and more:
    stage names may hold '_', which Prefect refuses in keys."""
    return re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())


def publish_stage_tables(summary: dict[str, Any]) -> None:
    rows = []
    for step in summary["steps"]:
        rows.append(
            {
                "step": step["step"],
                "docs in": step["docs_in"],
                "docs out": step["docs_out"],
                "rejects": step["rejected"],
                "skips": ", ".join(f"{k}={v}" for k, v in sorted(step.get("skips", {}).items())) or "-",
                "MB in": round(step.get("bytes_in", 0) / 1e6, 2),
                "text MB out": round(step.get("text_chars", 0) / 1e6, 2),
                "tasks (cached)": f"{step['shards']} ({step['cached_shards']})",
                "seconds": step["seconds"],
            }
        )
    create_table_artifact(
        key=artifact_key(summary["name"], "stats"),
        table=rows,
        description=f"{summary['name']}: documents in/out, skips by reason, bytes, time; output {summary['output']}",
    )
    for table in registry.get(summary["kind"]).call("tables", summary) or []:
        create_table_artifact(key=artifact_key(summary["name"], table.key), table=table.rows, description=table.description)
