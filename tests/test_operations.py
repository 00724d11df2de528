"""Operations on real components: the local stack (`fineflow stack up`), deployments from
prefect.yaml, runs started, retried and cancelled through the Prefect API exactly as the UI's
buttons do, and faults injected at chosen moments (fineflow.faults): a transient shard error, a
failing stage, a Dask worker killed mid-stage, a cancelled run. Assertions are on outputs
(document ids and the bytes of every committed shard), not on exact state sequences.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from browser import drawn_charts, rendered_dom
from test_pipeline_integration import run_pipeline, task_states
from typer.testing import CliRunner

from conftest import REPO
from fineflow.manifest import step_folder_of

pytestmark = pytest.mark.integration

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# -- the stack and the deployments --------------------------------------------------------


@pytest.fixture(scope="module")
def stack(prefect_api):
    from fineflow.stack import Stack

    # the session's Prefect server is the stack's (same FINEFLOW_HOME): `up` finds it running
    stack = Stack(Path(os.environ["FINEFLOW_HOME"]) / "stack")
    report = stack.up(dask_workers=2)
    assert all(component["running"] for component in report.values()), report
    yield stack
    stack.down(prefect=False)


@pytest.fixture(scope="module")
def api(stack) -> str:
    return stack.environment()["PREFECT_API_URL"]


@pytest.fixture(scope="module")
def deployments(stack, api) -> dict[str, str]:
    """`prefect --no-prompt deploy --all` from the repository, as a user runs it."""
    environment = {**os.environ, **stack.environment()}
    setup = subprocess.run(
        [sys.executable, "deployments/setup.py"], cwd=REPO, env=environment, capture_output=True, text=True, timeout=300
    )
    assert setup.returncode == 0, setup.stderr
    deploy = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    found = call("POST", f"{api}/deployments/filter", json={}).json()
    return {f"{d['name']}": d["id"] for d in found}


def stack_fs(stack):
    import s3fs

    env = stack.environment()
    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}, skip_instance_cache=True, use_listings_cache=False,
    )


# -- what the UI's buttons send -------------------------------------------------------------


def call(method: str, url: str, **kwargs) -> httpx.Response:
    """One API request, retried while the server answers 503 (SQLite busy under load), as the UI would."""
    for attempt in range(6):
        response = httpx.request(method, url, timeout=60, **kwargs)
        if response.status_code != 503:
            return response
        time.sleep(1 + attempt)
    return response


def ui_custom_run(api: str, deployment_id: str, parameters: dict) -> str:
    response = call("POST",
        f"{api}/deployments/{deployment_id}/create_flow_run",
        json={"parameters": parameters, "state": {"type": "SCHEDULED", "message": "Run from the Prefect UI"}},
    )
    response.raise_for_status()
    return response.json()["id"]


def ui_retry(api: str, run_id: str) -> None:
    response = call("POST",
        f"{api}/flow_runs/{run_id}/set_state",
        json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": False},
    )
    response.raise_for_status()
    assert response.json()["status"] == "ACCEPT", response.json()


def ui_cancel(api: str, run_id: str) -> None:
    response = call("POST", f"{api}/flow_runs/{run_id}/set_state", json={"state": {"type": "CANCELLING", "name": "Cancelling"}})
    response.raise_for_status()
    assert response.json()["status"] == "ACCEPT", response.json()


def flow_run(api: str, run_id: str) -> dict:
    return call("GET", f"{api}/flow_runs/{run_id}").json()


def wait_for(api: str, run_id: str, states=FINAL, timeout_s: float = 480) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = flow_run(api, run_id)
        if run["state"]["type"] in states:
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} still {run['state']['type']} after {timeout_s:.0f}s")


def run_logs(api: str, run_id: str) -> str:
    logs = call("POST", f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}).json()
    return "\n".join(entry["message"] for entry in logs)


def tree_task_runs(api: str, run_id: str) -> list[dict]:
    """Every task run of a flow run and of its stage subflows (all attempts)."""
    children = call("POST", f"{api}/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}).json()
    ids = [run_id] + [child["id"] for child in children]
    return call("POST", f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": ids}}, "limit": 200}).json()


def outputs_of(fs, summary: dict) -> dict[str, list]:
    """Each step's committed shards: (file, rows, sha256), for byte-identity across runs."""
    found = {}
    for stage in summary["stages"]:
        for step in stage["steps"]:
            manifest = json.loads(fs.cat(step_folder_of(step["output"]).removeprefix("s3://") + "/_manifest.json"))
            found[f"{stage['name']}/{step['step']}"] = [(s["file"], s["rows"], s["sha256"]) for s in manifest["shards"]]
    return found


def run_summary(fs, storage_root: str, run_id: str) -> dict:
    return json.loads(fs.cat(f"{storage_root.removeprefix('s3://')}/_runs/{run_id}/summary.json"))


# -- tests --------------------------------------------------------------------------------


def test_stack_up_is_idempotent_and_prints_its_environment(stack):
    from fineflow.cli import app

    before = stack.state()
    again = stack.up(dask_workers=2)
    assert all(component["running"] for component in again.values())
    assert stack.state() == before  # nothing restarted: same pids and ports

    env_lines = CliRunner().invoke(app, ["stack", "env"]).output.splitlines()
    exported = dict(line.removeprefix("export ").split("=", 1) for line in env_lines)
    assert {"PREFECT_API_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FINEFLOW_DASK_ADDRESS"} <= set(exported)
    assert exported["FINEFLOW_DASK_ADDRESS"] == before["dask"]["scheduler"]
    status = CliRunner().invoke(app, ["stack", "status"])
    assert status.exit_code == 0 and before["s3"]["endpoint"] in status.output

    secret = stack.environment()["AWS_SECRET_ACCESS_KEY"]
    keys_file = stack.folder / "s3-credentials.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    # no state file or log of any component holds the secret (S3 data files included)
    server_folder = Path(os.environ["FINEFLOW_HOME"]) / "prefect"
    for path in [*stack.folder.rglob("*"), *server_folder.glob("*.log")]:
        if path != keys_file and path.is_file() and path.stat().st_size < 50_000_000:
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in status.output


@pytest.fixture(scope="module")
def reference(stack, api, deployments) -> dict:
    """An uninterrupted demo run, started as the UI's "Custom run" does, on the stack."""
    root = f"s3://fineflow/ui-{uuid.uuid4().hex[:8]}"
    run_id = ui_custom_run(api, deployments["demo"], {"run": {"pipeline": "examples/demo.yaml", "storage": root}})
    run = wait_for(api, run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    fs = stack_fs(stack)
    summary = run_summary(fs, root, run_id)
    # each step's committed shards: (file, rows, sha256), to compare runs byte for byte
    return {"run_id": run_id, "summary": summary, "outputs": outputs_of(fs, summary)}


def test_a_run_started_like_the_ui_runs_on_the_stack(stack, api, deployments, reference, tmp_path):
    assert {"demo", "weekly", "crawl", "dedup", "filter"} <= set(deployments)
    weekly = call("GET", f"{api}/deployments/{deployments['weekly']}").json()
    assert [s["schedule"]["cron"] for s in weekly["schedules"]] == ["0 3 * * 1"]
    crawl_form = call("GET", f"{api}/deployments/{deployments['crawl']}").json()["parameter_openapi_schema"]
    assert crawl_form["definitions"]["CrawlStage"]["properties"]["extractor"]["enum"] == ["trafilatura", "resiliparse", "justext"]

    run_id = reference["run_id"]
    assert stack.environment()["FINEFLOW_DASK_ADDRESS"] in run_logs(api, run_id)  # the stack's cluster, not a new one
    summary = reference["summary"]
    assert summary["storage"].startswith("s3://fineflow/")
    assert [s["name"] for s in summary["stages"]] == ["crawl", "dedup", "filter", "quality", "tokenize"]
    assert all(s["docs_out"] > 0 for s in summary["stages"])
    artifacts = call("POST", f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    markdown = next(a["data"] for a in artifacts if a["key"] == "pipeline-summary")
    report_url = f"{summary['storage']}/_runs/{run_id}/report.html"
    assert report_url in markdown  # the run's artifact links its HTML report

    # the report, as written to S3 by the run, draws every chart in a real browser
    page = tmp_path / "report.html"
    page.write_bytes(stack_fs(stack).cat(report_url.removeprefix("s3://")))
    charts = drawn_charts(rendered_dom(page))
    expected = {"funnel", "characters", "tokens", "languages", "drops", "clusters", "tokens-by-language", "bytes-per-token",
                "quality-classifiers", "quality-scores-reference",  # each scorer's distribution with its cut line
                "drops-by-language-dedup", "drops-by-language-filter", "drops-by-language-quality"}  # why, per language
    assert set(charts) == expected and all(charts.values()), charts
    assert charts["funnel"] == 6  # records read, then after crawl, dedup, filter, quality and tokenize


def test_stage_deployments_chain_into_the_same_output_as_the_pipeline(stack, api, deployments, reference):
    """crawl, then dedup, filter, quality and tokenize on the committed folder before each, each a UI run
    of its stage deployment; partitioned by the scheduled date; byte for byte the pipeline's output."""
    import yaml

    crawl, dedup, filter_, quality, tokenize = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())["stages"]
    crawl["inputs"] = ["examples/data/*.warc.gz"]  # stage deployments resolve paths from their working directory
    root = f"s3://fineflow/stages-{uuid.uuid4().hex[:8]}"
    fs = stack_fs(stack)

    run_ids = []

    def run_stage(name: str, run: dict) -> str:
        run_id = ui_custom_run(api, deployments[name], {"run": run})
        finished = wait_for(api, run_id)
        assert finished["state"]["type"] == "COMPLETED", finished["state"]
        run_ids.append(run_id)
        return finished["expected_start_time"][:10]

    day = run_stage("crawl", {"storage": root, "partition": "scheduled-date", "stage": crawl})
    partition = f"{root}/{day}"  # the run's scheduled date
    (crawl_out,) = [p.rsplit("/", 1)[0] for p in fs.glob(f"{partition.removeprefix('s3://')}/crawl/extract/*/_manifest.json")]
    run_stage("dedup", {"storage": partition, "input": f"s3://{crawl_out}", "stage": dedup})
    (dedup_out,) = [p.rsplit("/", 1)[0] for p in fs.glob(f"{partition.removeprefix('s3://')}/dedup/remove/*/_manifest.json")]
    run_stage("filter", {"storage": partition, "input": f"s3://{dedup_out}", "stage": filter_})
    (filter_out,) = [p.rsplit("/", 1)[0] for p in fs.glob(f"{partition.removeprefix('s3://')}/filter/decide/*/_manifest.json")]
    run_stage("quality", {"storage": partition, "input": f"s3://{filter_out}", "stage": quality})
    (quality_out,) = [p.rsplit("/", 1)[0] for p in fs.glob(f"{partition.removeprefix('s3://')}/quality/decide/*/_manifest.json")]
    run_stage("tokenize", {"storage": partition, "input": f"s3://{quality_out}", "stage": tokenize})
    (count_out,) = [p.rsplit("/", 1)[0] for p in fs.glob(f"{partition.removeprefix('s3://')}/tokenize/count/*/_manifest.json")]
    (merge_out,) = [p.rsplit("/", 1)[0] for p in fs.glob(f"{partition.removeprefix('s3://')}/tokenize/merge/*/_manifest.json")]
    steps = (("crawl/extract", crawl_out), ("dedup/remove", dedup_out), ("filter/decide", filter_out),
             ("quality/decide", quality_out), ("tokenize/count", count_out), ("tokenize/merge", merge_out))
    for step, folder in steps:
        shards = json.loads(fs.cat(f"{folder}/_manifest.json"))["shards"]
        assert [(s["file"], s["rows"], s["sha256"]) for s in shards] == reference["outputs"][step], step
    for run_id in run_ids:  # each stage run keeps a run record (what gc reads) and its report
        record = f"{partition.removeprefix('s3://')}/_runs/{run_id}"
        assert fs.exists(f"{record}/report.html") and yaml.safe_load(fs.cat(f"{record}/config.yaml"))["kind"] == "stage"


def test_a_failed_stage_retried_like_the_ui_resumes_from_that_stage(stack, api, deployments, reference, faults):
    from fineflow.faults import arm

    arm(faults, "dedup-cluster-00000", "error")
    root = f"s3://fineflow/retry-{uuid.uuid4().hex[:8]}"
    run_id = ui_custom_run(api, deployments["demo"], {"run": {"pipeline": "examples/demo.yaml", "storage": root}})
    run = wait_for(api, run_id)
    assert run["state"]["type"] == "FAILED" and "dedup/cluster" in run["state"]["message"], run["state"]

    fs = stack_fs(stack)
    committed = {path: fs.info(path)["LastModified"] for path in fs.find(f"{root.removeprefix('s3://')}/crawl")}
    committed |= {path: fs.info(path)["LastModified"] for path in fs.find(f"{root.removeprefix('s3://')}/dedup/signatures")}
    assert committed
    retried_at = datetime.now(timezone.utc)
    ui_retry(api, run_id)
    run = wait_for(api, run_id, timeout_s=480)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["run_count"] == 2  # the same flow run, resumed

    # stages before the failed one were not recomputed: their files are untouched, and no
    # task of theirs ran again after the retry
    for path, modified in committed.items():
        assert fs.info(path)["LastModified"] == modified, path
    after = [t for t in tree_task_runs(api, run_id) if t["start_time"] and datetime.fromisoformat(t["start_time"]) > retried_at]
    recomputed = {t["name"] for t in after}
    assert not {name for name in recomputed if name.startswith(("crawl-", "dedup-signatures-", "dedup-buckets-"))}, recomputed
    assert "dedup-cluster-00000" in recomputed
    # and the result is byte for byte what an uninterrupted run wrote
    assert outputs_of(fs, run_summary(fs, root, run_id)) == reference["outputs"]


def test_cancelling_a_run_stops_its_dask_work_and_a_later_run_resumes(stack, api, deployments, reference, faults):
    """Waits on events and states only (the hanging shards started, the run is Cancelled, the
    scheduler dropped the run's tasks), never on how long a cancellation takes on this machine."""
    from distributed import Client

    from fineflow.faults import arm

    # Every crawl shard hangs when it starts, until the test itself stops it (below): whichever
    # shards Dask starts first, none can commit, and once every worker thread is taken the rest
    # wait in the scheduler's queue however slowly the cancellation goes.
    shards = len(reference["outputs"]["crawl/extract"])
    armed = [arm(faults, f"crawl-extract-{shard:05d}", "hang", "3600") for shard in range(shards)]
    address = stack.environment()["FINEFLOW_DASK_ADDRESS"]
    with Client(address, timeout=30) as client:
        slots = sum(worker["nthreads"] for worker in client.scheduler_info()["workers"].values())
    assert slots < shards, f"the stack's {slots} worker threads would leave no crawl shard queued"
    root = f"s3://fineflow/cancel-{uuid.uuid4().hex[:8]}"
    parameters = {"run": {"pipeline": "examples/demo.yaml", "storage": root}}
    run_id = ui_custom_run(api, deployments["demo"], parameters)
    deadline = time.monotonic() + 480  # (a guard against a hung test, not a timing assumption)
    while len(list(faults.glob("*.fired"))) < slots:
        assert time.monotonic() < deadline, "the hanging shards never started"
        time.sleep(0.5)
    ui_cancel(api, run_id)
    assert wait_for(api, run_id, timeout_s=480)["state"]["type"] == "CANCELLED"

    with Client(address, timeout=30) as client:
        # the cancelled run released its Dask work: the scheduler holds none of its tasks, the
        # queued shards included, while the started ones still hang on the workers
        deadline = time.monotonic() + 480
        while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
            assert time.monotonic() < deadline, "the cancelled run's tasks are still on the scheduler"
            time.sleep(1)
        started = sorted(path.name for path in faults.glob("*.fired"))
        client.restart()  # ends the hanging tasks (and the test's wait for them): they never commit
    assert len(started) == slots  # no queued shard started after the cancel
    fs = stack_fs(stack)
    written = [p for p in fs.find(root.removeprefix("s3://")) if "/crawl/extract/" in p and p.endswith(".parquet")]
    assert not written, written  # nothing committed: the started shards hung, the queued never ran
    assert not fs.exists(f"{root.removeprefix('s3://')}/dedup")
    for path in armed:  # the queued shards' faults, never taken: the next run must not hang on them
        path.unlink(missing_ok=True)

    second = ui_custom_run(api, deployments["demo"], parameters)
    assert wait_for(api, second)["state"]["type"] == "COMPLETED"
    assert outputs_of(fs, run_summary(fs, root, second)) == reference["outputs"]


def test_a_transient_shard_failure_is_retried_and_the_run_completes(workdir, tmp_path, dask_address, faults, prefect_api):
    from test_pipeline_integration import crawl_only

    crawl_only(workdir)
    fault = "crawl-extract-00001"
    from fineflow.faults import arm

    arm(faults, fault, "transient")
    summary = run_pipeline(workdir / "demo.yaml", str(tmp_path / "store"), dask_address, tmp_path)
    assert (faults / f"{fault}.transient.fired").exists()
    crawl = summary["stages"][0]
    assert crawl["docs_out"] > 0 and crawl["shards"] == crawl["steps"][0]["shards"]
    runs = [t for t in tree_task_runs(prefect_api, summary["run_id"]) if t["name"] == fault]
    assert [t["state"]["type"] for t in runs] == ["COMPLETED"] and runs[0]["run_count"] == 2


def test_a_killed_dask_worker_mid_stage_loses_nothing(workdir, tmp_path, prefect_api, faults):
    """The flow resubmits shards lost with their worker (here Dask gives up at once: allowed-failures 0)."""
    import logging

    import dask
    from distributed import LocalCluster

    demo = (workdir / "demo.yaml").read_text()
    (workdir / "demo.yaml").write_text(demo[: demo.index("  - stage: filter")])  # crawl -> dedup
    from fineflow import storage
    from fineflow.faults import arm

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )
    try:
        clean = run_pipeline(workdir / "demo.yaml", str(tmp_path / "clean"), cluster.scheduler_address, tmp_path)
        arm(faults, "crawl-extract-00001", "kill")
        arm(faults, "dedup-signatures-00002", "kill")
        faulted = run_pipeline(workdir / "demo.yaml", str(tmp_path / "faulted"), cluster.scheduler_address, tmp_path)
    finally:
        cluster.close()
    assert "resubmitting" in "\n".join(
        run_logs(prefect_api, child["id"])
        for child in call("POST",
            f"{prefect_api}/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [faulted["run_id"]]}}}
        ).json()
    )

    def committed(summary: dict) -> dict:
        found = {}
        for stage in summary["stages"]:
            for step in stage["steps"]:
                manifest = json.loads(storage.read_bytes(step_folder_of(step["output"]) + "/_manifest.json"))
                found[f"{stage['name']}/{step['step']}"] = [(s["file"], s["rows"], s["sha256"]) for s in manifest["shards"]]
        return found

    assert committed(faulted) == committed(clean)  # same shards, same rows, same bytes: ids included


def test_from_stage_recomputes_that_stage_and_those_after_it(workdir, tmp_path, dask_address):
    demo = (workdir / "demo.yaml").read_text()
    (workdir / "demo.yaml").write_text(demo[: demo.index("  - stage: filter")])
    root = str(tmp_path / "store")
    first = run_pipeline(workdir / "demo.yaml", root, dask_address, tmp_path)
    assert Path(first["report"]).is_file() and Path(first["report"]).parent.name == first["run_id"]
    again = run_pipeline(workdir / "demo.yaml", root, dask_address, tmp_path, "--from-stage", "dedup")
    assert task_states(again["run_id"], "crawl-") == []  # committed: not run again
    assert set(task_states(again["run_id"], "dedup-")) == {"Completed"}
    assert [s["docs_out"] for s in again["stages"]] == [s["docs_out"] for s in first["stages"]]
