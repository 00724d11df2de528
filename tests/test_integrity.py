"""Nothing silent, nothing trusted blindly, through real runs (Prefect API, Dask, the CLI):
input shapes and their warnings, verified caches, full disks, runs whose process died."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import polars as pl
import pytest
from test_operations import call, tree_task_runs
from test_pipeline_integration import crawl_only, read_output, task_states
from typer.testing import CliRunner

from fineflow.manifest import step_folder_of

pytestmark = pytest.mark.integration


def _cli(*args: str):
    from fineflow.cli import app

    return CliRunner(env={"COLUMNS": "300"}).invoke(app, list(args), catch_exceptions=False)


def _run(pipeline: Path, storage: str, dask_address: str, tmp_path: Path, *extra: str):
    summary = tmp_path / f"summary-{uuid.uuid4().hex}.json"
    result = _cli("run", str(pipeline), "--storage", storage, "--dask-address", dask_address, "--summary-json", str(summary), *extra)
    return result, (json.loads(summary.read_text()) if summary.exists() else None)


def _only_non_documents(sample: Path) -> bytes:
    """The sample's warcinfo and request records: a real file without a single document."""
    from fineflow.tasks.crawl.warc import iter_gzip_records

    records = [m.data for m in iter_gzip_records(str(sample), 0, sample.stat().st_size, 1 << 30)]
    return b"".join(r for r in records if b"WARC-Type: warcinfo" in r[:200] or b"WARC-Type: request" in r[:200])


def test_input_shapes_and_warnings_through_a_run(workdir, tmp_path, dask_address, prefect_api):
    crawl_only(workdir)
    data = workdir / "data"
    sample = data / "CC-MAIN-SAMPLE-00000.warc.gz"
    raw = gzip.decompress(sample.read_bytes())
    (data / "whole-file.warc.gz").write_bytes(gzip.compress(raw))  # `gzip file.warc`: one stream
    (data / "empty.warc.gz").write_bytes(b"")
    (data / "requests-only.warc").write_bytes(_only_non_documents(sample))
    pipeline = workdir / "demo.yaml"
    # resiliparse: trafilatura's `deduplicate` (FineWeb's setting) makes a text depend on the
    # pages extracted before it in the same shard, and the stream is one shard, the original three.
    pipeline.write_text(
        pipeline.read_text()
        .replace("inputs: [data/*.warc.gz]", "inputs: [data/*.warc.gz, data/*.warc, data/*.wet.gz]")
        .replace("extractor: trafilatura", "extractor: resiliparse")
    )

    result, summary = _run(pipeline, str(tmp_path / "store"), dask_address, tmp_path)
    assert result.exit_code == 0, result.output
    crawl = summary["stages"][0]
    assert crawl["inputs"]["formats"] == {"empty": 1, "gzip": 1, "gzip-stream": 1, "warc": 1}
    assert crawl["inputs"]["one_shard_per_file"]["first"] == [str(data / "whole-file.warc.gz")]  # > shard_bytes, unsplit
    warnings = summary["warnings"]
    assert any("data/*.wet.gz matches no file" in w for w in warnings)
    assert any("empty.warc.gz is empty" in w for w in warnings)
    assert any("requests-only.warc holds no document record" in w for w in warnings)
    for fragment in ("wet.gz matches no file", "empty.warc.gz is empty", "requests-only.warc holds no document"):
        assert fragment in result.output  # the CLI says it too
    assert crawl["warnings"] == [w.removeprefix("crawl: ") for w in warnings]

    # The whole-file stream gives exactly the original's documents: same ids, same texts.
    docs = read_output(crawl["output"])
    original = docs.filter(pl.col("source").str.starts_with(str(sample))).sort("id")
    stream = docs.filter(pl.col("source").str.contains("whole-file.warc.gz")).sort("id")
    assert original.height > 100 and stream["id"].to_list() == original["id"].to_list()
    assert stream["text"].to_list() == original["text"].to_list()

    # ... and the run's summary artifact in Prefect lists the warnings.
    artifacts = call("POST", f"{prefect_api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["pipeline-summary"]}}}).json()
    mine = [a for a in artifacts if a["flow_run_id"] == summary["run_id"]]
    assert mine and "### Warnings" in mine[0]["data"] and "requests-only.warc holds no document record" in mine[0]["data"]

    # --strict: the planning warnings stop the run before it starts ...
    strict, _ = _run(pipeline, str(tmp_path / "store"), dask_address, tmp_path, "--strict")
    assert strict.exit_code == 2 and "strict: 2 warning(s)" in strict.output and "Prefect API" not in strict.output
    # ... and a warning found while reading fails the run once its outputs are committed.
    (data / "empty.warc.gz").unlink()
    pipeline.write_text(pipeline.read_text().replace(", data/*.wet.gz]", "]"))
    strict, _ = _run(pipeline, str(tmp_path / "store"), dask_address, tmp_path, "--strict")
    assert strict.exit_code == 1 and "strict: 1 warning(s)" in strict.output and "requests-only.warc" in strict.output


def _damage(path: str, truncate: bool) -> None:
    data = bytearray(Path(path).read_bytes())
    if truncate:
        del data[len(data) // 2 :]
    else:
        data[len(data) // 2] ^= 0xFF  # one bit pattern flipped, same size
    Path(path).write_bytes(bytes(data))


def test_a_damaged_cache_is_recomputed_never_reported_cached(workdir, tmp_path, dask_address):
    crawl_only(workdir)
    demo = workdir / "demo.yaml"
    demo.write_text(demo.read_text().replace("extractor: trafilatura", "extractor: resiliparse"))  # faster, same point
    store = str(tmp_path / "store")
    result, first = _run(workdir / "demo.yaml", store, dask_address, tmp_path)
    assert result.exit_code == 0, result.output
    output = first["stages"][0]["output"]
    manifest = json.loads(Path(step_folder_of(output), "_manifest.json").read_bytes())
    assert len(manifest["shards"]) == 3
    _damage(f"{output}/part-00001.parquet", truncate=False)
    _damage(f"{output}/part-00002.parquet", truncate=True)

    verify = _cli("verify", "--storage", store)
    assert verify.exit_code == 1 and "part-00001.parquet is damaged" in verify.output and "part-00002.parquet is damaged" in verify.output
    report = _cli("inspect", output)
    assert report.exit_code == 1 and "is damaged" in report.output and "Traceback" not in report.output

    result, second = _run(workdir / "demo.yaml", store, dask_address, tmp_path)
    assert result.exit_code == 0, result.output
    assert task_states(second["run_id"]) == ["Completed", "Completed"]  # the damaged two; the intact one is not run
    def committed(shards: list[dict]) -> list[tuple]:
        return [(s["file"], s["rows"], s["bytes"], s["sha256"]) for s in shards]

    assert committed(json.loads(Path(step_folder_of(output), "_manifest.json").read_bytes())["shards"]) == committed(manifest["shards"])
    assert _cli("verify", "--storage", store).exit_code == 0


@pytest.fixture
def full_disk(tmp_path):
    """A real 400 KiB filesystem (tmpfs), for a storage root that fills up mid-run."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_task_at_once_and_names_the_storage(workdir, tmp_path, dask_address, prefect_api, full_disk):
    crawl_only(workdir)
    result, _ = _run(workdir / "demo.yaml", str(full_disk / "store"), dask_address, tmp_path)
    assert result.exit_code == 1
    assert "No space left on device" in result.output and f"{full_disk}/store" in result.output and "is full" in result.output
    (pipeline_run,) = call(
        "POST", f"{prefect_api}/flow_runs/filter",
        json={"flows": {"name": {"any_": ["fineflow-pipeline"]}}, "sort": "START_TIME_DESC", "limit": 1},
    ).json()
    failed = [t for t in tree_task_runs(prefect_api, pipeline_run["id"]) if t["state"]["type"] == "FAILED"]
    assert failed and all(t["run_count"] == 1 for t in failed)  # not retried: a full disk stays full


def test_a_killed_run_is_marked_crashed_by_the_next_command(workdir, tmp_path, prefect_api, faults):
    from fineflow.faults import arm
    from fineflow.flows.liveness import registry

    crawl_only(workdir)
    arm(faults, "crawl-extract-00000", "hang", "300")
    before = set(registry().glob("*.json"))
    process = subprocess.Popen(
        [sys.executable, "-m", "fineflow.cli", "run", str(workdir / "demo.yaml"), "--storage", str(tmp_path / "store")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 240
        while not (faults / "crawl-extract-00000.hang.fired").exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run never reached its hanging task"
            time.sleep(0.5)
        (entry,) = set(registry().glob("*.json")) - before
        run_id = json.loads(entry.read_text())["flow_run_id"]
        time.sleep(2)  # let the task's Running state reach the API
        assert any(t["state"]["type"] == "RUNNING" for t in tree_task_runs(prefect_api, run_id))
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and its Dask workers, as a lost machine
        process.wait()

    status = _cli("server", "status")
    assert status.exit_code == 0 and f"flow run {run_id}" in status.output and "marked Crashed" in status.output
    assert call("GET", f"{prefect_api}/flow_runs/{run_id}").json()["state"]["type"] == "CRASHED"
    children = call("POST", f"{prefect_api}/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}).json()
    assert children and all(child["state"]["type"] == "CRASHED" for child in children)
    states = {t["state"]["type"] for t in tree_task_runs(prefect_api, run_id)}
    assert not states & {"RUNNING", "PENDING", "SCHEDULED"}
    assert not entry.exists()
    assert "marked Crashed" not in _cli("server", "status").output  # once only
