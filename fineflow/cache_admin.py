"""The response caches under ``<storage>/_cache/``: what namespaces they hold, and dropping them.

Stages keep answers they paid for (LLM annotations, translated segments) in namespace folders,
``_cache/<family>/<digest>/``, shared by runs and stages; gc of step folders never touches them.
A namespace that holds wrong answers (a misconfigured server, a prompt being tuned) or that no
config will ask again is removed here: by name, by model or server, or by age.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pyarrow.parquet as pq

from fineflow import storage

CACHE_DIR = "_cache"
RECORD = "namespace.json"  # fineflow.llm.NAMESPACE_RECORD: what the namespace's answers depend on


@dataclass
class Namespace:
    family: str  # llm, translate, ...
    name: str
    url: str
    files: int
    bytes: int
    answers: int
    last_written: float  # POSIX time of its newest file (0: empty)
    record: dict | None  # None: written before namespaces described themselves

    @property
    def model(self) -> str:
        return str((self.record or {}).get("model", "?"))

    @property
    def server(self) -> str:
        decoding = (self.record or {}).get("decoding") or {}
        return str(decoding.get("server", "?"))


def list_namespaces(root: str) -> list[Namespace]:
    """Every namespace under ``<root>/_cache/``, newest first; answers counted from the Parquet
    footers (no data read)."""
    found = []
    cache = storage.join(root, CACHE_DIR)
    for family in sorted(storage.list_names(cache)):
        for name in sorted(storage.list_names(storage.join(cache, family))):
            url = storage.join(cache, family, name)
            entries = storage.list_entries(url)
            if not entries:
                continue
            answers = 0
            for file in entries:
                if file.endswith(".parquet"):
                    with storage.open_input(storage.join(url, file), block_size=64 * 1024) as handle:
                        answers += pq.ParquetFile(handle).metadata.num_rows
            record = None
            if RECORD in entries:
                try:
                    record = json.loads(storage.read_bytes(storage.join(url, RECORD)))
                except ValueError:
                    record = None
            found.append(Namespace(
                family=family, name=name, url=url, files=len(entries), bytes=sum(e["size"] for e in entries.values()),
                answers=answers, last_written=max(e["modified"] for e in entries.values()), record=record,
            ))
    return sorted(found, key=lambda n: -n.last_written)


def select(
    namespaces: list[Namespace],
    names: tuple[str, ...] = (),
    model: str | None = None,
    server: str | None = None,
    older_than_days: float | None = None,
    now: float | None = None,
) -> list[Namespace]:
    """The namespaces matching every criterion given (a name matches its digest or a prefix of it
    of at least 6 characters, as ``list`` shows them)."""
    if not (names or model or server or older_than_days is not None):
        raise ValueError("name namespaces, or give --model, --server or --older-than-days: dropping every cache "
                         "takes an explicit choice")
    for name in names:
        if len(name) < 6:
            raise ValueError(f"namespace {name!r}: give at least 6 characters of its name")
    now = time.time() if now is None else now
    chosen = []
    for space in namespaces:
        if names and not any(space.name.startswith(n) for n in names):
            continue
        if model is not None and space.model != model:
            continue
        if server is not None and server not in space.server:
            continue
        if older_than_days is not None and now - space.last_written < older_than_days * 86400:
            continue
        chosen.append(space)
    return chosen


def drop(space: Namespace) -> None:
    """Remove a namespace folder. An interrupted drop leaves some batches: answers still keyed
    right, which a later run may reuse, never a wrong one."""
    storage.remove(storage.join(space.url, RECORD))
    storage.remove(space.url, recursive=True)


def describe(space: Namespace) -> dict:
    """One row for the CLI and JSON output."""
    age_days = (time.time() - space.last_written) / 86400 if space.last_written else None
    return {"family": space.family, "namespace": space.name, "model": space.model, "server": space.server,
            "answers": space.answers, "files": space.files, "bytes": space.bytes,
            "last_written_days_ago": None if age_days is None else round(age_days, 1), "url": space.url}

