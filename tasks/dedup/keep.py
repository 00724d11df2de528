"""Which member of a duplicate cluster is kept, and why every other one is removed.

The kept document is chosen by a documented order, never by traversal order: a document of a
previous run (incremental mode) first, then the earliest ``crawl_date``, then the longest text,
then the smallest ``id`` (and, should two members share even their id, the smaller node). Every
other member is removed with the reason of its relation to the kept one: ``exact_duplicate``
(same normalized text), ``url_duplicate`` (same normalized URL) or ``near_duplicate``.

Choosing the first member in that order is associative: the best of some members' bests is the
best of them all, which is what lets the bounded path choose per partition, then merge.
"""

from __future__ import annotations

import polars as pl

_ORDER = [pl.col("node") >= 0, "crawl_date", "text_chars", "id", "node"]
_DESCENDING = [False, False, True, False, False]


def first_in_keep_order(members: pl.DataFrame) -> pl.DataFrame:
    """Per component, its member that the order above keeps, and ``cluster_size``: how many
    members ``members`` has in it (or, given such rows, the sum of their ``cluster_size``)."""
    sizes = (
        members.group_by("component").agg(pl.col("cluster_size").sum())
        if "cluster_size" in members.columns
        else members.group_by("component").agg(pl.len().alias("cluster_size"))
    )
    best = members.drop("cluster_size", strict=False).sort(_ORDER, descending=_DESCENDING, nulls_last=True)
    return best.group_by("component", maintain_order=True).first().join(sizes, on="component")


def roles(members: pl.DataFrame, keepers: pl.DataFrame, exact: bool = True, url: bool = True) -> pl.DataFrame:
    """``members`` with their component's ``cluster_id``, ``cluster_size`` and their ``drop_reason``
    (null for the kept one), ``keepers`` being ``first_in_keep_order`` of all their components.

    ``exact``/``url``: whether those passes ran; a pass that is off names no removal, even when
    the keys happen to match (an exact copy found by MinHash alone is a ``near_duplicate``).
    """
    keeper = keepers.select(
        "component",
        pl.col("id").alias("cluster_id"),
        pl.col("node").alias("kept_node"),
        pl.col("exact_key").alias("kept_exact"),
        pl.col("url_key").alias("kept_url"),
        pl.col("cluster_size").cast(pl.UInt32),
    )
    joined = members.join(keeper, on="component")
    return joined.with_columns(
        pl.when(pl.col("node") == pl.col("kept_node"))
        .then(pl.lit(None, dtype=pl.String))
        .when(pl.lit(exact) & (pl.col("exact_key") == pl.col("kept_exact")))
        .then(pl.lit("exact_duplicate"))
        .when(pl.lit(url) & (pl.col("url_key") == pl.col("kept_url")))
        .then(pl.lit("url_duplicate"))
        .otherwise(pl.lit("near_duplicate"))
        .alias("drop_reason")
    )


def choose_kept(members: pl.DataFrame, exact: bool = True, url: bool = True) -> pl.DataFrame:
    """Per component: size, the kept member, and each member's role (see the module docstring)."""
    return roles(members, first_in_keep_order(members), exact, url)
