"""`fineflow gc` on real runs (Prefect API, Dask LocalCluster, local storage): what kept runs use
stays and still comes back Cached; the rest goes with its shard receipts; a kept failed run can
still be retried and resume."""

from __future__ import annotations

import json

import pytest
from test_pipeline_integration import crawl_only, run_pipeline
from typer.testing import CliRunner

from fineflow.manifest import step_folder_of

pytestmark = pytest.mark.integration


def gc(root: str, *args: str) -> str:
    from fineflow.cli import app

    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["gc", "--storage", root, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def shard_hashes(output: str) -> list[str]:
    from fineflow.manifest import read_manifest

    return [shard["sha256"] for shard in read_manifest(output)["shards"]]


def test_gc_keeps_what_kept_runs_use_and_removes_the_rest_with_its_receipts(workdir, tmp_path, dask_address, faults):
    from fineflow import storage
    from fineflow.cli import app
    from fineflow.faults import arm
    from fineflow.gc import list_runs

    crawl_only(workdir)
    demo = (workdir / "demo.yaml").read_text()
    resiliparse = workdir / "resiliparse.yaml"
    resiliparse.write_text(demo.replace("extractor: trafilatura", "extractor: resiliparse"))
    failing = workdir / "failing.yaml"
    failing.write_text(demo.replace("shard_bytes: 1000000", "shard_bytes: 900000"))
    root = str(tmp_path / "store")

    first = run_pipeline(workdir / "demo.yaml", root, dask_address, tmp_path)
    second = run_pipeline(resiliparse, root, dask_address, tmp_path)
    arm(faults, "crawl-extract-00002", "error")
    failed = CliRunner().invoke(app, ["run", str(failing), "--storage", root, "--dask-address", dask_address])
    assert failed.exit_code == 1
    runs = list_runs(root)
    assert [r.finished for r in runs] == [False, True, True] and runs[2].run_id == first["run_id"]
    first_out, second_out = (step_folder_of(run["stages"][0]["output"]) for run in (first, second))
    second_records = f"{second_out}/_receipts"
    partial = {p for p in (tmp_path / "store" / "crawl" / "extract").iterdir() if p.is_dir() and str(p) not in (first_out, second_out)}
    assert len(partial) == 1 and storage.exists(second_records)
    before = shard_hashes(second_out)

    # dry run: says what would go (the first two runs' outputs), removes nothing
    shown = gc(root, "--keep-last", "1", "--dry-run")
    assert f"would remove {first_out}" in shown and f"would remove {second_out}" in shown
    assert str(next(iter(partial))) not in shown  # the kept failed run's partial work stays
    assert storage.exists(first_out + "/_manifest.json") and storage.exists(second_out + "/_manifest.json")

    # the same store reached by another path (a mount, a symlink): the same decisions
    from fineflow.gc import plan_gc

    elsewhere = tmp_path / "mounted-elsewhere"
    elsewhere.symlink_to(tmp_path / "store")
    here, there = plan_gc(root, keep_last=1), plan_gc(str(elsewhere), keep_last=1)
    assert [s.key for s in there.removed_steps] == [s.key for s in here.removed_steps] and len(here.kept_steps) == 1

    # keep the last run (the failed one) and the first by name: the second run goes
    gc(root, "--keep-last", "1", "--keep-run", first["run_id"])
    assert not storage.exists(second_out) and not storage.exists(second_records)
    assert storage.exists(first_out + "/_manifest.json") and all(p.exists() for p in partial)
    assert second["run_id"] not in {r.run_id for r in list_runs(root)}

    again = run_pipeline(workdir / "demo.yaml", root, dask_address, tmp_path)
    assert again["stages"][0]["cached_shards"] == again["stages"][0]["shards"]  # kept: still Cached
    rebuilt = run_pipeline(resiliparse, root, dask_address, tmp_path)
    assert rebuilt["stages"][0]["cached_shards"] == 0 and shard_hashes(step_folder_of(rebuilt["stages"][0]["output"])) == before
    resumed = run_pipeline(failing, root, dask_address, tmp_path)  # the fault fired once: this retry resumes
    crawl = resumed["stages"][0]
    assert 0 < crawl["cached_shards"] < crawl["shards"]
    assert json.loads(storage.read_bytes(f"{root}/_runs/{resumed['run_id']}/summary.json"))["stages"][0]["docs_out"] > 0


def test_gc_refuses_a_store_without_run_records(tmp_path):
    from fineflow.gc import plan_gc

    folder = tmp_path / "crawl" / "extract" / "0123456789abcdef0123"
    folder.mkdir(parents=True)
    (folder / "_manifest.json").write_text("{}")
    (tmp_path / "notes" / "crawl").mkdir(parents=True)  # not a step folder: never listed
    with pytest.raises(ValueError, match="no run records"):
        plan_gc(str(tmp_path))
