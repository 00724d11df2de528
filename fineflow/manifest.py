"""Step output layout and manifests: what a step has committed, and nothing else.

A step's output folder is ``<root>/<stage>/<step>/<fingerprint>/``. Each task writes its shard
as one object (``part-00007.parquet``, rejects under ``rejects/``); when every task of the step
has finished, ``_manifest.json`` listing the committed shards with their row counts, sizes and
hashes is written last. Readers trust only what a manifest lists, so a crashed task or a second
run writing the same storage never exposes a half-written or foreign artifact.

Committed files are also checked against their manifest: cheaply before a cache hit (size and
change token from one listing; a file whose token changed but not its size is hashed), fully
by ``fineflow verify`` and by ``fineflow inspect`` (sha256 of what it reads). Stages read their
upstream after its step was checked this way in the same run.
"""

from __future__ import annotations

import hashlib
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
        return {shard for shard in (_shard_number(name) for name in storage.list_names(self.folder)) if shard is not None}

    def intact_shards(self) -> set[int]:
        """Shards whose files exist and still match the manifest, when there is one.

        Without a manifest (a step that has not finished) existence is all there is to check.
        """
        listing = storage.list_entries(self.folder)
        manifest = read_manifest(self.folder)
        entries = {entry["shard"]: entry for entry in manifest["shards"]} if manifest else {}
        rejects_listing = storage.list_entries(self.rejects_folder) if any(e.get("rejects") for e in entries.values()) else {}
        intact = set()
        for name, found in listing.items():
            shard = _shard_number(name)
            if shard is None:
                continue
            entry = entries.get(shard)
            if entry is None and manifest is None:
                intact.add(shard)
            elif entry is not None and _matches(storage.join(self.folder, name), found, entry):
                rejects = entry.get("rejects")
                if not rejects or _matches(self.rejects_url(shard), rejects_listing.get(rejects["file"]), rejects):
                    intact.add(shard)
        return intact


def _shard_number(name: str) -> int | None:
    if name.startswith("part-") and name.endswith(".parquet"):
        return int(name[len("part-") : -len(".parquet")])
    return None


def _matches(url: str, found: dict | None, entry: dict) -> bool:
    """A listed file against its manifest entry: size, then change token; a new token with the
    same size (a copied store, a rewrite in place) is settled by the content's sha256."""
    if found is None or found["size"] != entry.get("bytes"):
        return False
    if entry.get("token") == found["token"] or not entry.get("sha256"):
        return True  # (a manifest written before tokens were recorded is hashed once, below)
    try:
        return hashlib.sha256(storage.read_bytes(url)).hexdigest() == entry["sha256"]
    except FileNotFoundError:
        return False


def write_manifest(location: StepLocation, components: dict[str, Any], shard_results: list[dict]) -> dict:
    """Commit a step: list its shards (sorted) and totals, written last and atomically."""
    shards = sorted(shard_results, key=lambda r: r["shard"])
    tokens = {name: found["token"] for name, found in storage.list_entries(location.folder).items()}
    if any(r.get("rejects") for r in shards):
        tokens |= {f"{REJECTS_DIR}/{n}": f["token"] for n, f in storage.list_entries(location.rejects_folder).items()}
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
                "token": tokens.get(r["output"]["file"]) if r.get("output") else None,
                "rejects": {**r["rejects"], "token": tokens.get(f"{REJECTS_DIR}/{r['rejects']['file']}")} if r.get("rejects") else None,
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


class DamagedFile(RuntimeError):
    """A committed file is missing or no longer matches its manifest."""


@dataclass(frozen=True)
class CommittedFile:
    url: str
    rows: int
    bytes: int | None
    sha256: str | None

    def read(self) -> bytes:
        """The file's bytes, checked against the manifest's sha256."""
        try:
            data = storage.read_bytes(self.url)
        except FileNotFoundError:
            raise DamagedFile(f"{self.url} is missing although its step's manifest lists it") from None
        if self.sha256 and hashlib.sha256(data).hexdigest() != self.sha256:
            raise DamagedFile(
                f"{self.url} is damaged: its content ({len(data):,} bytes) does not match the sha256 in its manifest; "
                "`fineflow verify` lists every damaged file, and a re-run of the pipeline recomputes them"
            )
        return data


def _step_folder(folder: str, rejects: bool) -> tuple[str, bool]:
    """``folder`` may also be a step's ``rejects/`` folder, as stage summaries name it."""
    if folder.rstrip("/").endswith("/" + REJECTS_DIR) and read_manifest(folder) is None:
        return folder.rstrip("/").rsplit("/", 1)[0], True
    return folder, rejects


def committed_entries(folder: str, rejects: bool = False) -> list[CommittedFile]:
    """The shard files a manifest lists (documents, or rejects with ``rejects=True``)."""
    folder, rejects = _step_folder(folder, rejects)
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder} has no {MANIFEST_NAME}: the step never completed there")
    files = []
    for entry in manifest["shards"]:
        if rejects:
            info = entry.get("rejects")
            if info and info.get("rows"):
                files.append(CommittedFile(storage.join(folder, REJECTS_DIR, info["file"]), info["rows"], info.get("bytes"), info.get("sha256")))
        elif entry.get("file"):
            files.append(CommittedFile(storage.join(folder, entry["file"]), entry["rows"], entry.get("bytes"), entry.get("sha256")))
    return files


def committed_files(folder: str, rejects: bool = False) -> list[str]:
    """URLs of the shard files a manifest lists (documents, or rejects with ``rejects=True``)."""
    return [entry.url for entry in committed_entries(folder, rejects)]


def verify_folder(folder: str) -> tuple[int, list[str]]:
    """Read every file a step's manifest lists and check its sha256: (files checked, problems)."""
    if read_manifest(folder) is None:
        return 0, [f"{folder}: no {MANIFEST_NAME} (the step never completed)"]
    entries = committed_entries(folder) + committed_entries(folder, rejects=True)
    problems = []
    for entry in entries:
        try:
            entry.read()
        except DamagedFile as error:
            problems.append(str(error).split(";")[0])
    return len(entries), problems
