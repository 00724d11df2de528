"""dedup's persistent index (``index:``): three snapshots deduplicated one after the other against
the index equal the reference (each deduplicated against the signatures of every document the
earlier ones released, ``previous:``-style); bridged old clusters reported, never merged; appends
atomic and idempotent; the index on S3."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from test_dedup import outputs, paragraphs, run_dedup, write_shard

from fineflow import storage
from fineflow.steps import PlanContext, Source, StageInputs, run_shard
from fineflow.tasks.dedup import append, index
from fineflow.tasks.dedup.config import DedupStage
from fineflow.tasks.dedup.plan import plan_dedup
from fineflow.tasks.dedup.report import cluster_tables, summary_fields

DAY = datetime(2024, 5, 1, tzinfo=timezone.utc)


def text(seed: int) -> str:
    return "\n\n".join(paragraphs(seed))


def near(seed: int) -> str:
    """The text of ``seed`` with three words of one paragraph changed (Jaccard about 0.95)."""
    parts = paragraphs(seed)
    words = parts[2].split()
    parts[2] = " ".join(["edited", "words", "here"] + words[3:])
    return "\n\n".join(parts)


def doc(doc_id: str, body: str, url: str | None = None, days: int = 0) -> dict:
    return {"id": doc_id, "url": url or f"https://{doc_id}.example/", "text": body, "crawl_date": DAY + timedelta(days=days)}


# three snapshots of two shards, with duplicates planted within and across them
SNAPSHOTS = [
    [
        [doc("s1-a", text(1)), doc("s1-a-near", near(1), days=1)],
        [doc("s1-c", text(2), url="https://c.example/page"), doc("s1-d", text(3))],
    ],
    [
        [doc("s2-a-copy", text(1), days=-30), doc("s2-e", text(4), days=40)],  # older than s1-a, yet removed
        [doc("s2-e-near", near(4), days=41), doc("s2-d-near", near(3), days=40), doc("s2-f", text(5), days=40)],
    ],
    [
        # s1-c's URL and s2-e's text: joins two released documents no run connected
        [doc("s3-bridge", text(4), url="https://c.example/page", days=80), doc("s3-a-near", near(1), days=80)],
        [doc("s3-g", text(6), days=80), doc("s3-g-copy", text(6), days=81), doc("s3-f-near", near(5), days=80)],
    ],
]


def plan(folder: Path, **options) -> dict:
    """The stage's plans by step, without running them."""
    upstream = StageInputs((Source("upstream", "planned", str(folder), 2),))
    context = PlanContext(root=str(folder.parent / "planned"), name="dedup", kind="dedup", inputs=upstream)
    return {p.step: p for p in plan_dedup(DedupStage.model_validate({"stage": "dedup", **options}), context)}


def write_snapshot(folder: Path, shards: list[list[dict]]) -> str:
    folder.mkdir(parents=True)
    for n, docs in enumerate(shards):
        write_shard(folder / f"part-{n:05d}.parquet", docs)
    return str(folder)


def removals(results: dict) -> dict[str, tuple[str, str]]:
    _, rejects = outputs(results)
    if rejects.is_empty():
        return {}
    return {i: (reason, kept) for i, reason, kept in zip(rejects["id"], rejects["drop_reason"], rejects["dup_cluster_id"])}


def released(results: dict) -> pl.DataFrame:
    return outputs(results)[0].drop("dup_cluster_size")


def run_snapshots(tmp_path: Path, index_url: str, **options) -> list[dict]:
    runs = []
    for n, shards in enumerate(SNAPSHOTS):
        folder = write_snapshot(tmp_path / f"snapshot-{n}", shards)
        runs.append(run_dedup(folder, len(shards), str(tmp_path / "root"), upstream_fp=f"snapshot-{n}", index=index_url, **options))
    return runs


def reference(tmp_path: Path, runs: list[dict]) -> list[dict]:
    """Each snapshot deduplicated against the signatures of every document the earlier ones released
    (``previous:``: all at once, the earlier documents fixed)."""
    found = [removals(run_dedup(str(tmp_path / "snapshot-0"), 2, str(tmp_path / "ref"), upstream_fp="snapshot-0"))]
    for n in (1, 2):
        folder = tmp_path / f"released-{n}"
        folder.mkdir()
        for m in range(n):
            write_shard(folder / f"part-{m:05d}.parquet", released(runs[m]).to_dicts())
        earlier = run_dedup(str(folder), n, str(tmp_path / "ref"), upstream_fp=f"released-{n}")
        previous = next(p for p in earlier["plans"] if p.step == "signatures").location.folder
        found.append(removals(run_dedup(str(tmp_path / f"snapshot-{n}"), 2, str(tmp_path / "ref"), upstream_fp=f"snapshot-{n}", previous=previous)))
    return found


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("index")
    runs = run_snapshots(tmp_path, str(tmp_path / "index"))
    return tmp_path, runs


def test_three_snapshots_against_the_index_equal_the_reference(three):
    tmp_path, runs = three
    found = [removals(run) for run in runs]
    assert found == reference(tmp_path, runs)
    assert found[0] == {"s1-a-near": ("near_duplicate", "s1-a")}
    assert found[1] == {
        "s2-a-copy": ("exact_duplicate", "s1-a"),  # older, yet an indexed document always wins
        "s2-d-near": ("near_duplicate", "s1-d"),
        "s2-e-near": ("near_duplicate", "s2-e"),  # a cluster of new documents only
    }
    assert found[2] == {
        "s3-bridge": ("url_duplicate", "s1-c"),  # s1-c: the earlier of the two indexed documents
        "s3-a-near": ("near_duplicate", "s1-a"),  # s1-a-near's copy: s1-a-near was removed, s1-a is released
        "s3-g-copy": ("exact_duplicate", "s3-g"),
        "s3-f-near": ("near_duplicate", "s2-f"),
    }
    # snapshot 3 read the index, not the earlier snapshots' signatures
    plans = {p.step: p for p in runs[2]["plans"]}
    assert not any(url.startswith("previous:") for url in plans["buckets"].params["signatures"])
    assert len(plans["buckets"].params["index"]["runs"]) == 2


def test_a_bridged_cluster_is_reported_not_merged(three):
    _, runs = three
    stats = runs[2]["cluster"][0]["stats"]
    assert stats["index_bridged_clusters"] == 1
    assert stats["index_bridged_examples"] == {"bridged": [{"rank": "0000", "id": "s3-bridge", "old_ids": ["s1-c", "s2-e"], "new_ids": ["s3-bridge"]}]}
    assert runs[1]["cluster"][0]["stats"]["index_bridged_clusters"] == 0
    # in the stage summary and its table, as the step totals carry them
    # Imported here: Prefect imported at collection fixes its settings before the session's Prefect
    # API is configured, and in-process flows would then start a temporary server of their own.
    from fineflow.flows.engine import _totals

    steps = {step: _totals(runs[2][step]) for step in ("remove", "cluster", "append")}
    summary = summary_fields(steps)
    assert summary["index_bridged_clusters"] == 1 and summary["index_bridged_examples"] == stats["index_bridged_examples"]
    assert summary["index_docs_appended"] == 1
    rows = {row["what"]: row["value"] for row in cluster_tables({**summary, "name": "dedup", "steps": []})[0].rows}
    assert rows["clusters joining indexed documents (reported, not merged)"] == 1
    # both stay released: the index still holds them, and each later run still finds them
    folder = runs[2]["plans"][-1].params["folder"]
    docs = pl.concat([pl.read_parquet(index.docs_file(folder, run)) for run in index.committed_runs(folder)])
    assert {"s1-c", "s2-e"} <= set(docs["id"])
    assert "s1-a-near" not in set(docs["id"]) and "s2-e-near" not in set(docs["id"])  # removed: never indexed


def test_the_index_layout_keys_and_appends(three):
    tmp_path, runs = three
    folder = runs[0]["plans"][-1].params["folder"]
    assert Path(folder).parent == tmp_path / "index"
    markers = index.committed_runs(folder)
    order = [run["plans"][0].fingerprint.value for run in runs]  # each run keyed by its signatures fingerprint
    assert sorted(markers) == sorted(order)
    assert [markers[r]["base"] for r in order] == [[], order[:1], order[:2]]
    assert [markers[r]["docs"] for r in order] == [released(run).height for run in runs] == [3, 2, 1]
    for run, marker in markers.items():
        for key, prefixes in marker["keys"].items():
            for prefix in prefixes:  # one value range per file, sorted by value
                part = pl.read_parquet(index.key_file(folder, key, prefix, run))
                assert part["value"].is_sorted() and set((part["value"] // (1 << 56)).to_list()) == {prefix}
    assert json.loads(Path(folder, "params.json").read_text())["bands"] == 14
    # other MinHash settings (or normalization): another subfolder, which holds nothing yet
    same, other = (plan(tmp_path / "snapshot-2", index=str(tmp_path / "index"), **extra) for extra in ({}, {"bands": 20}))
    assert same["append"].params["folder"] == folder and len(same["buckets"].params["index"]["runs"]) == 3
    assert other["append"].params["folder"] != folder and other["buckets"].params["index"]["runs"] == []
    assert other["append"].params["key_params"]["num_perm"] == 160
    # which passes run changes no key: the same subfolder
    assert plan(tmp_path / "snapshot-2", index=str(tmp_path / "index"), url=False)["append"].params["folder"] == folder


def test_a_rerun_appends_nothing_and_plans_as_before(three):
    tmp_path, runs = three
    folder = runs[0]["plans"][-1].params["folder"]
    before = {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}
    again = run_dedup(str(tmp_path / "snapshot-1"), 2, str(tmp_path / "root"), upstream_fp="snapshot-1", index=str(tmp_path / "index"))
    # the same index runs read as the first time (not snapshot 3's): the same plan, the same removals
    assert [p.fingerprint.value for p in again["plans"]] == [p.fingerprint.value for p in runs[1]["plans"]]
    assert removals(again) == removals(runs[1])
    assert again["append"][0]["stats"]["index_already"] is True
    assert {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()} == before


def test_a_crashed_append_leaves_no_run_visible(tmp_path, monkeypatch):
    folder = write_snapshot(tmp_path / "snapshot-0", SNAPSHOTS[0])
    real = storage.write_bytes

    def crash_on_docs(url, data):
        if "/docs/" in url:
            raise OSError("worker lost while appending")
        real(url, data)

    monkeypatch.setattr(append.storage, "write_bytes", crash_on_docs)
    with pytest.raises(OSError):
        run_dedup(folder, 2, str(tmp_path / "root"), index=str(tmp_path / "index"))
    monkeypatch.setattr(append.storage, "write_bytes", real)
    digest_folder = next((tmp_path / "index").iterdir())
    assert list((digest_folder / "keys").rglob("*.parquet"))  # key files were written ...
    assert index.committed_runs(str(digest_folder)) == {}  # ... but no run is visible
    assert index.runs_to_read(str(digest_folder), "another-run") == []  # a later run reads nothing of it
    retried = run_dedup(folder, 2, str(tmp_path / "root"), index=str(tmp_path / "index"))
    assert retried["append"][0]["stats"]["index_docs_appended"] == 3


def test_the_partitioned_cluster_path_reads_the_index_the_same(three, tmp_path):
    source, runs = three
    index_url = str(source / "index")
    bounded = run_dedup(
        str(source / "snapshot-2"), 2, str(tmp_path / "root"), upstream_fp="snapshot-2", index=index_url,
        cluster={"mode": "partitioned", "memory_mb": 1, "partitions": 3},
    )
    assert removals(bounded) == removals(runs[2])
    for key in ("index_bridged_clusters", "index_bridged_examples", "clusters", "to_remove"):
        assert bounded["cluster"][0]["stats"][key] == runs[2]["cluster"][0]["stats"][key]


def test_index_and_previous_are_exclusive():
    with pytest.raises(ValueError, match="either index or previous"):
        DedupStage.model_validate({"stage": "dedup", "index": "/tmp/i", "previous": "/tmp/p"})


def test_the_index_on_object_storage(seaweed, three, tmp_path):
    source, runs = three
    index_url = f"s3://{seaweed.bucket}/dedup-index-{uuid.uuid4().hex[:8]}"
    on_s3 = []
    for n in (0, 1):
        on_s3.append(run_dedup(str(source / f"snapshot-{n}"), 2, str(tmp_path / "root"), upstream_fp=f"snapshot-{n}", index=index_url))
    assert [removals(r) for r in on_s3] == [removals(r) for r in runs[:2]]
    folder = on_s3[1]["plans"][-1].params["folder"]
    assert len(index.committed_runs(folder)) == 2 and folder.startswith("s3://")


def test_the_cluster_step_reads_only_the_indexed_documents_it_clusters(tmp_path):
    docs = pl.DataFrame(
        {"node": list(range(100)), "id": [f"d{n}" for n in range(100)], "crawl_date": [DAY] * 100, "text_chars": [1] * 100,
         "exact_key": pl.Series(range(100), dtype=pl.UInt64), "url_key": pl.Series(range(100), dtype=pl.UInt64)},
    ).with_columns(pl.col("crawl_date").dt.cast_time_unit("us"))
    url = str(tmp_path / "docs.parquet")
    docs.write_parquet(url, row_group_size=10)
    clustered = pl.select(pl.concat_list([index.old_node(o, pl.lit(n, pl.Int64)) for o, n in ((1, 3), (1, 57), (0, 5))]).explode())["node"]
    clustered = pl.concat([clustered, pl.Series("node", [7, 12])])  # this run's own documents
    found = index.read_docs(url, 1, clustered)
    assert found["id"].to_list() == ["d3", "d57"]  # run 1's, not run 0's node 5 nor this run's 7 and 12
    assert found["node"].to_list() == [-1 - ((1 << 48) | 3), -1 - ((1 << 48) | 57)]
    assert index.read_docs(url, 2, clustered) is None  # run 2: nothing clustered, nothing read


def test_a_run_planned_before_another_appended_says_so(tmp_path):
    first, second = (write_snapshot(tmp_path / f"snapshot-{n}", SNAPSHOTS[n]) for n in (0, 1))
    late = plan(Path(second), index=str(tmp_path / "index"))  # planned against the empty index
    run_dedup(first, 2, str(tmp_path / "root"), index=str(tmp_path / "index"))
    results = {step: [run_shard(p.function, s, p.params, p.location) for s in p.shards] for step, p in late.items()}
    assert results["append"][0]["stats"]["index_runs_not_deduplicated_against"] == 1
    assert "s2-a-copy" not in removals({**results, "plans": list(late.values())})  # s1-a's copy: not seen
    marker = index.committed_runs(late["append"].params["folder"])[late["append"].params["run"]]
    assert marker["base"] == [] and len(marker["unseen"]) == 1
