"""The Dask cluster a run's stage flows share: an existing scheduler, or a LocalCluster."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fineflow.config import DaskConfig


@contextmanager
def dask_cluster(config: DaskConfig) -> Iterator[tuple[str, str | None]]:
    """Yield ``(scheduler address, dashboard URL)``; a LocalCluster lives for the ``with`` block."""
    if config.address:
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
        yield cluster.scheduler_address, cluster.dashboard_link
    finally:
        cluster.close()
