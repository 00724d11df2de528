"""The Dask cluster a run's stage flows share: an existing scheduler, or a LocalCluster."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import WorkerPlugin

from fineflow import registry
from fineflow.config import DaskConfig


class StagePlugins(WorkerPlugin):
    """Makes a pipeline's ``plugins:`` modules importable on every worker, present and future
    (their step functions are imported by name there). On a cluster of other machines the
    folder must be shared, or the plug-in installed as a package (entry points)."""

    name = "fineflow-stage-plugins"

    def __init__(self, modules: dict[str, str]) -> None:
        self.modules = modules

    def setup(self, worker) -> None:  # noqa: ANN001 (Dask's signature)
        for folder in set(self.modules.values()):
            if folder and folder not in sys.path:
                sys.path.insert(0, folder)
        for module, folder in self.modules.items():
            registry.load_plugins([module], folder or None)


def _hand_plugins_to_workers(address: str) -> None:
    modules = registry.plugins()
    if not modules:
        return
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.register_plugin(StagePlugins(modules))


@contextmanager
def dask_cluster(config: DaskConfig) -> Iterator[tuple[str, str | None]]:
    """Yield ``(scheduler address, dashboard URL)``; a LocalCluster lives for the ``with`` block."""
    if config.address:
        _hand_plugins_to_workers(config.address)
        yield config.address, None
        return
    from distributed import LocalCluster

    # Processes, not threads: extraction and parsing hold the GIL. Worker processes inherit this
    # process's environment (PREFECT_API_URL, AWS_*), and import fineflow as an installed package.
    cluster = LocalCluster(
        n_workers=config.n_workers,
        threads_per_worker=config.threads_per_worker,
        processes=True,
        memory_limit=config.memory_limit,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.WARNING,
    )
    try:
        _hand_plugins_to_workers(cluster.scheduler_address)
        yield cluster.scheduler_address, cluster.dashboard_link
    finally:
        cluster.close()
