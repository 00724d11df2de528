"""Shared fixtures. Integration fixtures start real components once per test session:
a SeaweedFS S3 server, a Prefect API server and a Dask LocalCluster, all on 127.0.0.1.

Prefect reads its settings when first imported, so nothing here imports Prefect before the
API address is exported.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Fault points (fineflow.faults) for the fault-tolerance tests: set before any Dask worker or
# Prefect worker starts, so that every process the tests start can find the armed faults.
FAULTS_DIR = Path(tempfile.mkdtemp(prefix="fineflow-faults-"))
os.environ["FINEFLOW_FAULTS_DIR"] = str(FAULTS_DIR)
atexit.register(shutil.rmtree, FAULTS_DIR, ignore_errors=True)
SAMPLE = REPO / "examples" / "data" / "CC-MAIN-SAMPLE-00000.warc.gz"
DEMO = REPO / "examples" / "demo.yaml"
BUCKET = "fineflow-test"


@pytest.fixture(scope="session")
def sample_warc() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    from fineflow.seaweed import start_seaweed

    # Test-only credentials for a throwaway local server.
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"), BUCKET, "fineflow-test", "fineflow-test-secret")
    previous = {k: os.environ.get(k) for k in server.environment()}
    os.environ.update(server.environment())
    yield server
    server.stop()
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    from fineflow.server import start_server, stop_server

    home = tmp_path_factory.mktemp("fineflow-home")
    os.environ["FINEFLOW_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "client")
    info = start_server(home / "prefect")
    os.environ["PREFECT_API_URL"] = info.api_url
    yield info.api_url
    import sys

    if "prefect" in sys.modules:  # send buffered run logs while the server still listens
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
    stop_server(home / "prefect")


@pytest.fixture(scope="session")
def dask_address(seaweed, prefect_api):
    """One LocalCluster for the session; its workers inherit the S3 and Prefect environment."""
    import logging

    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
        silence_logs=logging.WARNING,
    )
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A pipeline folder holding a copy of the demo config and sample."""
    (tmp_path / "data").mkdir()
    shutil.copy(SAMPLE, tmp_path / "data" / SAMPLE.name)
    shutil.copy(DEMO, tmp_path / "demo.yaml")
    return tmp_path


@pytest.fixture
def faults():
    """The fault folder, emptied before and after the test; a fault armed but never fired fails it."""
    for path in FAULTS_DIR.iterdir():
        path.unlink()
    yield FAULTS_DIR
    unfired = sorted(p.name for p in FAULTS_DIR.iterdir() if not p.name.endswith(".fired"))
    for path in FAULTS_DIR.iterdir():
        path.unlink()
    assert not unfired, f"armed faults never fired: {unfired}"
