"""Checks of an existing Dask cluster before a run does any work on it, each failure one line.

A scheduler named by ``dask.address`` runs on other machines: its workers see object storage
and their own installation, nothing of the client's. So before work starts: the address answers
within seconds; every worker runs the same Python and the same fineflow code as the client (a
difference there changes output; other packages are compared per step, by the libraries its
fingerprint names, ``flows/versions.py``); and a local path the run names (storage root, inputs,
lists, models) is refused unless the workers are shown to see the same file (a probe: size and
content hash of one file of each, and a file the client writes under the storage root) or
``dask.shared_filesystem: true`` says they do (NFS, Lustre).
"""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
from typing import Any

from fineflow import registry, storage
from fineflow.config import DaskConfig
from fineflow.flows.run_plugin import PLUGIN_PREFIX, files_digest, module_files
from fineflow.flows.versions import code_identity
from fineflow.preflight import PreflightError
from fineflow.stage_config import StageConfig

PROBE_BYTES = 1 << 20  # a probe hashes the first MiB and compares sizes: cheap on a huge input


class ClusterUnreachable(PreflightError):
    pass


def connect(address: str, timeout_s: float, key: str = "dask.address"):  # noqa: ANN201 (distributed.Client)
    """A client of the scheduler at ``address``, or one line saying it did not answer in time."""
    try:
        return quiet_client(address, timeout_s)
    except (OSError, TimeoutError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ClusterUnreachable(
            f"{key}: no Dask scheduler answered at {address} within {timeout_s:g} s ({reason})"
        ) from None


def quiet_client(address: str, timeout_s: float):  # noqa: ANN201
    """A client without Dask's version-mismatch table: fineflow compares what changes output itself
    (``check_workers_match``, ``flows/versions.py``), and any other package may differ."""
    from distributed import Client

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mismatched versions found")
        return Client(address, timeout=timeout_s, set_as_default=False)


def check_workers_match(client) -> None:  # noqa: ANN001
    """Every worker runs the client's Python (major.minor) and fineflow code."""
    ours = code_identity()
    theirs: dict[str, dict[str, str]] = client.run(code_identity)
    for address, identity in sorted(theirs.items()):
        for part in ("python", "fineflow"):
            if identity.get(part) != ours[part]:
                raise PreflightError(
                    f"dask.address: worker {address} runs {part} {identity.get(part)} but this client runs {ours[part]}: "
                    "its output would differ; install the same fineflow (and Python) on the client and the workers"
                )


def local_paths(root: str, stages: list[StageConfig]) -> list[tuple[str, str]]:
    """(key, path) of every local path the run names: what workers on other machines cannot read."""
    found = [("storage", root)] if storage.is_local(root) else []
    for stage in stages:
        named = [*stage.input_patterns(), *stage.named_files(), *(getattr(o, k) for o, k in stage.path_fields())]
        for path in dict.fromkeys(p for p in named if isinstance(p, str)):  # once each, in order
            if storage.is_local(path):
                found.append((f"stages.{stage.label}", path))
    return found


def probe_file(path: str) -> dict[str, Any] | None:
    """Size and hash of the first MiB of a file, as this process sees it (None: it does not)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(PROBE_BYTES)
        return {"size": os.path.getsize(path), "head": hashlib.sha256(head).hexdigest()}
    except OSError:
        return None


def _first_file(path: str) -> str | None:
    matches = storage.expand(path)
    return matches[0] if matches else None


def check_paths_shared(client, dask: DaskConfig, root: str, stages: list[StageConfig]) -> None:  # noqa: ANN001
    """Refuse local paths the workers do not see as the client does (unless declared shared)."""
    named = local_paths(root, stages)
    if not named or dask.shared_filesystem:
        return
    probe_url = None
    try:
        for key, path in named:
            if key == "storage":
                # a file written here now: seen by every worker only through a shared mount
                probe_url = storage.join(path, "_meta", f"worker-probe-{uuid.uuid4().hex}")
                storage.write_bytes(probe_url, uuid.uuid4().hex.encode())
                target = probe_url
            else:
                target = _first_file(path)
                if target is None:
                    continue  # a glob matching nothing here: preflight already said so
            expected = probe_file(target)
            seen = client.run(probe_file, target)
            if not seen:
                raise PreflightError(
                    f"{key}: {path} is a local path, and the cluster at {dask.address} has no worker yet to show "
                    "that it sees it: use an object-storage URL (s3://bucket/...), or set dask.shared_filesystem: true"
                )
            blind = sorted(address for address, found in seen.items() if found != expected)
            if blind:
                raise PreflightError(
                    f"{key}: {path} is a local path, but {len(blind)} of {len(seen)} Dask worker(s) at "
                    f"{dask.address} do not see it as this machine does: use an object-storage URL "
                    "(s3://bucket/...), or set dask.shared_filesystem: true if every worker mounts it at the same path"
                )
    finally:
        if probe_url is not None:
            storage.remove(probe_url)


PLUGIN_CLAIMS = "fineflow-plugin-modules"  # scheduler metadata: plug-in module -> {"digest", "run"}


def check_plugin_names(client, digests: dict[str, str]) -> None:  # noqa: ANN001
    """Refuse plug-in modules whose name a running run on this cluster holds with other code: one
    worker process imports one version of a module."""
    if not digests:
        return
    registered = set(client.run_on_scheduler(_registered_plugins))
    for module, digest in sorted(digests.items()):
        held = client.get_metadata([PLUGIN_CLAIMS, module], default=None)
        if held and held["digest"] != digest and PLUGIN_PREFIX + held["run"] in registered:
            raise PreflightError(
                f"plugins: module {module!r} differs from the one run {held['run']} is using on the Dask cluster at "
                f"{client.scheduler.address} (a worker process holds one version of a module): rename it, or wait "
                "for that run to end"
            )


def _registered_plugins(dask_scheduler=None) -> list[str]:  # noqa: ANN001 (run on the scheduler)
    return list(dask_scheduler.worker_plugins)


def check_cluster(dask: DaskConfig, root: str, stages: list[StageConfig]) -> None:
    """All checks of an existing cluster (none for a LocalCluster this process starts), for a run
    of these stages writing under ``root``."""
    if dask.address is None:
        return
    client = connect(dask.address, dask.connect_timeout_s)
    try:
        check_workers_match(client)
        check_paths_shared(client, dask, root, stages)
        check_plugin_names(client, {module: files_digest(module_files(module)) for module in registry.plugins()})
    finally:
        client.close()
