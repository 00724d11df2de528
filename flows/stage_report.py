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
        "text_chars": last.get("text_chars"),  # characters of text kept (None for runs cached before it was counted)
        "warnings": [warning for step in steps for warning in step.get("warnings", [])],
        **({"inputs": first["inputs"]} if first.get("inputs") else {}),
        **{key: last[key] for key in ("drop_reasons", "drops_by_language") if key in last},
        **{key: step[key] for step in steps for key in ("clusters", "cluster_sizes", "cluster_peak_rss_mb") if key in step},
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
                "rejects": step["rejected"],
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


def publish_drop_table(summary: dict[str, Any]) -> None:
    """Two tables: documents dropped per reason, and kept/dropped per language with its top reasons."""
    reasons = summary.get("drop_reasons", {})
    total = max(summary["docs_in"], 1)
    create_table_artifact(
        key=f"{summary['name']}-drop-reasons",
        table=[
            {"reason": reason, "documents": count, "share of input": f"{100 * count / total:.1f}%"}
            for reason, count in sorted(reasons.items(), key=lambda item: -item[1])
        ]
        or [{"reason": "-", "documents": 0, "share of input": "0%"}],
        description=f"{summary['name']}: why documents were dropped; rejects at {summary.get('rejects')}",
    )
    by_language = summary.get("drops_by_language", {})
    kept = summary.get("languages", {})
    rows = []
    for lang in sorted(set(by_language) | set(kept), key=lambda code: -(kept.get(code, 0) + sum(by_language.get(code, {}).values()))):
        dropped = by_language.get(lang, {})
        n_dropped = sum(dropped.values())
        top = sorted(dropped.items(), key=lambda item: -item[1])[:3]
        rows.append(
            {
                "language": lang,
                "kept": kept.get(lang, 0),
                "dropped": n_dropped,
                "drop rate": f"{100 * n_dropped / max(kept.get(lang, 0) + n_dropped, 1):.0f}%",
                "top reasons": ", ".join(f"{r}={n}" for r, n in top) or "-",
            }
        )
    create_table_artifact(
        key=f"{summary['name']}-languages",
        table=rows or [{"language": "-", "kept": 0, "dropped": 0, "drop rate": "-", "top reasons": "-"}],
        description=f"{summary['name']}: documents kept and dropped per language",
    )


def publish_dedup_table(summary: dict[str, Any]) -> None:
    """One table: pairs per key, clusters and their sizes, removals by reason, the clustering's memory."""
    steps = {step["step"]: step for step in summary["steps"]}
    rows = [{"what": f"candidate pairs: {key}", "value": count} for key, count in steps["buckets"].get("pairs", {}).items()]
    cluster = steps["cluster"]
    rows.append({"what": "documents in a cluster", "value": cluster.get("clustered_docs", 0)})
    rows.append({"what": "clusters", "value": cluster.get("clusters", 0)})
    rows += [{"what": f"clusters of size {size}", "value": n} for size, n in cluster.get("cluster_sizes", {}).items()]
    rows += [{"what": f"removed: {reason}", "value": n} for reason, n in summary.get("drop_reasons", {}).items()]
    rows.append({"what": "clustering peak memory (MB)", "value": cluster.get("cluster_peak_rss_mb", 0)})
    create_table_artifact(
        key=f"{summary['name']}-clusters",
        table=rows,
        description=f"{summary['name']}: duplicate pairs, clusters and removals; rejects at {summary.get('rejects')}",
    )
