"""The external-cluster harness itself: its workers must really be isolated from the test process
(their own fineflow install, directories and environment), or the tests that use it prove nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from external_cluster import REPO, ExternalCluster, worker_environment

pytestmark = pytest.mark.integration


def test_external_cluster_is_isolated_and_loses_a_killed_worker(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = worker_environment(tmp_path_factory.mktemp("worker-env"))
    venv = python.parent.parent
    root = tmp_path_factory.mktemp("external-cluster")
    # The client's own environment has AWS_* (and PREFECT_* under the integration fixtures); the workers
    # must not see them.
    monkeypatch.setenv("AWS_HARNESS_CANARY", "client-only")
    monkeypatch.setenv("PREFECT_HARNESS_CANARY", "client-only")

    def probe() -> dict:
        # Nested: cloudpickle sends it by value; the workers cannot import this test module.
        import sys

        import fineflow

        failure = ""
        try:
            import fineflow.flows.shard_work  # noqa: F401
            import fineflow.tasks.filter.url_filter  # noqa: F401
        except Exception as exc:  # reported, not raised: the assertion shows which worker and why
            failure = repr(exc)
        return {
            "file": os.path.realpath(fineflow.__file__),
            "prefix": sys.prefix,
            "cwd": os.path.realpath(os.getcwd()),
            "home": os.path.realpath(os.environ.get("HOME", "")),
            "leaked": sorted(k for k in os.environ if k.startswith(("AWS_", "PREFECT_"))),
            "import_failure": failure,
        }

    cluster = ExternalCluster(python, root, n_workers=2)
    with cluster:
        with cluster.client() as client:
            results = client.run(probe)
            names = {address: info["name"] for address, info in client.scheduler_info()["workers"].items()}
        assert sorted(names.values()) == ["worker-0", "worker-1"], cluster.logs()
        site_packages = (venv / "lib").resolve()
        for address, got in results.items():
            own = str((root / names[address]).resolve())
            where = f"{names[address]}: {got}\n{cluster.logs()}"
            assert Path(got["file"]).is_relative_to(site_packages), where
            assert "site-packages" in got["file"] and not Path(got["file"]).is_relative_to(REPO), where
            assert Path(got["prefix"]).resolve() == venv.resolve(), where
            assert got["cwd"] == own and got["home"] == own, where
            assert got["leaked"] == [], where
            assert got["import_failure"] == "", where

        started = time.monotonic()
        cluster.kill_worker(1)
        cluster.wait_for_workers(1, timeout=30)
        assert time.monotonic() - started < 30
        assert list(cluster.worker_pids()) == [0], cluster.logs()
    assert cluster.pids() == [], cluster.logs()
