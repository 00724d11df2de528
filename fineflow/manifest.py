"""Step output layout and manifests: what a step has committed, and nothing else.

A step's output folder is ``<root>/<stage>/<step>/<fingerprint>/``. Each task writes its shard
as one object (``part-00007.parquet``, rejects under ``rejects/``); when every task of the step
has finished, ``_manifest.json`` listing the committed shards with their row counts, sizes and
hashes is written last. Readers trust only what a manifest lists, so a crashed task or a second
run writing the same storage never exposes a half-written or foreign artifact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fineflow import storage
from fineflow.fingerprint import canonical_json

MANIFEST_NAME = "_manifest.json"
LATEST_NAME = "_latest.json"
REJECTS_DIR = "rejects"


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


@dataclass(frozen=True)
class StepLocation:
    root: str
    stage: str
    step: str
    fingerprint: str

    @property
    def step_dir(self) -> str:
        return storage.join(self.root, self.stage, self.step)

    @property
    def folder(self) -> str:
        return storage.join(self.step_dir, self.fingerprint)

    @property
    def rejects_folder(self) -> str:
        return storage.join(self.folder, REJECTS_DIR)

    @property
    def manifest_url(self) -> str:
        return storage.join(self.folder, MANIFEST_NAME)

    def shard_url(self, shard: int) -> str:
        return storage.join(self.folder, shard_name(shard))

    def rejects_url(self, shard: int) -> str:
        return storage.join(self.rejects_folder, shard_name(shard))

    def committed_shards(self) -> set[int]:
        """Shard numbers whose output object exists (one listing call)."""
        shards = set()
        for name in storage.list_names(self.folder):
            if name.startswith("part-") and name.endswith(".parquet"):
                shards.add(int(name[len("part-") : -len(".parquet")]))
        return shards


def write_manifest(location: StepLocation, components: dict[str, Any], shard_results: list[dict]) -> dict:
    """Commit a step: list its shards (sorted) and totals, written last and atomically."""
    shards = sorted(shard_results, key=lambda r: r["shard"])
    manifest = {
        "stage": location.stage,
        "step": location.step,
        "fingerprint": location.fingerprint,
        "components": components,
        "shards": [
            {
                "shard": r["shard"],
                "file": r["output"]["file"] if r.get("output") else None,
                "rows": r["output"]["rows"] if r.get("output") else 0,
                "bytes": r["output"]["bytes"] if r.get("output") else 0,
                "sha256": r["output"]["sha256"] if r.get("output") else None,
                "rejects": r.get("rejects"),
                "stats": r.get("stats", {}),
            }
            for r in shards
        ],
    }
    _write_if_changed(location.manifest_url, json.dumps(manifest, indent=1, sort_keys=True).encode())
    latest = {"fingerprint": location.fingerprint, "components": components}
    _write_if_changed(storage.join(location.step_dir, LATEST_NAME), canonical_json(latest).encode())
    return manifest


def _write_if_changed(url: str, data: bytes) -> None:
    """A fully cached re-run commits the same manifest: leave the object (and its date) alone."""
    try:
        if storage.read_bytes(url) == data:
            return
    except FileNotFoundError:
        pass
    storage.write_bytes(url, data)


def read_manifest(folder: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(storage.join(folder, MANIFEST_NAME)))
    except FileNotFoundError:
        return None


def read_latest(location: StepLocation) -> dict | None:
    try:
        return json.loads(storage.read_bytes(storage.join(location.step_dir, LATEST_NAME)))
    except FileNotFoundError:
        return None


def committed_files(folder: str, rejects: bool = False) -> list[str]:
    """URLs of the shard files a manifest lists (documents, or rejects with ``rejects=True``).

    ``folder`` may also be a step's ``rejects/`` folder, as stage summaries name it.
    """
    if folder.rstrip("/").endswith("/" + REJECTS_DIR) and read_manifest(folder) is None:
        folder, rejects = folder.rstrip("/").rsplit("/", 1)[0], True
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder} has no {MANIFEST_NAME}: the step never completed there")
    files = []
    for entry in manifest["shards"]:
        if rejects:
            if entry.get("rejects") and entry["rejects"].get("rows"):
                files.append(storage.join(folder, REJECTS_DIR, entry["rejects"]["file"]))
        elif entry.get("file"):
            files.append(storage.join(folder, entry["file"]))
    return files
