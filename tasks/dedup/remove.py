"""dedup's last step, ``remove``: per upstream shard, drop the documents the clustering chose to
remove and give every kept document its ``dup_cluster_size`` (1 for singletons).

Rejects keep every input column plus ``drop_reason`` (``exact_duplicate``, ``url_duplicate``,
``near_duplicate``), ``dup_cluster_id`` (the kept document's id) and ``dup_cluster_size``.

With ``substring`` in its params, the kept documents then lose their repeated spans
(``fineflow.tasks.dedup.substring``); with substring dedup alone (no ``assignments``), no document
is dropped as a duplicate, only as ``substring_too_short``.
"""

from __future__ import annotations

import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_input, set_columns
from fineflow.tasks.dedup import substring
from fineflow.tasks.dedup.cluster import read_assignments

STEP_VERSION = "1"
LIBRARIES = ("pyarrow",)


class MisalignedAssignments(RuntimeError):
    pass


def remove_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    docs = read_input(shard)
    if "assignments" not in shard:  # substring dedup alone
        return _cut_substrings(shard, params, output_url, rejects_url, docs, None, Counter(), started)
    assigned = read_assignments(shard["assignments"])
    rows = (assigned["node"] & 0xFFFFFFFF).to_list()
    ids = docs.column("id").to_pylist()
    if any(row >= len(ids) or ids[row] != doc_id for row, doc_id in zip(rows, assigned["id"].to_list())):
        raise MisalignedAssignments(f"shard {shard['shard']}: cluster assignments do not match {shard['input']}")

    sizes = [1] * docs.num_rows
    cluster_ids: list[str | None] = [None] * docs.num_rows
    reasons: list[str | None] = [None] * docs.num_rows
    for row, cluster_id, size, reason in zip(rows, assigned["cluster_id"].to_list(), assigned["cluster_size"].to_list(), assigned["drop_reason"].to_list()):
        sizes[row], cluster_ids[row], reasons[row] = size, cluster_id, reason
    keep = pa.array([r is None for r in reasons], pa.bool_())
    # a second dedup stage replaces the first one's sizes
    with_sizes = set_columns(docs, {"dup_cluster_size": pa.array(sizes, pa.int32())})
    kept = with_sizes.filter(keep)
    dropped = pc.invert(keep)
    rejects = set_columns(
        with_sizes.filter(dropped),
        {
            "drop_reason": pa.array([r for r in reasons if r], pa.string()),
            "dup_cluster_id": pa.array(cluster_ids, pa.string()).filter(dropped),
        },
    )

    by_reason = Counter(r for r in reasons if r)
    return _cut_substrings(shard, params, output_url, rejects_url, kept, rejects, by_reason, started)


def _cut_substrings(
    shard: dict, params: dict, output_url: str, rejects_url: str, kept: pa.Table, rejects: pa.Table | None, by_reason: Counter, started: float
) -> dict:
    """Substring dedup of the kept documents when configured, then the shard committed."""
    stats: dict = {}
    if params.get("substring"):
        kept, too_short, stats = substring.apply(kept, substring.SubstringDedup(**params["substring"]))
        if too_short.num_rows:
            by_reason.update(too_short.column("drop_reason").to_pylist())
            rejects = too_short if rejects is None else pa.concat_tables([rejects, too_short], promote_options="default")
    return commit_shard(  # it counts the kept documents' languages and characters
        shard["shard"],
        output_url,
        kept,
        rejects_url,
        rejects,
        drop_reasons=dict(sorted(by_reason.items())),
        seconds=round(time.perf_counter() - started, 3),
        **stats,
    )
