"""The worker-side model cache (fineflow.model_cache) against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import fcntl
import hashlib
import multiprocessing
import os
import threading
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import BUCKET
from fineflow import storage
from fineflow.model_cache import CACHE_ENV, CAP_ENV, LOCK_PREFIX, TMP_PREFIX, cached_copy

pytestmark = pytest.mark.integration


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    monkeypatch.delenv(CAP_ENV, raising=False)
    return folder


def put(data: bytes, name: str = "model.bin") -> str:
    url = f"s3://{BUCKET}/model-cache-test/{uuid.uuid4().hex}/{name}"
    storage.write_bytes(url, data)
    return url


def entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_copy_is_served_from_cache_until_the_object_changes(seaweed, cache):
    data = os.urandom(100_000)
    url = put(data)
    path = cached_copy(url)
    assert Path(path).read_bytes() == data
    assert Path(path).parent == cache and path.endswith("-model.bin")  # keeps the extension

    # Overwrite the cached copy in place: a second download would restore it, serving from cache keeps it.
    inode = os.stat(path).st_ino
    marked = b"cached" + data[6:]
    Path(path).write_bytes(marked)
    assert cached_copy(url) == path
    assert Path(path).read_bytes() == marked
    assert os.stat(path).st_ino == inode

    # A rewritten object has a new ETag: a new entry with the new bytes.
    new_data = os.urandom(100_000)
    storage.write_bytes(url, new_data)
    new_path = cached_copy(url)
    assert new_path != path
    assert Path(new_path).read_bytes() == new_data
    assert len(entries(cache)) == 2
    assert not temp_files(cache)


def test_download_streams_without_holding_the_object(seaweed, cache):
    data = os.urandom(48 * 2**20)
    digest = hashlib.sha256(data).hexdigest()
    url = put(data)
    del data
    tracemalloc.start()
    try:
        path = cached_copy(url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, f"peak {peak:,} bytes"
    with open(path, "rb") as handle:
        assert hashlib.file_digest(handle, "sha256").hexdigest() == digest


def test_cap_evicts_the_least_recently_used_entry(seaweed, cache, monkeypatch):
    monkeypatch.setenv(CAP_ENV, "2500")
    first, second, third = (put(os.urandom(1000)) for _ in range(3))
    first_path, second_path = cached_copy(first), cached_copy(second)
    # Explicit ages (file times can be coarser than the gaps between calls): the first is the oldest...
    now = time.time()
    os.utime(first_path, (now - 100, now - 100))
    os.utime(second_path, (now - 50, now - 50))
    assert cached_copy(first) == first_path  # ...until serving it makes it the most recently used.
    third_path = cached_copy(third)
    assert not os.path.exists(second_path)
    assert os.path.exists(first_path) and os.path.exists(third_path)
    assert sorted(map(str, entries(cache))) == sorted([first_path, third_path])


def test_cap_never_evicts_an_entry_locked_elsewhere(seaweed, cache, monkeypatch):
    monkeypatch.setenv(CAP_ENV, "2500")
    first, second, third = (put(os.urandom(1000)) for _ in range(3))
    first_path, second_path = cached_copy(first), cached_copy(second)
    now = time.time()
    os.utime(first_path, (now - 100, now - 100))  # the least recently used...
    # ...but held: flock excludes every other open file, as another worker process downloading it would.
    fd = os.open(cache / f"{LOCK_PREFIX}{Path(first_path).name}", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cached_copy(third)
    finally:
        os.close(fd)
    assert os.path.exists(first_path) and not os.path.exists(second_path)


def test_object_larger_than_the_cap_is_refused(seaweed, cache, monkeypatch):
    monkeypatch.setenv(CAP_ENV, "999")
    url = put(os.urandom(1000))
    with pytest.raises(OSError, match=CAP_ENV) as error:
        cached_copy(url)
    assert url in str(error.value) and "1,000" in str(error.value) and "\n" not in str(error.value)
    assert not entries(cache) and not temp_files(cache)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "inf", "nan", "1e400"])
def test_bad_cap_is_a_value_error(cache, monkeypatch, value):
    monkeypatch.setenv(CAP_ENV, value)
    with pytest.raises(ValueError, match=CAP_ENV):
        cached_copy(f"s3://{BUCKET}/model-cache-test/never-read.bin")


def test_eviction_removes_stale_temp_files(seaweed, cache):
    cache.mkdir(parents=True)
    stale = cache / f"{TMP_PREFIX}{uuid.uuid4().hex}-crashed.bin"
    live = cache / f"{TMP_PREFIX}{uuid.uuid4().hex}-downloading.bin"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    cached_copy(put(b"model"))
    assert not stale.exists()
    assert live.exists()  # a download still writing elsewhere is left alone


def test_concurrent_threads_download_once(seaweed, cache):
    data = os.urandom(16 * 2**20)
    url = put(data)
    barrier = threading.Barrier(4)

    def fetch(_: int) -> tuple[str, int]:
        barrier.wait()
        path = cached_copy(url)
        return path, os.stat(path).st_ino

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(fetch, range(4)))
    assert len(set(results)) == 1  # one path, one file (a second download would have replaced the inode)
    assert Path(results[0][0]).read_bytes() == data
    assert len(entries(cache)) == 1 and not temp_files(cache)


def _fetch_in_process(url: str, barrier, results) -> None:
    barrier.wait()
    results.put(cached_copy(url))


def test_concurrent_processes_share_one_copy(seaweed, cache):
    data = os.urandom(16 * 2**20)
    url = put(data)
    context = multiprocessing.get_context("spawn")  # fresh interpreters, like separate Dask workers
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_fetch_in_process, args=(url, barrier, results)) for _ in range(2)]
    for process in processes:
        process.start()
    paths = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert paths[0] == paths[1]
    assert Path(paths[0]).read_bytes() == data
    assert len(entries(cache)) == 1 and not temp_files(cache)
