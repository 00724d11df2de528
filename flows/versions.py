"""What must be the same on the client and every worker for a run's output to be the same.

The fingerprint of a step records fineflow's version and the versions of the libraries the step
declares (``LIBRARIES``); a worker computing a shard with other versions would commit output the
fingerprint does not describe. So a worker compares, before each shard, the client's versions of
exactly those libraries with its own (cached per process), and the client compares Python and
fineflow's code with every worker's when it connects (``flows/cluster_checks.py``). Packages no
step names (Prefect, rich, Dask's own helpers) may differ silently.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache

from fineflow.fingerprint import library_versions


class VersionMismatch(RuntimeError):
    pass


@lru_cache(maxsize=1)
def fineflow_code_digest() -> str:
    """A hash of fineflow's Python sources as installed here (editable checkout or wheel alike)."""
    import fineflow

    root = os.path.dirname(os.path.abspath(fineflow.__file__))
    hasher = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root, followlinks=True)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                data = handle.read()
            hasher.update(os.path.relpath(path, root).replace(os.sep, "/").encode() + b"\0" + hashlib.sha256(data).digest())
    return hasher.hexdigest()[:16]


def code_identity() -> dict[str, str]:
    return {"python": "{}.{}".format(*sys.version_info[:2]), "fineflow": fineflow_code_digest()}


@lru_cache(maxsize=256)
def _own_versions(names: tuple[str, ...]) -> dict[str, str]:
    return library_versions(names)


def expected_versions(libraries: dict[str, str]) -> dict[str, object]:
    """What the client sends with each shard: its code identity and the step's library versions."""
    return {**code_identity(), "libraries": dict(libraries)}


def check_versions(expected: dict | None) -> None:
    """Raise (one line) where this worker's Python, fineflow code or a step's library differs from the client's."""
    if not expected:
        return
    mine = code_identity()
    for part in ("python", "fineflow"):
        if part in expected and expected[part] != mine[part]:
            raise VersionMismatch(
                f"this Dask worker runs {part} {mine[part]} but the client runs {expected[part]}: its output would "
                "differ; install the same fineflow (and Python) on the client and the workers"
            )
    wanted = expected.get("libraries") or {}
    own = _own_versions(tuple(sorted(wanted)))
    differing = [f"{name} {own[name]} (client: {wanted[name]})" for name in sorted(wanted) if own[name] != wanted[name]]
    if differing:
        raise VersionMismatch(
            f"this Dask worker's {', '.join(differing)} differ from the client's: its output would not match the "
            "step's fingerprint; install the same versions on the client and the workers"
        )
