"""Says what happens to a run's Dask workers while it runs: lost and new workers, an empty cluster.

A worker that dies takes its shards with it (the engine resubmits them), and a cluster whose
workers are all gone makes a run wait without a word; both are told here, with counts, in the
run's log (the Prefect UI) and on the CLI, from a thread that asks the scheduler every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fineflow.flows import progress

POLL_S = 2.0
EMPTY_REPEAT_S = 30.0  # how often a still-empty cluster is mentioned again


class ClusterWatch:
    def __init__(self, client, logger: logging.Logger | logging.LoggerAdapter, poll_s: float = POLL_S) -> None:  # noqa: ANN001
        self.client = client
        self.logger = logger
        self.poll_s = poll_s
        self.lost = 0
        self._workers: set[str] | None = None
        self._empty_since: float | None = None
        self._last_empty_note = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fineflow-cluster-watch", daemon=True)

    def start(self) -> ClusterWatch:
        self._workers = self._current()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _current(self) -> set[str] | None:
        try:
            return set(self.client.nthreads())
        except Exception:  # noqa: BLE001 (the scheduler is busy or gone: the shards' own errors say so)
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check(self._current())

    def check(self, now: set[str] | None, clock: Callable[[], float] = time.monotonic) -> None:
        """Compare the workers seen now with the last look; say what changed."""
        if now is None:
            return
        before = self._workers or set()
        gone, new = sorted(before - now), sorted(now - before)
        self._workers = now
        if gone:
            self.lost += len(gone)
            self._say(
                logging.WARNING,
                f"lost {len(gone)} Dask worker(s) ({', '.join(gone)}); the cluster has {len(now)} now; "
                "their running shards run again",
            )
        if new:
            self._say(logging.INFO, f"{len(new)} Dask worker(s) joined ({', '.join(new)}); {len(now)} now")
        if now:
            self._empty_since = None
            return
        moment = clock()
        if self._empty_since is None:
            self._empty_since, self._last_empty_note = moment, moment
            self._say(logging.WARNING, "the Dask cluster has no workers: the run's shards wait until a worker joins")
        elif moment - self._last_empty_note >= EMPTY_REPEAT_S:
            self._last_empty_note = moment
            self._say(logging.WARNING, f"the Dask cluster has had no workers for {moment - self._empty_since:.0f} s; still waiting")

    def _say(self, level: int, message: str) -> None:
        self.logger.log(level, message)
        progress.emit("cluster_note", message=message, level=logging.getLevelName(level))
