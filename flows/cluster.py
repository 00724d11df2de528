"""The Dask cluster a run's stage flows share: an existing scheduler, or a LocalCluster started on first need."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from fineflow import registry, storage
from fineflow.config import DaskConfig
from fineflow.flows import progress
from fineflow.flows.cluster_checks import PLUGIN_CLAIMS, check_plugin_names, connect, quiet_client
from fineflow.flows.cluster_watch import ClusterWatch
from fineflow.flows.run_plugin import PluginCode, RunContext, RunPlugin
from fineflow.steps import StepPlan

WORKER_PRELOAD = ("fineflow.flows.shard_work", "pyarrow.parquet")
WARM_UP_MODULE = "fineflow.flows.worker_warmup"  # last: it may use every module before it


def _preload_forkserver(modules: tuple[str, ...]) -> None:
    """What Dask preloads in its forkserver (distributed and the packages it knows), plus ours."""
    import importlib.util

    from distributed.utils import get_mp_context
    from distributed.versions import optional_packages, required_packages

    # pandas too: no step uses it, but pyarrow imports it the first time it builds a table, so
    # importing it here once spares every worker its import.
    known = [name for name in (*required_packages, *optional_packages) if importlib.util.find_spec(name) is not None]
    get_mp_context().set_forkserver_preload(["distributed", *known, *WORKER_PRELOAD, *modules, WARM_UP_MODULE])


@contextmanager
def _warm_up_in_forkserver(calls: tuple[tuple[str, str], ...]) -> Iterator[None]:
    """The forkserver (started with the first LocalCluster's workers) inherits this process's
    environment: ``flows/worker_warmup.py`` reads the calls from it there."""
    from fineflow.flows.worker_warmup import ENVIRONMENT

    before = os.environ.get(ENVIRONMENT)
    os.environ[ENVIRONMENT] = json.dumps(sorted(set(calls)))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENVIRONMENT, None)
        else:
            os.environ[ENVIRONMENT] = before


class RunAbandoned(RuntimeError):
    pass


class Cluster:
    """A run's Dask cluster, started (or connected to) only when a step has shards to compute: a
    re-run whose every step is committed starts no worker at all."""

    def __init__(
        self,
        config: DaskConfig,
        preload: tuple[str, ...] = (),
        warm: tuple[tuple[str, str], ...] = (),
        root: str | None = None,
        credentials_block: str | None = None,
    ) -> None:
        self.config = config
        self.root = root  # the run's storage (plug-in code travels through it)
        self.credentials_block = credentials_block
        # the run's key on the workers: its plugin's name and what its shards look their settings up by
        self.run_key = uuid.uuid4().hex[:16]
        self._context = RunContext(self.run_key)
        self._plugin_names: list[str] = []  # the run's plugin parts registered on the scheduler
        self._warned = False  # (about secrets over plain tcp://, once a run)
        self._watch: ClusterWatch | None = None
        self.preload = preload  # modules a LocalCluster's workers get imported (e.g. the run's step modules)
        self.warm = warm  # calls made before its workers fork (the steps' StepPlan.warm)
        self.address: str | None = config.address
        self.dashboard: str | None = None
        self._cluster = None
        self._client = None
        self._lock = threading.Lock()
        self.abandoned = False

    def client(self):  # noqa: ANN201 (distributed.Client, imported lazily)
        """The run's Dask client (thread-safe; the first call starts or connects to the cluster)."""
        with self._lock:
            if self.abandoned:
                raise RunAbandoned("the run was stopped: its Dask work was released")
            if self._client is None:
                self._client = self._start()
            return self._client

    def abandon(self) -> None:
        """Release this run's Dask work at once (a cancelled or failing run): queued shards never
        start, shards already running finish their atomic commit on their own."""
        self.abandoned = True
        self.close()

    @property
    def started(self) -> bool:
        return self._client is not None

    def _start(self):  # noqa: ANN202
        if self.address is None:
            import dask
            from distributed import LocalCluster

            # Processes, not threads: extraction and parsing hold the GIL. The workers are forked
            # from one server process that imported distributed, its dependencies, fineflow's
            # shard runner and the run's step modules once, instead of each spawned worker
            # importing them again (seconds of CPU each). That server starts with this process's
            # environment (PREFECT_API_URL, AWS_*) the first time a LocalCluster starts here and
            # serves the process's later LocalClusters too: environment set after it is not seen.
            settings = {
                "distributed.worker.multiprocessing-method": "forkserver",
                # Dask's defaults poll for interactive use; a run's shards take seconds each. Its
                # profiler samples every worker's stacks every 10 ms (the dashboard's Profile
                # page: off unless asked for), memory is polled every 100 ms and system metrics
                # every 500 ms in the scheduler, each nanny and each worker, and each of them
                # times its event loop every 20 ms (at 500 ms an idle cluster's CPU halves).
                "distributed.worker.profile.enabled": self.config.worker_profile,
                "distributed.worker.memory.monitor-interval": "1s",
                "distributed.admin.system-monitor.interval": "2s",
                "distributed.admin.tick.interval": "500ms",
            }
            with dask.config.set(settings), _warm_up_in_forkserver(self.warm):
                _preload_forkserver(self.preload)
                self._cluster = LocalCluster(
                    n_workers=self.config.n_workers,
                    threads_per_worker=self.config.threads_per_worker,
                    processes=True,
                    memory_limit=self.config.memory_limit,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    silence_logs=logging.WARNING,
                )
            self.address, self.dashboard = self._cluster.scheduler_address, self._cluster.dashboard_link
            client = quiet_client(self.address, 60)
        else:
            client = connect(self.address, self.config.connect_timeout_s)
        try:
            self._register_run(client)
        except BaseException:
            client.close()
            raise
        self._watch = ClusterWatch(client, _logger()).start()
        _logger().info("Dask scheduler %s%s", self.address, f", dashboard {self.dashboard}" if self.dashboard else "")
        progress.emit("cluster", address=self.address, dashboard=self.dashboard)
        return client

    @property
    def lost_workers(self) -> int:
        return self._watch.lost if self._watch else 0

    def _register_run(self, client) -> None:  # noqa: ANN001
        """The run's settings on every worker, present and future (``flows/run_plugin.py``)."""
        from fineflow.flows.credentials import s3_options

        context = self._context
        if self.credentials_block:
            context.s3 = s3_options(self.credentials_block)  # loaded here, in the flow process
        codes = []
        for module in sorted(registry.plugins()):
            code, data = PluginCode.pack(module, self.root or ".")
            if not storage.exists(code.url):
                storage.write_bytes(code.url, data)
            codes.append(code)
        context.plugins = tuple(codes)
        check_plugin_names(client, {code.module: code.digest for code in codes})
        for code in codes:  # claimed for this run (a later run with other code under the name is refused)
            client.set_metadata([PLUGIN_CLAIMS, code.module], {"digest": code.digest, "run": self.run_key})
        self._publish(client)

    def _publish(self, client, context: RunContext | None = None, part: str = "") -> None:  # noqa: ANN001
        context = context or self._context
        if self.config.address and self.address.startswith("tcp://") and (context.s3 or context.secrets) and not self._warned:
            self._warned = True
            message = (
                f"the run's S3 credentials and secrets travel to the Dask workers unencrypted over {self.address}: "
                "use a tls:// scheduler address (distributed's TLS settings) on a network you do not trust"
            )
            _logger().warning(message)
            progress.emit("cluster_note", message=message, level="WARNING")
        plugin = RunPlugin(context, part)
        client.register_plugin(plugin)
        self._plugin_names.append(plugin.name)

    def provide_secrets(self, names: tuple[str, ...] | list[str]) -> None:
        """The values of these Secret blocks on every worker: loaded here, sent in a new part of the
        run's plugin (the parts already set up stay, so running shards keep their settings)."""
        from fineflow.flows.credentials import secret_value

        with self._lock:
            missing = sorted({name for name in names if name not in self._context.secrets})
            if not missing:
                return
            values = {name: secret_value(name) for name in missing}
            self._context.secrets.update(values)
            if self._client is not None:
                part = RunContext(self.run_key, secrets=values)
                self._publish(self._client, part, f"secrets-{len(self._plugin_names)}")

    def _release_run(self, client) -> None:  # noqa: ANN001
        """Nothing of the run stays on a shared cluster: its plugin (settings, plug-in modules) and claims go."""
        if not self._plugin_names or self._cluster is not None:
            return  # a LocalCluster of this run goes with it
        try:
            for name in reversed(self._plugin_names):  # the main part last: its teardown forgets the run
                client.unregister_worker_plugin(name)
            for code in self._context.plugins:
                held = client.get_metadata([PLUGIN_CLAIMS, code.module], default=None)
                if held and held["run"] == self.run_key:
                    client.set_metadata([PLUGIN_CLAIMS, code.module], None)
        except Exception as error:  # noqa: BLE001 (the scheduler may be gone; nothing is left there then)
            logging.getLogger("fineflow").warning("could not unregister the run's worker plugin: %s", error)
        self._plugin_names = []

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.stop()
                self._watch = None
            if self._client is not None:
                self._release_run(self._client)
                self._client.close()
            if self._cluster is not None:
                self._cluster.close()
            self._client = self._cluster = None


# The cluster of the pipeline (or stage) run in progress: set around each stage subflow call,
# which runs in the calling thread; the subflow's steps take it from there.
_CURRENT: contextvars.ContextVar[Cluster | None] = contextvars.ContextVar("fineflow_cluster", default=None)


def current_cluster() -> Cluster:
    cluster = _CURRENT.get()
    if cluster is None:
        raise RuntimeError("a stage flow runs inside a pipeline or stage run, which provides its Dask cluster")
    return cluster


@contextmanager
def using(cluster: Cluster) -> Iterator[None]:
    token = _CURRENT.set(cluster)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def _logger() -> logging.Logger:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()  # type: ignore[return-value]
    except MissingContextError:
        return logging.getLogger("fineflow")


def worker_setup(plans: list[StepPlan], pending: list[StepPlan]) -> dict[str, tuple]:
    """What a LocalCluster's workers get before they fork, for a run of these steps: every step's
    module imported, and the warm-up calls of the steps that will run (``pending``)."""
    return {
        "preload": tuple(sorted({plan.function.split(":")[0] for plan in plans})),
        "warm": tuple(sorted({call for plan in pending for call in plan.warm})),
    }


@contextmanager
def dask_cluster(
    config: DaskConfig,
    preload: tuple[str, ...] = (),
    warm: tuple[tuple[str, str], ...] = (),
    root: str | None = None,
    credentials_block: str | None = None,
) -> Iterator[Cluster]:
    """The run's cluster handle; a LocalCluster it started lives for the ``with`` block."""
    cluster = Cluster(config, preload, warm, root, credentials_block)
    try:
        yield cluster
    finally:
        cluster.close()
