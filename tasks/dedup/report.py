"""What the dedup stage adds to the run summary, its Prefect artifacts and the HTML report."""

from __future__ import annotations

from typing import Any

from fineflow.registry import Table

_CLUSTER_FIELDS = ("clusters", "cluster_sizes", "cluster_peak_rss_mb", "index_bridged_clusters", "index_bridged_examples")
_APPEND_FIELDS = ("index_docs_appended", "index_runs_not_deduplicated_against")  # with index: (the append step)
_SUBSTRING_FIELDS = ("substring_chunks", "substring_docs_cut", "substring_spans_removed", "substring_bytes_removed")


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    fields = {key: steps["remove"][key] for key in ("drop_reasons", *_SUBSTRING_FIELDS) if key in steps["remove"]}
    cluster = steps.get("cluster", {})  # none with substring dedup alone
    appended = steps.get("append", {})
    return fields | {key: cluster[key] for key in _CLUSTER_FIELDS if key in cluster} | {key: appended[key] for key in _APPEND_FIELDS if key in appended}


def cluster_tables(summary: dict[str, Any]) -> list[Table]:
    """One table: pairs per key, clusters and their sizes, removals by reason, the clustering's memory."""
    steps = {step["step"]: step for step in summary["steps"]}
    rows = [{"what": f"candidate pairs: {key}", "value": count} for key, count in steps.get("buckets", {}).get("pairs", {}).items()]
    cluster = steps.get("cluster")
    if cluster is not None:
        rows.append({"what": "documents in a cluster", "value": cluster.get("clustered_docs", 0)})
        rows.append({"what": "clusters", "value": cluster.get("clusters", 0)})
        rows += [{"what": f"clusters of size {size}", "value": n} for size, n in cluster.get("cluster_sizes", {}).items()]
    rows += [{"what": f"removed: {reason}", "value": n} for reason, n in summary.get("drop_reasons", {}).items()]
    if "index_bridged_clusters" in summary:  # with index:
        rows.append({"what": "clusters joining indexed documents (reported, not merged)", "value": summary["index_bridged_clusters"]})
    if "index_docs_appended" in summary:
        rows.append({"what": "documents appended to the index", "value": summary["index_docs_appended"]})
    if cluster is not None:
        rows.append({"what": "clustering peak memory (MB)", "value": cluster.get("cluster_peak_rss_mb", 0)})
    rows += [{"what": key.replace("_", " "), "value": summary[key]} for key in _SUBSTRING_FIELDS if key in summary]
    return [
        Table(
            key="clusters",
            rows=rows,
            description=f"{summary['name']}: duplicate pairs, clusters and removals; rejects at {summary.get('rejects')}",
        )
    ]


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """The duplicate clusters by size (a bar chart), when there are any."""
    sizes = summary.get("cluster_sizes")
    if not sizes:
        return []
    import plotly.graph_objects as go

    from fineflow.report import LAYOUT

    figure = go.Figure(go.Bar(x=list(sizes), y=list(sizes.values()), text=list(sizes.values())))
    figure.update_layout(
        title=f"{summary['name']}: duplicate clusters by size ({summary.get('clusters', sum(sizes.values()))} clusters)",
        xaxis_title="documents in the cluster", yaxis_title="clusters", xaxis_type="category", **LAYOUT,
    )
    return [("clusters", figure)]
