"""What a run's shards need from the client, carried to every Dask worker for that run only.

A worker shares nothing with the client but the network and object storage. It gets the run's S3
options (from a credentials block), the values of the Secret blocks its steps name and its
``plugins:`` code from one ``RunPlugin`` registered on the scheduler when the run's cluster
starts and unregistered when the run ends: workers that join later get it too, nothing stays
behind, and no value travels in task arguments (the task graph, the dashboard and the logs show
none). A shard finds its run's settings by the run's key; without them it fails at once, saying
what is missing, instead of looking for a Prefect API of its own.

Plug-in code travels through storage: each module (or package) as a zip named by its content
hash, imported on demand by that run's shards. One worker process can hold one version of a
module name: a shard of a run whose plug-in differs from the one a still-running run loaded there
fails with one line (the client refuses such a run before it starts, ``flows/cluster_checks.py``).

This module runs on workers: no Prefect here.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin

from fineflow import secrets, storage

PLUGIN_PREFIX = "fineflow-run-"


class MissingRunContext(RuntimeError):
    """A shard ran on a worker that never received its run's settings."""


class PluginConflict(RuntimeError):
    """A worker already holds another version of a plug-in module."""


@dataclass(frozen=True)
class PluginCode:
    """A ``plugins:`` module as the workers import it: by name, from a zip in storage."""

    module: str
    digest: str  # sha256 of its files (relative path and bytes)
    url: str  # the zip in storage

    @staticmethod
    def pack(module: str, root: str) -> tuple[PluginCode, bytes]:
        """Zip the module's source (a file, or a package's folder) for ``<root>/_plugins/``."""
        files = module_files(module)
        digest = files_digest(files)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for relative, data in sorted(files.items()):
                # a fixed date: the same code always makes the same bytes
                archive.writestr(zipfile.ZipInfo(relative, date_time=(1980, 1, 1, 0, 0, 0)), data)
        return PluginCode(module, digest, storage.join(root, "_plugins", f"{module}-{digest[:16]}.zip")), buffer.getvalue()


def module_files(module: str) -> dict[str, bytes]:
    """The source files of an imported module, by their path relative to its import root."""
    found = sys.modules[module]
    origin = Path(found.__file__ or "")
    if origin.name == "__init__.py":  # a package: every .py file under its folder
        base = origin.parent.parent
        paths = sorted(p for p in origin.parent.rglob("*.py") if "__pycache__" not in p.parts)
    else:
        base = origin.parent
        paths = [origin]
    return {path.relative_to(base).as_posix(): path.read_bytes() for path in paths}


def files_digest(files: dict[str, bytes]) -> str:
    hasher = hashlib.sha256()
    for relative, data in sorted(files.items()):
        hasher.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
    return hasher.hexdigest()


@dataclass
class RunContext:
    """One run's settings inside a worker process."""

    key: str
    s3: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    plugins: tuple[PluginCode, ...] = ()


_RUNS: dict[str, RunContext] = {}
# module name -> (digest, run keys using it, zip path on sys.path): what a worker process holds
_LOADED: dict[str, tuple[str, set[str], str]] = {}
_lock = threading.RLock()


class RunPlugin(WorkerPlugin):
    """A run's settings on every worker of the cluster, for as long as the run is registered.

    A run registers its main part when its cluster starts and, as steps that name further Secret
    blocks come up, a part for each (``part``): a new part never replaces one already set up, so a
    shard running meanwhile never sees its run's settings missing."""

    def __init__(self, context: RunContext, part: str = "") -> None:
        self.context = context
        self.part = part
        self.name = PLUGIN_PREFIX + context.key + (f"-{part}" if part else "")

    def __repr__(self) -> str:  # names only: the values never show
        c = self.context
        return (
            f"RunPlugin(run={c.key}{', part=' + self.part if self.part else ''}, s3={'set' if c.s3 else 'none'}, "
            f"secrets={sorted(c.secrets)}, plugins={[p.module for p in c.plugins]})"
        )

    def setup(self, worker) -> None:  # noqa: ANN001 (Dask's signature)
        with _lock:
            held = _RUNS.setdefault(self.context.key, RunContext(self.context.key))
            held.s3 = self.context.s3 or held.s3
            held.secrets.update(self.context.secrets)
            held.plugins = tuple(dict.fromkeys((*held.plugins, *self.context.plugins)))

    def teardown(self, worker) -> None:  # noqa: ANN001
        if not self.part:
            forget(self.context.key)


def forget(key: str) -> None:
    """Drop a run's settings and unload the plug-in modules only it used."""
    with _lock:
        _RUNS.pop(key, None)
        for module, (_, users, path) in list(_LOADED.items()):
            users.discard(key)
            if not users:
                _unload(module, path)


def _unload(module: str, path: str) -> None:
    for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
        del sys.modules[name]
    if path in sys.path:
        sys.path.remove(path)
    del _LOADED[module]


def enter(key: str | None) -> RunContext | None:
    """Apply the run's settings in this worker process before one of its shards runs."""
    if key is None:
        return None
    with _lock:
        context = _RUNS.get(key)
        if context is None:
            raise MissingRunContext(
                f"this Dask worker has not received run {key}'s settings (its worker plugin {PLUGIN_PREFIX}{key} "
                "is not set up here): the run ended, or the worker could not unpickle the plugin (see its log)"
            )
        # the run's keys, or this worker's own environment: never a previous run's
        storage.configure("s3", **context.s3)
        for name, value in context.secrets.items():
            secrets.provide(name, value)
        for code in context.plugins:
            _import(code, key)
        return context


def _import(code: PluginCode, key: str) -> None:
    held = _LOADED.get(code.module)
    if held is not None:
        if held[0] != code.digest:
            raise PluginConflict(
                f"plugins: module {code.module!r} of this run differs from the one another run loaded in this worker "
                "(one process cannot hold both): rename the module, or run the two pipelines one after the other"
            )
        held[1].add(key)
        return
    present = sys.modules.get(code.module)
    if present is not None:
        # imported another way (a LocalCluster's preload, an installed package): the same code, or a conflict
        if files_digest(module_files(code.module)) != code.digest:
            raise PluginConflict(
                f"plugins: module {code.module!r} is already imported in this worker with different code "
                f"({getattr(present, '__file__', '?')})"
            )
        _LOADED[code.module] = (code.digest, {key}, "")
        return
    path = os.path.join(tempfile.gettempdir(), "fineflow-plugins", os.path.basename(code.url))
    if not os.path.exists(path):
        data = storage.read_bytes(code.url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)
    sys.path.insert(0, path)
    _LOADED[code.module] = (code.digest, {key}, path)
    try:
        __import__(code.module)
    except BaseException:
        _unload(code.module, path)  # the next shard tries again, and says the same
        raise
