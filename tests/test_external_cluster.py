"""The demo pipeline and the DAG example on a cluster a user with several machines would have: a
`dask scheduler` and two `dask worker` processes started separately, running fineflow from an
installed wheel in their own folders and HOME, with no AWS_*, PREFECT_* or FINEFLOW_* settings of
their own (tests/external_cluster.py). Inputs and storage are on SeaweedFS; the S3 keys come from
a Prefect block, which only the client reads: the workers get them from the run.

Outputs are compared with local runs of the same pipelines (LocalCluster, local files): the same
document ids, texts, counts, token files and trained tokenizer. One worker is killed mid-step
(fineflow.faults) and the run completes on the survivor and says so; a second run is fully cached;
a local storage root, a local input and a wrong scheduler address are each refused in one line
before any work.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import pytest
import yaml
from external_cluster import ExternalCluster, hiding_works, worker_environment
from typer.testing import CliRunner

from conftest import BUCKET, FAULTS_DIR, REPO
from fineflow.manifest import step_folder_of

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "examples"
PLUGIN = REPO / "tests" / "plugins" / "toy_stage.py"
BLOCK = "fineflow-external-cluster-s3"
# The worker environment (a wheel build and an install from uv's cache) is kept between local runs,
# outside the checkout: the workers must not see the checkout.
WORKER_ENV_CACHE = Path(os.environ.get("FINEFLOW_WORKER_ENV_CACHE", Path.home() / ".cache" / "fineflow-tests" / "worker-env"))


def cli(*args: str, cwd: Path | None = None):
    from fineflow.cli import app

    previous = Path.cwd()
    if cwd:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "250"})
    finally:
        os.chdir(previous)


def run(pipeline: Path, storage: str, *extra: str) -> tuple[dict, str]:
    summary = pipeline.parent / f"summary-{uuid.uuid4().hex[:8]}.json"
    result = cli("run", str(pipeline), "--storage", storage, "--summary-json", str(summary), *extra, cwd=pipeline.parent)
    assert result.exit_code == 0, result.output[-6000:]
    return json.loads(summary.read_text()), result.output


@pytest.fixture(scope="module", autouse=True)
def _process_state_restored():
    """In-process runs with --credentials-block configure this process's s3:// access from the
    block, and the DAG's plug-in registers its kind: the other modules' tests expect neither."""
    from fineflow import registry, storage

    before = {protocol: dict(options) for protocol, options in storage._protocol_options.items()}
    kinds, plugins, path = registry.kinds(), dict(registry._PLUGINS), list(sys.path)  # (built-ins loaded first)
    yield
    storage._protocol_options.clear()
    storage._protocol_options.update(before)
    registry._KINDS.clear()
    registry._KINDS.update(kinds)
    registry._PLUGINS.clear()
    registry._PLUGINS.update(plugins)
    sys.path[:] = path
    sys.modules.pop("toy_stage", None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, seaweed, prefect_api):
    """Scheduler and workers in folders of their own; the checkout and every file of this test
    session (pipelines, local stores, the Prefect home) hidden from them as on other machines."""
    why_not = hiding_works()
    if why_not:  # (CI requires it: a skipped cluster test would hide a broken release)
        message = f"workers cannot be kept from the client's files here: {why_not}"
        if os.environ.get("FINEFLOW_REQUIRE_CLUSTER_TEST") == "1":
            pytest.fail(message)
        pytest.skip(message)
    python = worker_environment(WORKER_ENV_CACHE)
    root = Path(tempfile.mkdtemp(prefix="fineflow-cluster-"))
    hidden = (REPO, tmp_path_factory.getbasetemp())
    try:
        with ExternalCluster(python, root, 2, {"FINEFLOW_FAULTS_DIR": str(FAULTS_DIR)}, hide=hidden) as started:
            yield started
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_block(seaweed, prefect_api) -> str:
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    AwsCredentials(
        aws_access_key_id=seaweed.access_key, aws_secret_access_key=seaweed.secret_key, region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=seaweed.endpoint),
    ).save(BLOCK, overwrite=True)
    return BLOCK


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, seaweed) -> dict[str, Path]:
    """The demo and the DAG example as they ship (local inputs), and the same with inputs on S3.
    The DAG also runs the toy plug-in stage: plug-in code must reach the workers through the run."""
    from fineflow import storage

    folder = tmp_path_factory.mktemp("pipelines")
    shutil.copytree(EXAMPLES / "data", folder / "data")
    shutil.copy(PLUGIN, folder / "toy_stage.py")
    inputs = f"s3://{BUCKET}/external-inputs/{uuid.uuid4().hex[:8]}"
    for path in sorted((EXAMPLES / "data").rglob("*.warc.gz")):
        storage.put_file(str(path), f"{inputs}/{path.relative_to(EXAMPLES).as_posix()}")
    found = {}
    for name in ("demo", "dag"):
        config = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        if name == "dag":
            config["plugins"] = ["toy_stage"]
            config["stages"].append({"stage": "wordcount", "name": "words", "input": "sample", "min_words": 300})
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for stage in config["stages"]:
            if stage.get("inputs"):
                stage["inputs"] = [f"{inputs}/{pattern}" for pattern in stage["inputs"]]
        (folder / f"{name}-s3.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        found[name], found[f"{name}-s3"] = folder / f"{name}.yaml", folder / f"{name}-s3.yaml"
    return found


@pytest.fixture(scope="module")
def local_runs(pipelines, tmp_path_factory, prefect_api) -> dict[str, dict]:
    """The reference: each pipeline on local files and a LocalCluster of this process."""
    root = tmp_path_factory.mktemp("local-store")
    return {name: run(pipelines[name], str(root / name))[0] for name in ("demo", "dag")}


def documents(summary: dict) -> dict[str, pl.DataFrame]:
    """Each stage's documents (id, text, language where present), in id order."""
    from fineflow import storage
    from fineflow.manifest import committed_files

    found = {}
    for stage in summary["stages"]:
        files = committed_files(stage["output"])
        frames = [pl.read_parquet(io.BytesIO(storage.read_bytes(f))) for f in files]
        frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        columns = [c for c in ("id", "text", "language") if c in frame.columns]
        found[stage["name"]] = frame.select(columns).sort("id") if "id" in columns else frame
    return found


def artifacts(summary: dict, stage: str, step: str, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    from fineflow import storage

    entry = next(s for s in summary["stages"] if s["name"] == stage)
    output = next(s["output"] for s in entry["steps"] if s["step"] == step)
    folder = storage.join(step_folder_of(output), "artifacts")
    return {name: storage.read_bytes(storage.join(folder, name)) for name in sorted(storage.list_names(folder)) if name.endswith(suffixes)}


def same_outputs(local: dict, remote: dict) -> None:
    assert [(s["name"], s["docs_in"], s["docs_out"], s["rejected"]) for s in remote["stages"]] == [
        (s["name"], s["docs_in"], s["docs_out"], s["rejected"]) for s in local["stages"]
    ]
    ours, theirs = documents(local), documents(remote)
    for name in ours:
        assert theirs[name].equals(ours[name]), f"stage {name}: documents differ from the local run"


def registered_run_plugins(cluster: ExternalCluster) -> list[str]:
    with cluster.client() as client:
        return [name for name in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
                if name.startswith("fineflow-")]


def test_the_demo_runs_on_separate_workers_with_a_worker_killed_then_fully_cached(
    cluster, s3_block, pipelines, local_runs, faults
):
    from fineflow.faults import arm

    root = f"s3://{BUCKET}/external/{uuid.uuid4().hex[:8]}"
    arm(faults, "crawl-extract-00001", "kill")  # a worker dies under a shard: its machine is gone
    started = time.monotonic()
    summary, output = run(pipelines["demo-s3"], root, "--dask-address", cluster.address, "--credentials-block", s3_block)
    first_seconds = time.monotonic() - started
    assert (faults / "crawl-extract-00001.kill.fired").exists()
    assert summary["lost_workers"] >= 1 and "lost 1 Dask worker(s)" in output
    same_outputs(local_runs["demo"], summary)
    local = local_runs["demo"]
    token_files = (".bin", ".idx")
    assert artifacts(summary, "tokenize", "merge", token_files) == artifacts(local, "tokenize", "merge", token_files)
    assert len(artifacts(local, "tokenize", "merge", token_files)) >= 4
    trained = artifacts(summary, "tokenize", "train", (".tokenizer.json",))
    assert trained and trained == artifacts(local, "tokenize", "train", (".tokenizer.json",))
    # the classifier trained in the run, streamed from S3 into a worker's own model cache (in its HOME)
    assert list(cluster.root.glob("worker-*/.cache/fineflow/models/*-reference.bin"))
    assert "unencrypted" in output  # the block's keys crossed plain tcp:// to the workers: said so
    assert registered_run_plugins(cluster) == []  # nothing of the run stays on the shared cluster

    cluster.wait_for_workers(2, timeout=60)  # the killed worker's nanny restarts it, as on a real machine
    started = time.monotonic()
    again, _ = run(pipelines["demo-s3"], root, "--dask-address", cluster.address, "--credentials-block", s3_block)
    cached_seconds = time.monotonic() - started
    assert all(s["cached_shards"] == s["shards"] for s in again["stages"]), [(s["name"], s["cached_shards"]) for s in again["stages"]]
    print(f"external cluster: demo with a killed worker {first_seconds:.1f} s, cached repeat {cached_seconds:.1f} s")


def test_the_dag_example_with_a_plugin_stage_survives_losing_every_worker(cluster, s3_block, pipelines, local_runs, faults):
    """Every worker dies while a shard runs: the run says the cluster is empty and waits, then
    finishes on the workers that join, with the same outputs as the local run."""
    from fineflow.faults import arm

    armed = arm(faults, "crawl-extract-00000", "hang", "120")  # holds a shard while the machines go

    def lose_every_worker_then_bring_them_back() -> None:
        fired = armed.with_name(armed.name + ".fired")
        deadline = time.monotonic() + 120
        while not fired.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for i in (0, 1):
            cluster.kill_worker(i)
        time.sleep(6)  # the run's watch looks every 2 s
        for i in (0, 1):
            cluster.start_worker(i)

    helper = threading.Thread(target=lose_every_worker_then_bring_them_back)
    helper.start()
    root = f"s3://{BUCKET}/external/{uuid.uuid4().hex[:8]}"
    try:
        summary, output = run(pipelines["dag-s3"], root, "--dask-address", cluster.address, "--credentials-block", s3_block)
    finally:
        helper.join()
    assert "the Dask cluster has no workers" in output and summary["lost_workers"] >= 2
    same_outputs(local_runs["dag"], summary)
    assert [s["name"] for s in summary["stages"]][-1] == "words"  # the plug-in's code came through storage
    assert registered_run_plugins(cluster) == []
    with cluster.client() as client:  # and left no module behind in the workers
        assert not any(client.run(lambda: "toy_stage" in __import__("sys").modules).values())


def _one_line_refusal(result, key: str, *expected: str) -> str:
    """Exit 2 with the refusal as one line starting with the key at fault (other libraries' log
    noise on stderr, e.g. asyncio's, is not the refusal's)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(key)]
    assert len(lines) == 1, result.output
    assert all(part in lines[0] for part in expected), lines[0]
    return lines[0]


def test_local_storage_local_inputs_and_a_wrong_address_are_refused_in_one_line_before_any_work(
    cluster, s3_block, pipelines, tmp_path
):
    local_root = tmp_path / "local-store"
    _one_line_refusal(
        cli("run", str(pipelines["demo-s3"]), "--storage", str(local_root), "--dask-address", cluster.address,
            "--credentials-block", s3_block),
        "storage:", str(local_root), "do not see it", "s3://",
    )
    assert not local_root.exists() or not any(local_root.rglob("*.json"))  # no run record, no manifest
    root = f"s3://{BUCKET}/external/{uuid.uuid4().hex[:8]}"
    _one_line_refusal(
        cli("run", str(pipelines["demo"]), "--storage", root, "--dask-address", cluster.address, "--credentials-block", s3_block),
        "stages.crawl:", "data/*.warc.gz", "do not see it",
    )
    from fineflow import storage

    assert not storage.exists(root)  # nothing written
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    _one_line_refusal(
        cli("run", str(pipelines["demo-s3"]), "--storage", root, "--dask-address", f"tcp://127.0.0.1:{port}",
            "--credentials-block", s3_block),
        "dask.address:", f"tcp://127.0.0.1:{port}", "no Dask scheduler answered",
    )
    assert time.monotonic() - started < 30
    assert not storage.exists(root)


def test_a_plugin_module_another_running_run_holds_with_other_code_is_refused(cluster, s3_block, pipelines):
    """One worker process imports one version of a module: a run whose plug-in shares its name with
    a running run's but not its code is refused before it starts."""
    from fineflow.flows.cluster_checks import PLUGIN_CLAIMS
    from fineflow.flows.run_plugin import RunContext, RunPlugin

    other = RunPlugin(RunContext("another-run"))
    with cluster.client() as client:
        client.register_plugin(other)
        client.set_metadata([PLUGIN_CLAIMS, "toy_stage"], {"digest": "0" * 64, "run": "another-run"})
        try:
            root = f"s3://{BUCKET}/external/{uuid.uuid4().hex[:8]}"
            _one_line_refusal(
                cli("run", str(pipelines["dag-s3"]), "--storage", root, "--dask-address", cluster.address,
                    "--credentials-block", s3_block),
                "plugins: module 'toy_stage' differs from the one run another-run is using",
            )
        finally:
            client.unregister_worker_plugin(other.name)
            client.set_metadata([PLUGIN_CLAIMS, "toy_stage"], None)
