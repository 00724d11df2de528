"""A per-machine cache of remote model files, for libraries that read only local paths (fastText, tokenizers).

The cluster shares nothing but object storage: a Dask worker that needs ``s3://bucket/models/dclm.bin`` must copy
it to its own disk first. Models reach several GB, so the copy is streamed in chunks (never held in memory) into a
temporary file and renamed into place, so a crashed download never leaves a half file under the final name.

Entries are content-addressed: the name hashes (url, size, change token), so a rewritten object gets a new entry
and an unchanged one is downloaded once per machine, however many worker processes ask at the same time (an
exclusive ``flock`` per entry serializes them). The folder is capped in bytes; least-recently-used entries not in
use by another process are evicted to make room.

Settings: ``FINEFLOW_MODEL_CACHE`` (folder, default ``~/.cache/fineflow/models``) and
``FINEFLOW_MODEL_CACHE_BYTES`` (cap, default 20 GiB).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import posixpath
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fineflow import storage

CACHE_ENV = "FINEFLOW_MODEL_CACHE"
CAP_ENV = "FINEFLOW_MODEL_CACHE_BYTES"
DEFAULT_CAP_BYTES = 20 * 2**30
# One ranged GET per chunk; the S3 client holds about three copies of a chunk while reading it (response
# buffers, joined bytes), so 4 MiB keeps memory near 12 MiB while requests stay large.
CHUNK_BYTES = 4 * 2**20
# A download writes continuously, so a temp file untouched this long belongs to a crashed one.
STALE_TMP_SECONDS = 3600.0
TMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".lock-"

# flock already excludes other open files, threads included; the thread lock keeps this process's threads
# from each opening a lock file and spinning on it, and makes the exclusion explicit.
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def cached_copy(url: str) -> str:
    """A local path holding the bytes of the object ``url``, downloaded into this machine's cache at most once."""
    folder = cache_dir()
    cap = cap_bytes()
    url = storage.normalize(url)
    fs, path = storage.filesystem(url)
    info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(f"{url} is a folder, not a model file")
    size = int(info["size"])
    final = os.path.join(folder, entry_name(url, size, storage.change_token(info)))
    if _serve(final):  # the common case: no lock needed, a served entry is already whole
        return final
    with _thread_lock(final), _exclusive(_lock_path(final)):
        if _serve(final):  # another process or thread downloaded it while we waited
            return final
        if size > cap:
            raise OSError(
                f"{url} is {size:,} bytes, more than the model cache may hold ({cap:,} bytes): raise {CAP_ENV}"
            )
        evict(folder, size, cap)
        _download(fs, path, url, final, info)
        return final


FOLDERS = "folders"  # model folders (Hugging Face): links to each file's own entry, beside the entries


def cached_folder(url: str) -> str:
    """A local folder holding the files of the folder ``url`` (a Hugging Face model; sub-folders too), for
    libraries that open a folder by path. Each file is an ordinary entry (downloaded once, evicted like any
    other); the folder is a tree of links to them under the files' own names, built in a temp folder and
    renamed into place. Its name hashes the remote files (a changed folder gets a new one); entry names are
    content-addressed too, so an evicted entry fetched again makes its old link whole again."""
    url = storage.normalize(url).rstrip("/")
    listing = sorted(storage.list_tree(url).items())
    if not listing:
        raise FileNotFoundError(f"{url} holds no files (a model folder was expected)")
    total, cap = sum(entry["size"] for _, entry in listing), cap_bytes()
    if total > cap:  # its own files would evict each other
        raise OSError(f"{url} holds {total:,} bytes, more than the model cache may hold ({cap:,} bytes): raise {CAP_ENV}")
    identity = "\0".join(f"{name}\0{entry['size']}\0{entry['token']}" for name, entry in listing)
    digest = hashlib.sha256(f"{url}\0{identity}".encode()).hexdigest()[:32]
    parent = os.path.join(cache_dir(), FOLDERS)
    os.makedirs(parent, exist_ok=True)
    final = os.path.join(parent, f"{digest}-{posixpath.basename(url)[-120:]}")
    targets = {name: cached_copy(storage.join(url, *name.split("/"))) for name, _ in listing}  # each served (LRU) or fetched
    if _links_whole(final, targets):
        return final
    with _thread_lock(final), _exclusive(_lock_path(final)):
        if _links_whole(final, targets):  # another process built it while we waited
            return final
        tmp = os.path.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        for name, target in targets.items():
            link = os.path.join(tmp, *name.split("/"))
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(target, link)
        if os.path.isdir(final):  # a partial tree (a crash mid-build elsewhere): replaced as a whole
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(parent)
    return final


def _links_whole(folder: str, targets: dict[str, str]) -> bool:
    """Every file of the folder is a link to its entry, and the entry is there."""
    for name, target in targets.items():
        link = os.path.join(folder, *name.split("/"))
        try:
            if os.readlink(link) != target or not os.path.exists(target):
                return False
        except OSError:  # missing (or not a link)
            return False
    return True


def folder_is_whole(folder: str) -> bool:
    """Whether every link under a cached model folder still reaches its entry (none evicted since)."""
    for root, _, files in os.walk(folder):
        if any(not os.path.exists(os.path.join(root, name)) for name in files):
            return False
    return True


def cache_dir() -> str:
    """The cache folder (created if missing): ``$FINEFLOW_MODEL_CACHE`` or ``~/.cache/fineflow/models``."""
    folder = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "fineflow", "models")
    folder = os.path.abspath(os.path.expanduser(folder))
    os.makedirs(folder, exist_ok=True)
    return folder


def cap_bytes() -> int:
    """The cache's size cap in bytes: ``$FINEFLOW_MODEL_CACHE_BYTES``, default 20 GiB."""
    raw = os.environ.get(CAP_ENV, "").strip()
    if not raw:
        return DEFAULT_CAP_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = _integral_float(raw)
    if value is None or value <= 0:
        raise ValueError(f"{CAP_ENV} must be a positive whole number of bytes, got {raw!r}")
    return value


def _integral_float(raw: str) -> int | None:
    """``"2e10"`` as an int; None for anything that is not a finite whole number."""
    try:
        number = float(raw)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def entry_name(url: str, size: int, token: str) -> str:
    """Hash of what identifies the content, then the original name (some libraries look at the extension)."""
    digest = hashlib.sha256(f"{url}\0{size}\0{token}".encode()).hexdigest()[:32]
    return f"{digest}-{posixpath.basename(url)[-120:]}"  # stays under the 255-byte name limit


def evict(folder: str, incoming: int, cap: int) -> None:
    """Remove stale temp files, then least-recently-used entries until ``incoming`` more bytes fit under ``cap``.

    Entries locked by a download elsewhere are skipped, so under heavy concurrency the cap may be exceeded briefly.
    """
    used, entries = _scan(folder)
    for _, name, size in sorted(entries):
        if used + incoming <= cap:
            return
        if _remove_if_unused(os.path.join(folder, name)):
            used -= size


def _scan(folder: str) -> tuple[int, list[tuple[float, str, int]]]:
    """Bytes in use (entries and live downloads) and the entries as ``(mtime, name, size)``; drops stale temp files."""
    now = time.time()
    used = 0
    entries = []
    for item in os.scandir(folder):
        try:
            stat = item.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        if item.name.startswith(TMP_PREFIX):
            if now - stat.st_mtime > STALE_TMP_SECONDS:
                _unlink(item.path)
            else:
                used += stat.st_size  # a download in progress: it will become an entry
        elif not item.name.startswith(LOCK_PREFIX) and item.is_file(follow_symlinks=False):
            used += stat.st_size
            entries.append((stat.st_mtime, item.name, stat.st_size))
    return used, entries


def _remove_if_unused(final: str) -> bool:
    """Delete an entry and its lock file unless another process holds the lock (it is downloading or serving it)."""
    lock_path = _lock_path(final)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not _same_file(fd, lock_path):
            return False
        _unlink(final)
        # Waiters on this lock file notice it is gone (see _exclusive) and lock a fresh one.
        _unlink(lock_path)
        return True
    finally:
        os.close(fd)


def _download(fs: Any, path: str, url: str, final: str, info: dict[str, Any]) -> None:
    """Stream the object into a temp file beside ``final``, check it, fsync, then rename it into place."""
    expected = int(info["size"])
    folder = os.path.dirname(final)
    tmp = os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(final)}")
    try:
        # No read cache: each read is one ranged GET of CHUNK_BYTES, so memory stays at about one chunk.
        with fs.open(path, "rb", block_size=CHUNK_BYTES, cache_type="none") as source, open(tmp, "wb") as target:
            while chunk := source.read(CHUNK_BYTES):
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
        got = os.path.getsize(tmp)
        if got != expected:
            raise OSError(
                f"downloading {url} gave {got:,} bytes, expected {expected:,}: the object changed or the transfer broke"
            )
        # rewritten mid-download: the bytes may be mixed
        if storage.change_token(fs.info(path)) != storage.change_token(info):
            raise OSError(f"{url} was rewritten while downloading it: try again")
        os.replace(tmp, final)
        _fsync_dir(folder)  # the rename itself survives a crash
    finally:
        _unlink(tmp)


def _serve(final: str) -> bool:
    """Mark an existing entry as just used (the LRU order); False if there is none."""
    try:
        os.utime(final)
    except FileNotFoundError:
        return False
    return True


@contextmanager
def _thread_lock(final: str) -> Iterator[None]:
    with _thread_locks_guard:
        lock = _thread_locks.setdefault(final, threading.Lock())
    with lock:
        yield


@contextmanager
def _exclusive(lock_path: str) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (closing the descriptor releases it, even if the process dies)."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock_path):
            break
        os.close(fd)  # eviction removed this lock file while we waited: a lock on it excludes nobody
    try:
        yield
    finally:
        os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _lock_path(final: str) -> str:
    return os.path.join(os.path.dirname(final), LOCK_PREFIX + os.path.basename(final))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
