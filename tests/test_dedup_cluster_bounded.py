"""dedup's ``cluster`` step partitioned on storage (bounded memory) against the in-memory path:
the same components on graphs with a known answer, the same kept documents and the same output
bytes, with tiny bounds and an odd number of partitions."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from test_dedup import planted, run_dedup  # noqa: F401  (planted: a fixture)

from fineflow import storage
from fineflow.tasks.dedup.bounded import bounded_cluster
from fineflow.tasks.dedup.buckets import PREVIOUS
from fineflow.tasks.dedup.cluster import _in_memory, choose_path, cluster_shard, connected_components
from fineflow.tasks.dedup.components import (
    EDGE_ROW_BYTES,
    STATE_ROW_BYTES,
    WIDE_ROW_BYTES,
    Bound,
    bound_for,
    components_on_storage,
)
from fineflow.tasks.dedup.config import DedupStage
from fineflow.tasks.dedup.signatures import node_id

TINY = Bound(partitions=7, chunk_rows=97)  # many runs per partition, many partitions per run
SMALL = Bound(partitions=7, chunk_rows=401)  # the same for graphs of thousands of edges


def _edges(pairs) -> pl.DataFrame:
    return pl.DataFrame([(min(a, b), max(a, b)) for a, b in pairs], schema={"a": pl.Int64, "b": pl.Int64}, orient="row")


def _bounded_components(edges: pl.DataFrame, folder: Path, bound: Bound = SMALL) -> tuple[pl.DataFrame, dict]:
    batches = [edges.slice(start, 50) for start in range(0, edges.height, 50)]
    labels, counts = components_on_storage(batches, str(folder), bound)
    found = pl.concat([pl.DataFrame(schema={"node": pl.Int64, "component": pl.Int64})] + [r for p in range(bound.partitions) for r in labels.read(p)])
    labels.remove()
    return found.sort("node"), counts


def _chain(nodes: list[int]) -> list[tuple[int, int]]:
    return list(zip(nodes, nodes[1:]))


def test_known_components_chains_stars_and_random_graphs(tmp_path):
    rng = random.Random(7)
    shuffled = rng.sample(range(1_000, 3_000), 2_000)  # a chain in random node order: many passes
    ascending = list(range(10_000, 11_500))  # each node's smallest neighbour is the one before it
    star = [(50_000, 50_000 + i) for i in range(1, 400)]
    hub_star = [(60_000 + i, 70_000) for i in range(300)]  # the hub is the largest node
    pairs = _chain(shuffled) + _chain(ascending) + star + hub_star
    pairs += [(-5, 1_500), (-9, 60_010)]  # a previous run's nodes are negative
    pairs += [tuple(rng.sample(range(100_000, 100_600), 2)) for _ in range(500)]  # random graph
    pairs += pairs[:300]  # repeated pairs (one per band that found them)
    edges = _edges(pairs)
    found, counts = _bounded_components(edges, tmp_path / "scratch")
    assert found.equals(connected_components(edges.unique()))
    assert counts["edges"] == edges.unique().height
    component = dict(zip(found["node"].to_list(), found["component"].to_list()))
    assert {component[n] for n in shuffled} == {-5}  # -5 hangs on a shuffled-chain node
    assert {component[n] for n in ascending} == {10_000}
    assert {component[n] for n in range(60_000, 60_300)} == {-9}
    assert counts["passes"] > 4  # the long chains needed several rounds
    assert not list((tmp_path / "scratch").rglob("*.parquet"))  # every pass's spill removed


@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_random_graphs_in_any_partitioning(tmp_path, partitions):
    rng = random.Random(partitions)
    pairs = [tuple(rng.sample(range(3_000), 2)) for _ in range(2_500)]
    edges = _edges(pairs)
    found, _ = _bounded_components(edges, tmp_path, Bound(partitions, 301))
    assert found.equals(connected_components(edges.unique()))


def test_a_star_forest_takes_one_pass_and_no_edges_none(tmp_path):
    found, counts = _bounded_components(_edges([(1, 2), (1, 3), (10, 11)]), tmp_path / "a")
    assert counts["passes"] == 1 and found["component"].to_list() == [1, 1, 1, 10, 10]
    found, counts = _bounded_components(_edges([]).cast({"a": pl.Int64, "b": pl.Int64}), tmp_path / "b")
    assert found.is_empty() and counts["edges"] == 0


# ---------------------------------------------------------------- the whole step


def _write(frame: pl.DataFrame, path: Path) -> str:
    frame.write_parquet(path, row_group_size=113)
    return str(path)


def _signatures(shard: int, rows: int, rng: random.Random) -> pl.DataFrame:
    day = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return pl.DataFrame(
        {
            "node": [node_id(shard, row) for row in range(rows)],
            # few distinct values and some nulls: ties are decided by the later keys, even the node
            "id": [f"doc-{rng.randrange(rows * 3)}" for _ in range(rows)],
            "crawl_date": [None if rng.random() < 0.1 else day + timedelta(days=rng.randrange(3)) for _ in range(rows)],
            "text_chars": [None if rng.random() < 0.1 else rng.choice([100, 200, 300]) for _ in range(rows)],
            "exact_key": [rng.randrange(40) for _ in range(rows)],
            "url_key": [None if rng.random() < 0.2 else rng.randrange(40) for _ in range(rows)],
        },
        schema={"node": pl.Int64, "id": pl.String, "crawl_date": pl.Datetime("us", "UTC"), "text_chars": pl.Int64, "exact_key": pl.UInt64, "url_key": pl.UInt64},
    )


@pytest.fixture
def generated(tmp_path):
    """Three upstream shards and a previous run's shard, their signatures and edge files of two keys."""
    rng = random.Random(3)
    shards = [_signatures(n, 700, rng) for n in range(3)]
    old = _signatures(0, 300, rng)
    urls = [_write(frame, tmp_path / f"sig-{n}.parquet") for n, frame in enumerate(shards)]
    urls.append(PREVIOUS + _write(old, tmp_path / "previous.parquet"))
    nodes = [n for frame in shards for n in frame["node"].to_list()] + [-n - 1 for n in old["node"].to_list()]
    chain = rng.sample(nodes, 600)
    first = _edges(_chain(chain) + [tuple(rng.sample(nodes, 2)) for _ in range(800)])
    second = _edges([(chain[0], n) for n in rng.sample(nodes, 300)] + [tuple(rng.sample(nodes, 2)) for _ in range(400)])
    edges = [_write(frame.sort("a", "b"), tmp_path / f"edges-{n}.parquet") for n, frame in enumerate([first, second])]
    return {"edges": edges, "signatures": urls, "upstream_shards": 4, "exact": True, "url": True}  # shard 3: none


@pytest.mark.parametrize(("exact", "url"), [(True, True), (False, True), (False, False)])
def test_the_partitioned_step_assigns_as_the_in_memory_one(generated, tmp_path, exact, url):
    params = {**generated, "exact": exact, "url": url}
    expected = _in_memory(params)
    work = bounded_cluster(params, str(tmp_path / "scratch"), TINY)
    for shard in range(params["upstream_shards"]):
        assert work["assignments"](shard).equals(expected["assignments"](shard)), shard
    assert work["clusters"].equals(expected["clusters"])
    assert work["removed"] == expected["removed"] and sum(work["removed"].values()) > 100
    assert (work["edges"], work["clustered_docs"]) == (expected["edges"], expected["clustered_docs"])
    assert work["assignments"](3).is_empty()


def _step_bytes(params: dict, root: Path) -> dict[str, bytes]:
    output = root / "dedup" / "cluster" / "f" / "data" / "part-00000.parquet"
    leftover = root / "dedup" / "cluster" / "f" / "scratch" / "crashed-attempt" / "flush-000000.runs"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"what a crashed attempt left")
    result = cluster_shard({"shard": 0}, params, str(output), str(root / "rejects.parquet"))
    files = sorted((root / "dedup" / "cluster" / "f").rglob("*.parquet"))
    return {str(f.relative_to(root)): f.read_bytes() for f in files} | {"stats": result}


def test_the_step_writes_the_same_bytes_either_way(generated, tmp_path):
    memory = _step_bytes({**generated, "cluster": {"mode": "memory"}}, tmp_path / "memory")
    forced = _step_bytes({**generated, "cluster": {"mode": "partitioned", "memory_mb": 1, "partitions": 7}}, tmp_path / "forced")
    auto = _step_bytes({**generated, "cluster": {"mode": "auto", "memory_mb": 1}}, tmp_path / "auto")
    stats = memory.pop("stats")["stats"], forced.pop("stats")["stats"], auto.pop("stats")["stats"]
    assert memory == forced == auto and len(memory) == 5  # clusters table and 4 assignment files
    assert [s["cluster_path"] for s in stats] == ["memory", "partitioned", "memory"]  # 2,100 edges fit 1 MB
    assert stats[1]["cluster_partitions"] == 7
    for key in ("edges", "clusters", "clustered_docs", "cluster_sizes", "to_remove"):
        assert stats[0][key] == stats[1][key]
    for run in ("memory", "forced", "auto"):  # its own spills and a crashed attempt's: gone
        assert not (tmp_path / run / "dedup" / "cluster" / "f" / "scratch").exists()


def test_auto_partitions_follow_the_edges_and_the_bound(generated):
    assert choose_path({**generated, "cluster": {}})[0] == "memory"
    many = [generated["edges"][0]] * 3  # 4,200 edge rows: over 1 MB at 250 bytes each
    path, bound = choose_path({**generated, "edges": many, "cluster": {"memory_mb": 1}})
    assert path == "partitioned" and bound == bound_for(1, "auto", 4_200)
    for memory_mb, edges in ((1, 4_200), (64, 10**6), (2048, 10**9), (2048, 10)):
        cut = bound_for(memory_mb, "auto", edges)
        state = memory_mb * 2**20 // 2  # a partition's nodes (at most two per edge) fit half the bound, with no spare partition
        assert 2 * edges / cut.partitions * STATE_ROW_BYTES <= state
        assert cut.partitions == 1 or 2 * edges / (cut.partitions - 1) * STATE_ROW_BYTES > state
        assert (cut.chunk_rows * EDGE_ROW_BYTES, cut.wide_rows * WIDE_ROW_BYTES) <= (state // 2, state // 2)
    assert bound_for(1024, 5, 10**9).partitions == 5  # given: kept


def test_cluster_settings_are_checked_and_never_fingerprinted(planted, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="partitions"):
        DedupStage.model_validate({"stage": "dedup", "cluster": {"partitions": 0}})
    with pytest.raises(ValueError, match="memory_mb"):
        DedupStage.model_validate({"stage": "dedup", "cluster": {"memory_mb": 0}})
    with pytest.raises(ValueError, match="mode"):
        DedupStage.model_validate({"stage": "dedup", "cluster": {"mode": "disk"}})
    memory = run_dedup(planted, 2, str(tmp_path / "a"), cluster={"mode": "memory"})
    forced = run_dedup(planted, 2, str(tmp_path / "b"), cluster={"mode": "partitioned", "partitions": 7, "memory_mb": 1})
    for one, other in zip(memory["plans"], forced["plans"]):
        assert one.fingerprint == other.fingerprint  # the partitioning is an execution detail
        if one.step in ("cluster", "remove"):
            mine = sorted(Path(one.location.folder).rglob("*.parquet"))
            theirs = sorted(Path(other.location.folder).rglob("*.parquet"))
            assert [f.relative_to(one.location.folder) for f in mine] == [f.relative_to(other.location.folder) for f in theirs]
            assert [f.read_bytes() for f in mine] == [f.read_bytes() for f in theirs]  # outputs, rejects, assignments
    assert forced["cluster"][0]["stats"]["cluster_path"] == "partitioned"
    assert sum(forced["cluster"][0]["stats"]["to_remove"].values()) == 4


def test_no_candidate_pair_gives_the_same_empty_files(tmp_path):
    signatures = [_write(_signatures(0, 50, random.Random(1)), tmp_path / "sig.parquet")]
    edges = [_write(pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64}), tmp_path / "edges.parquet")]
    params = {"edges": edges, "signatures": signatures, "upstream_shards": 2}
    memory = _step_bytes({**params, "cluster": {"mode": "memory"}}, tmp_path / "memory")
    forced = _step_bytes({**params, "cluster": {"mode": "partitioned", "partitions": 3}}, tmp_path / "forced")
    assert memory.pop("stats")["stats"]["clusters"] == forced.pop("stats")["stats"]["clusters"] == 0
    assert memory == forced and len(memory) == 3


def test_the_partitioned_step_on_object_storage(seaweed, generated, tmp_path):
    """Spills written and read back in byte ranges through S3, as on a cluster of other machines."""
    root = f"s3://{seaweed.bucket}/dedup-cluster-bounded"

    def on_s3(url: str) -> str:
        previous = url.startswith(PREVIOUS)
        target = f"{root}/inputs/{Path(url.removeprefix(PREVIOUS)).name}"
        storage.write_bytes(target, Path(url.removeprefix(PREVIOUS)).read_bytes())
        return PREVIOUS + target if previous else target

    params = {**generated, "edges": [on_s3(u) for u in generated["edges"]], "signatures": [on_s3(u) for u in generated["signatures"]]}
    folder = f"{root}/dedup/cluster/f"
    forced = {**params, "cluster": {"mode": "partitioned", "memory_mb": 1, "partitions": 3}}
    result = cluster_shard({"shard": 0}, forced, f"{folder}/data/part-00000.parquet", f"{folder}/rejects/part-00000.parquet")
    expected = _step_bytes({**generated, "cluster": {"mode": "memory"}}, tmp_path / "memory")
    expected.pop("stats")
    found = {name: storage.read_bytes(f"{root}/{name}") for name in expected}
    assert found == expected and result["stats"]["cluster_path"] == "partitioned"
    fs, path = storage.filesystem(f"{folder}/scratch")
    fs.invalidate_cache()
    assert not [name for name in fs.find(path) if name.endswith(".runs")]  # (SeaweedFS keeps empty folders)
