"""How a step's shards become Prefect tasks and Dask futures (flows/engine.py), on a real Prefect
API and Dask cluster: batches bound the task count, receipts let an interrupted step resume."""

from __future__ import annotations

import json
from pathlib import Path

from test_pipeline_integration import crawl_only, run_pipeline, task_runs, task_states

from fineflow.manifest import step_folder_of

# (fineflow.flows, which imports Prefect, is imported inside the tests: Prefect reads its settings
# when first imported, and the session's Prefect server sets them in a fixture)


def test_batches_are_contiguous_near_equal_and_at_most_the_bound(prefect_api):  # (its settings before the import)
    from fineflow.flows.engine import batches

    assert batches(list(range(10)), 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert batches([4, 9], 256) == [[4], [9]]
    assert batches([], 5) == []
    sizes = [len(b) for b in batches(list(range(90_000)), 256)]
    assert len(sizes) == 256 and max(sizes) - min(sizes) <= 1 and sum(sizes) == 90_000
    # at least this many shards a batch: fewer Prefect tasks for small steps
    assert batches(list(range(8)), 256, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert batches(list(range(7)), 256, 4) == [list(range(7))]
    assert batches([3], 256, 4) == [[3]]
    assert [len(b) for b in batches(list(range(90_000)), 256, 4)] == sizes


def test_shards_run_in_batches_and_an_interrupted_step_resumes_from_its_receipts(workdir, tmp_path, dask_address):
    from fineflow.flows.engine import batches

    crawl_only(workdir)
    pipeline = workdir / "demo.yaml"
    pipeline.write_text(pipeline.read_text().replace("dask:\n", "dask:\n  tasks_per_step: 2\n"))
    root = tmp_path / "store"
    first = run_pipeline(pipeline, str(root), dask_address, tmp_path)
    crawl = first["stages"][0]
    shards = crawl["shards"]
    assert shards >= 3
    # two Prefect tasks for the step, each a contiguous range of shards
    groups = batches(list(range(shards)), 2)
    expected = sorted(f"crawl-extract-{g[0]:05d}" + (f"-{g[-1]:05d}" if len(g) > 1 else "") for g in groups)
    assert any("-" in name.removeprefix("crawl-extract-") for name in expected)  # one batch holds several shards
    assert task_states(first["run_id"]) == ["Completed", "Completed"]
    assert _task_names(first["run_id"]) == expected

    folder = Path(step_folder_of(crawl["output"]))
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert sorted(p.name for p in (folder / "_receipts").iterdir()) == [f"part-{n:05d}.json" for n in range(shards)]
    # A step interrupted before its manifest, one shard between its files and its receipt:
    (folder / "_manifest.json").unlink()
    (folder / "_receipts" / "part-00001.json").unlink()
    again = run_pipeline(pipeline, str(root), dask_address, tmp_path)
    assert again["stages"][0]["cached_shards"] == shards - 1
    assert _task_names(again["run_id"]) == ["crawl-extract-00001"]
    rebuilt = json.loads((folder / "_manifest.json").read_text())
    assert [(s["file"], s["rows"], s["sha256"], s["stats"]["docs_in"]) for s in rebuilt["shards"]] == [
        (s["file"], s["rows"], s["sha256"], s["stats"]["docs_in"]) for s in manifest["shards"]
    ]


def _task_names(run_id: str) -> list[str]:
    return sorted(t.name for t in task_runs(run_id))


def test_a_damaged_receipt_makes_its_shard_uncommitted(tmp_path):
    """A receipt that is not JSON, or that names another size, never stands for a committed shard."""
    from fineflow.manifest import StepLocation

    location = StepLocation(str(tmp_path), "crawl", "extract", "f" * 20)
    for shard in (0, 1, 2):
        data = f"shard {shard}".encode()
        path = tmp_path / "crawl" / "extract" / ("f" * 20) / "data" / f"part-{shard:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        location.write_receipt({"shard": shard, "output": {"file": path.name, "rows": 1, "bytes": len(data), "sha256": None}})
    (tmp_path / "crawl" / "extract" / ("f" * 20) / "_receipts" / "part-00001.json").write_text("{not json")
    location.write_receipt({"shard": 2, "output": {"file": "part-00002.parquet", "rows": 1, "bytes": 999, "sha256": None}})
    assert sorted(location.committed_results()) == [0]


WARM_PROBE = """
import json, sys
from fineflow.config import DaskConfig
from fineflow.flows.cluster import Cluster

def loaded():
    from fineflow.tasks.text import langid, words
    return words.load_splitter.cache_info().currsize, "lid.176" in langid._models

if __name__ == "__main__":  # (the forkserver imports this file as the main module)
    calls = (("fineflow.tasks.text.words:load_splitter", "spacy:fr"), ("fineflow.tasks.text.langid:load_model", "lid.176"),
             ("fineflow.tasks.text.words:load_splitter", "no-such-splitter"))
    cluster = Cluster(DaskConfig(n_workers=2), warm=calls)
    try:
        print(json.dumps(sorted(cluster.client().run(loaded).values())))
    finally:
        cluster.close()
"""


def test_a_local_clusters_workers_start_with_what_the_steps_warm(tmp_path):
    """Declared splitters and models are built once, before the workers fork: both start with them;
    one that cannot be built is reported and left to the worker (the cluster still starts)."""
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(WARM_PROBE)  # a fresh process: a process's forkserver starts once
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[1, True], [1, True]]
    assert "warm-up skipped fineflow.tasks.text.words:load_splitter('no-such-splitter')" in done.stderr
