"""The persistent dedup index: the keys of every document earlier runs released, in object storage.

Layout under the configured ``index:`` folder (docs/dedup.md, "Persistent index")::

    <index>/<digest>/params.json                      what the digest covers (written once)
    <index>/<digest>/keys/<key>/<pp>/<run>.parquet    (value uint64, node int64), sorted by value
    <index>/<digest>/docs/<run>.parquet               node, id, crawl_date, text_chars, exact_key, url_key
    <index>/<digest>/runs/<run>.json                  the run's commit marker, written last

``digest`` covers everything that changes a key's value (``key_params``): runs with other MinHash
settings never meet. ``key`` is a signature column (``band_NN``, ``exact_key``, ``url_key``) and
``pp`` the top byte of the value in hex, so a task reads only the value ranges its new documents
have. ``run`` is the appending run's ``signatures`` fingerprint. Files are immutable and only
added; a run's files count only once its marker exists (a crashed append leaves nothing visible,
and re-appending writes the same names with the same bytes).

In a run that reads the index, an indexed document's node is ``-1 - (ordinal << 48 | node)``:
negative like a previous run's (so the keep order puts it first and it is never removed), and
distinct across runs (``ordinal`` is the run's place in the list the planner read).
"""

from __future__ import annotations

import io
import json

import polars as pl

from fineflow import storage
from fineflow.fingerprint import digest

PREFIX_BITS = 8  # 256 value ranges per key
LAYOUT = 1  # the layout above: a change of it is a new digest
RUN_BITS = 48  # an indexed node: (ordinal << 48) | (shard << 32 | row)
MAX_SHARDS = 1 << (RUN_BITS - 32)
MAX_RUNS = 1 << (63 - RUN_BITS - 1)
MARK = "index:"  # marks an index docs file in a list of signature files: index:<ordinal>:<url>
DOC_COLUMNS = ["node", "id", "crawl_date", "text_chars", "exact_key", "url_key"]


def key_params(signature_params: dict, normalization: str) -> dict:
    """What changes the value of a key: MinHash settings, word splitting, the prefix rule and the
    normalization (the ``signatures`` step version). Not the library versions (bit-for-bit tested),
    nor which passes run (a run stores every key it has)."""
    names = ("shingles", "n_grams", "bands", "rows", "seed", "hash_function", "word_splitters", "word_splitter", "max_text_chars")
    return {
        **{name: signature_params[name] for name in names},
        "num_perm": signature_params["bands"] * signature_params["rows"],
        "normalization": normalization,
        "layout": LAYOUT,
        "prefix_bits": PREFIX_BITS,
    }


def folder_of(index: str, params: dict) -> str:
    return storage.join(index, digest(params, 16))


def committed_runs(folder: str) -> dict[str, dict]:
    """``{run: marker}`` of every committed run of an index folder."""
    runs = {}
    marker_folder = storage.join(folder, "runs")
    for name in sorted(storage.list_names(marker_folder)):
        if name.endswith(".json") and not name.startswith("."):
            runs[name.removesuffix(".json")] = json.loads(storage.read_bytes(storage.join(marker_folder, name)))
    return runs


def runs_to_read(folder: str, run: str) -> list[str]:
    """The runs a run deduplicates against: every committed one, in commit order; or, for a run
    already committed (a re-run), the ones it read then, so its plan and outputs are unchanged."""
    runs = committed_runs(folder)
    if run in runs:
        return list(runs[run]["base"])
    ordered = sorted(runs, key=lambda name: (runs[name]["committed"], name))
    if len(ordered) >= MAX_RUNS:
        raise ValueError(f"index: {folder} holds {len(ordered)} runs, at most {MAX_RUNS - 1} can be read at once")
    return ordered


def old_node(ordinal: int, node: pl.Expr) -> pl.Expr:
    return (-1 - ((ordinal << RUN_BITS) | node)).alias("node")


def prefix_of(values: pl.Expr) -> pl.Expr:
    return (values // (1 << (64 - PREFIX_BITS))).cast(pl.Int64)


def key_file(folder: str, key: str, prefix: int, run: str) -> str:
    return storage.join(folder, "keys", key, f"{prefix:0{PREFIX_BITS // 4}x}", f"{run}.parquet")


def docs_file(folder: str, run: str) -> str:
    return storage.join(folder, "docs", f"{run}.parquet")


def marked_docs(folder: str, runs: list[str]) -> list[str]:
    """The runs' docs files, marked for ``buckets.read_columns`` (nodes made negative per run)."""
    return [f"{MARK}{ordinal}:{docs_file(folder, run)}" for ordinal, run in enumerate(runs)]


def unmark(url: str) -> tuple[str, int | None]:
    """``(url, ordinal)`` of a marked index docs file; ``(url, None)`` for any other file."""
    if not url.startswith(MARK):
        return url, None
    ordinal, _, plain = url.removeprefix(MARK).partition(":")
    return plain, int(ordinal)


def read_docs(url: str, ordinal: int, nodes: pl.Series) -> pl.DataFrame | None:
    """The attributes of those of ``nodes`` (this run's numbering) that are in the docs file of the
    run at ``ordinal``: only the row groups whose node range holds one are read (the file is sorted
    by node), not the whole index."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    high = -1 - nodes.filter(nodes < 0)  # (ordinal << RUN_BITS) | node
    stored = (high.filter(high // (1 << RUN_BITS) == ordinal) % (1 << RUN_BITS)).unique().sort()
    if stored.is_empty():  # none of this run's documents is clustered: nothing read
        return None
    with storage.open_input(url, block_size=1 << 20) as handle:
        table = pq.read_table(handle, columns=DOC_COLUMNS, filters=pc.field("node").isin(stored.to_arrow()))
    return pl.from_arrow(table).with_columns(old_node(ordinal, pl.col("node")))


def read_key(folder: str, runs: list[str], key: str, values: pl.Series) -> tuple[pl.DataFrame, int]:
    """``(node, key)`` rows of the indexed documents whose ``key`` equals one of ``values`` (their
    nodes negative), reading only the value ranges ``values`` fall in; and how many rows were read."""
    wanted = pl.DataFrame({key: values}).drop_nulls().unique()
    prefixes = set(wanted.select(prefix_of(pl.col(key)))[key].to_list()) if wanted.height else set()
    frames, read = [], 0
    for ordinal, run in enumerate(runs):
        marker = json.loads(storage.read_bytes(storage.join(folder, "runs", f"{run}.json")))
        for prefix in sorted(prefixes & set(marker["keys"].get(key, []))):
            rows = pl.read_parquet(io.BytesIO(storage.read_bytes(key_file(folder, key, prefix, run))))
            read += rows.height
            matched = rows.rename({"value": key}).join(wanted, on=key, how="semi")
            frames.append(matched.select(old_node(ordinal, pl.col("node")).alias("node"), pl.col(key)))
    empty = pl.DataFrame(schema={"node": pl.Int64, key: pl.UInt64})
    return pl.concat([empty, *frames]), read


EXAMPLES = 3  # bridged clusters, and ids of each, shown in the stats (fineflow.examples.PER_REASON)


def bridge_rows(members: pl.DataFrame) -> pl.DataFrame:
    """What ``bridges`` needs of some clustered members (node, id, component): every indexed one,
    the ``EXAMPLES`` smallest new ids per component (so the bounded path can stream a partition)."""
    old = members.filter(pl.col("node") < 0)
    new = members.filter(pl.col("node") >= 0).sort("id", "node").group_by("component", maintain_order=True).head(EXAMPLES)
    return pl.concat([old.select("component", "node", "id"), new.select("component", "node", "id")])


def bridges(rows: pl.DataFrame) -> pl.DataFrame:
    """The clusters in which new documents connect two or more indexed documents, which no earlier
    run connected (the index holds kept documents only: no two of them share a key). Reported,
    never merged: both stay released. One row each: ``old`` (indexed members), a few ids."""
    old, new = pl.col("node") < 0, pl.col("node") >= 0
    found = rows.group_by("component").agg(
        old.sum().alias("old"),
        new.sum().alias("new"),
        pl.col("id").filter(old).sort().head(EXAMPLES).alias("old_ids"),
        pl.col("id").filter(new).sort().head(EXAMPLES).alias("new_ids"),
    )
    return found.filter((pl.col("old") >= 2) & (pl.col("new") >= 1)).sort("component")


def bridge_stats(count: int, found: list[pl.DataFrame]) -> dict:
    """The step's stats: how many clusters bridge indexed documents, the first few (by component)."""
    examples = pl.concat(found).sort("component").head(EXAMPLES).to_dicts() if found else []
    # shaped as fineflow.examples' samples ({what: [{rank, id, ...}]}), so step totals keep them
    ranked = [{"rank": f"{n:04d}", "id": e["new_ids"][0], "old_ids": e["old_ids"], "new_ids": e["new_ids"]} for n, e in enumerate(examples)]
    return {"index_bridged_clusters": count, "index_bridged_examples": {"bridged": ranked} if ranked else {}}
