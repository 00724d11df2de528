"""Check a model file where a bad one cannot hurt the run: in a child process with a memory cap and a timeout.

A native loader (fastText, KenLM, ...) trusts the sizes a file's header promises: a truncated or damaged file can
make it allocate without bound or spin, and in a Dask worker that takes the machine down. So a model is first
checked structurally (a format's ``structure`` function: the sizes its header promises against the file's size),
then loaded once in a plain ``subprocess`` (Dask workers are daemonic: no ``multiprocessing`` children) under
``RLIMIT_AS`` and a timeout; the child reports what the model is (e.g. its labels and dimension) as JSON.

Results are memoized by the file's identity (path, size, change token, as the model cache keys entries): in a
dict per process and as a small marker in the model cache folder, so a multi-GB model is loaded at most once per
machine before it is used. Only a model that passed is remembered.

Settings: ``FINEFLOW_MODEL_CHECK_MEMORY_FACTOR`` (memory cap as a multiple of the file size, default 3),
``FINEFLOW_MODEL_CHECK_MEMORY_FLOOR`` (bytes, default 1 GiB) and ``FINEFLOW_MODEL_CHECK_TIMEOUT_S`` (default 120,
plus 60 s per GiB of model).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from fineflow import storage

FACTOR_ENV = "FINEFLOW_MODEL_CHECK_MEMORY_FACTOR"
FLOOR_ENV = "FINEFLOW_MODEL_CHECK_MEMORY_FLOOR"
TIMEOUT_ENV = "FINEFLOW_MODEL_CHECK_TIMEOUT_S"
DEFAULT_FACTOR = 3.0
DEFAULT_FLOOR = 2**30  # the interpreter and the loader's library alone map ~150 MB
DEFAULT_TIMEOUT_S = 120.0
SECONDS_PER_GIB = 60.0  # reading a model from a slow disk
MARKER_FOLDER = "checked"  # a folder: the model cache's eviction counts files only
CHECK_VERSION = "1"  # part of a marker's key: a changed check re-checks every model


class ModelCheckError(ValueError):
    """One line: which file, and why it is not a loadable model."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    timeout_s: float


def limits_for(size: int) -> Limits:
    factor = _setting(FACTOR_ENV, DEFAULT_FACTOR, low=1.0, high=1000.0)
    floor = _setting(FLOOR_ENV, DEFAULT_FLOOR, low=2**26, high=2**50)
    timeout = _setting(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, low=1.0, high=86_400.0)
    return Limits(int(max(floor, factor * size)), timeout + SECONDS_PER_GIB * size / 2**30)


def _setting(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {raw!r}")
    return value


_memo: dict[str, dict] = {}
_memo_lock = threading.Lock()


def check(path: str, fmt: str, describe: str, structure: Callable[[str], str | None] | None = None) -> dict:
    """What the model at local ``path`` is (``describe``'s JSON answer), or ``ModelCheckError`` naming the file.

    ``fmt`` names the format in messages ("fastText"); ``describe`` is ``"module:function"``, a function of the path
    run in the child; ``structure`` (run here, it must only read) returns why the file is malformed, or None.
    """
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelCheckError(f"{name} is not a loadable {fmt} model (no such file: {path})")
    key = _key(path, fmt, describe)
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    found = _read_marker(key)
    if found is None:
        problem = structure(path) if structure is not None else None
        if problem is not None:
            raise ModelCheckError(f"{name} is not a loadable {fmt} model ({problem})")
        found = _load_in_child(path, describe, limits_for(os.path.getsize(path)), f"{name} is not a loadable {fmt} model")
        _write_marker(key, found)
    with _memo_lock:
        _memo[key] = found
    return found


def _key(path: str, fmt: str, describe: str) -> str:
    real = os.path.realpath(path)
    fs, local = storage.filesystem(real)
    info = fs.info(local)
    identity = "\0".join([CHECK_VERSION, fmt, describe, real, str(info["size"]), storage.change_token(info)])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _marker_path(key: str) -> str:
    from fineflow.model_cache import cache_dir

    return os.path.join(cache_dir(), MARKER_FOLDER, f"{key}.json")


def _read_marker(key: str) -> dict | None:
    try:
        with open(_marker_path(key), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write_marker(key: str, found: dict) -> None:
    marker = _marker_path(key)
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    tmp = f"{marker}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(found, handle)
    os.replace(tmp, marker)  # whole or absent, whoever else writes the same marker


def _load_in_child(path: str, describe: str, limits: Limits, failed: str) -> dict:
    def cap_memory() -> None:  # runs in the child between fork and exec: nothing that allocates much
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))

    # One thread for numerical libraries: each thread's buffers would count against the memory cap.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    cap = _gib(limits.memory_bytes)
    try:
        done = subprocess.run([sys.executable, "-m", __name__, describe, path], capture_output=True, text=True,
                              timeout=limits.timeout_s, preexec_fn=cap_memory, env=env, check=False)
    except subprocess.TimeoutExpired:  # subprocess.run kills the child before raising
        raise ModelCheckError(f"{failed} (did not load within {limits.timeout_s:.0f} s)") from None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    last = lines[-1].strip()[-300:] if lines else f"exit status {done.returncode}"
    if done.returncode == 0:
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise ModelCheckError(f"{failed} (its check answered no description: {last})") from None
    if "MemoryError" in done.stderr or "bad_alloc" in done.stderr:
        raise ModelCheckError(f"{failed} (loading it exceeded {cap})")
    if done.returncode < 0:
        raise ModelCheckError(f"{failed} (loading it crashed with signal {-done.returncode})")
    raise ModelCheckError(f"{failed} ({last})")


def _gib(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _describe_main(target: str, path: str) -> None:
    module, function = target.split(":")
    found = getattr(importlib.import_module(module), function)(path)
    print(json.dumps(found))


if __name__ == "__main__":  # the child: DESCRIBE (module:function) PATH
    _describe_main(sys.argv[1], sys.argv[2])
