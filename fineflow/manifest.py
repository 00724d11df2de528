"""Step output layout and manifests: what a step has committed, and nothing else.

A step's folder is ``<root>/<kind>/<step>/<fingerprint>/``. Each task writes its shard as one
object (``data/part-00007.parquet``; rejects under ``rejects/``, other files under ``artifacts/``),
then its result (rows, sizes, hashes, stats) as a receipt (``_receipts/part-00007.json``): a shard
with both is committed, so a resumed step skips it and still knows its result. When every task of the step has finished, ``_manifest.json`` listing the committed files with
their row counts, sizes and hashes is written last. Readers trust only what a manifest lists, so a crashed task or a second
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
from fineflow.counters import merge_counts
from fineflow.fingerprint import canonical_json

MANIFEST_NAME = "_manifest.json"
LATEST_NAME = "_latest.json"
LAYOUT = 2  # 2: documents in data/, rejects and artifacts beside it (1: shards beside the manifest)
DATA_DIR = "data"
REJECTS_DIR = "rejects"
ARTIFACTS_DIR = "artifacts"
RECEIPTS_DIR = "_receipts"  # a committed shard's result, written after its files
_PARTS = (DATA_DIR, REJECTS_DIR, ARTIFACTS_DIR)


class OldLayout(ValueError):
    """A step folder written by fineflow before layout 2: its files are not where readers look."""


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def step_folder_of(url: str) -> str:
    """The step folder of ``url``: the folder itself, or the step folder above its data/, rejects/
    or artifacts/ folder (summaries name data/ and rejects/)."""
    url = url.rstrip("/")
    head, _, tail = url.rpartition("/")
    return head if tail in _PARTS and head else url


def artifact_url_of(output_url: str, name: str) -> str:
    """Where a shard task commits artifact ``name``: its step folder's artifacts/ (from its shard URL)."""
    return storage.join(step_folder_of(output_url.rsplit("/", 1)[0]), ARTIFACTS_DIR, name)


@dataclass(frozen=True)
class StepLocation:
    root: str
    stage: str  # the stage kind: two stages of one kind with the same inputs and parameters share work
    step: str
    fingerprint: str

    @property
    def step_dir(self) -> str:
        return storage.join(self.root, self.stage, self.step)

    @property
    def folder(self) -> str:
        return storage.join(self.step_dir, self.fingerprint)

    @property
    def data_folder(self) -> str:
        """Only the step's output Parquet files: what dataset readers are pointed at."""
        return storage.join(self.folder, DATA_DIR)

    @property
    def rejects_folder(self) -> str:
        return storage.join(self.folder, REJECTS_DIR)

    @property
    def artifacts_folder(self) -> str:
        return storage.join(self.folder, ARTIFACTS_DIR)

    @property
    def manifest_url(self) -> str:
        return storage.join(self.folder, MANIFEST_NAME)

    def shard_url(self, shard: int) -> str:
        return storage.join(self.data_folder, shard_name(shard))

    def rejects_url(self, shard: int) -> str:
        return storage.join(self.rejects_folder, shard_name(shard))

    def artifact_url(self, name: str) -> str:
        return storage.join(self.artifacts_folder, name)

    @property
    def receipts_folder(self) -> str:
        return storage.join(self.folder, RECEIPTS_DIR)

    def receipt_url(self, shard: int) -> str:
        return storage.join(self.receipts_folder, f"part-{shard:05d}.json")

    def write_receipt(self, result: dict) -> None:
        """Record a shard's result once its files are written: the shard is now committed."""
        storage.write_bytes(self.receipt_url(result["shard"]), json.dumps(result, sort_keys=True).encode())

    def read_receipt(self, shard: int) -> dict | None:
        try:
            return json.loads(storage.read_bytes(self.receipt_url(shard)))
        except (FileNotFoundError, ValueError):  # a damaged receipt: the shard counts as not committed
            return None

    def latest_url(self, name: str) -> str:
        """The last fingerprint stage ``name`` planned for this step (what ``--dry-run`` compares with)."""
        return storage.join(self.step_dir, f"_latest.{name}.json")

    def committed_shards(self) -> set[int]:
        """Shard numbers whose output object exists (one listing call)."""
        return {shard for shard in (_shard_number(name) for name in storage.list_names(self.data_folder)) if shard is not None}

    def intact_shards(self) -> set[int]:
        """Shards whose files (output, rejects, artifacts) exist and still match the manifest, when
        there is one. Without a manifest (a step that has not finished) a shard needs its output
        and its receipt, and the output the size the receipt says."""
        return set(self.committed_results())

    def committed_results(self) -> dict[int, dict]:
        """The shard task results of the intact shards (see ``intact_shards``): from the manifest
        when the step finished, else from the receipts of a step that was interrupted."""
        listing = storage.list_entries(self.data_folder)
        manifest = read_manifest(self.folder)
        if manifest is None:
            return self._receipted(listing)
        entries = {entry["shard"]: entry for entry in manifest["shards"]} if manifest else {}
        rejects_listing = storage.list_entries(self.rejects_folder) if any(e.get("rejects") for e in entries.values()) else {}
        artifacts_listing = storage.list_entries(self.artifacts_folder) if any(e.get("artifacts") for e in entries.values()) else {}
        intact = {}
        for name, found in listing.items():
            shard = _shard_number(name)
            entry = entries.get(shard)
            if entry is not None and _matches(storage.join(self.data_folder, name), found, entry):
                rejects = entry.get("rejects")
                if rejects and not _matches(self.rejects_url(shard), rejects_listing.get(rejects["file"]), rejects):
                    continue
                if all(
                    _matches(self.artifact_url(a["file"]), artifacts_listing.get(a["file"]), a) for a in entry.get("artifacts") or []
                ):
                    intact[shard] = _result_of_entry(entry)
        if intact and manifest.get("samples"):  # the step's merged samples ride on one shard's stats
            first = intact[min(intact)]
            first["stats"] = merge_counts([first["stats"], manifest["samples"]])
        return intact

    def _receipted(self, listing: dict[str, dict]) -> dict[int, dict]:
        receipts = storage.list_names(self.receipts_folder)
        results = {}
        for name, found in listing.items():
            shard = _shard_number(name)
            if shard is None or f"part-{shard:05d}.json" not in receipts:
                continue  # no receipt: the task died between its files and its receipt
            result = self.read_receipt(shard)
            if result is not None and (result.get("output") or {}).get("bytes") == found["size"]:
                results[shard] = result
        return results


def _samples_of(stats: dict) -> dict:
    """The ranked samples in a shard's stats (list values: report examples, fineflow.examples), nested as found."""
    found = {}
    for key, value in stats.items():
        if isinstance(value, list):
            found[key] = value
        elif isinstance(value, dict) and (inner := _samples_of(value)):
            found[key] = inner
    return found


def _without_samples(stats: dict) -> dict:
    """A shard's stats without its samples (the counters)."""
    kept = {}
    for key, value in stats.items():
        if isinstance(value, list):
            continue
        if isinstance(value, dict):
            inner = _without_samples(value)
            if inner or not _samples_of(value):
                kept[key] = inner
            continue
        kept[key] = value
    return kept


def _result_of_entry(entry: dict) -> dict:
    """A shard task's result as the manifest recorded it (what its receipt said)."""

    def plain(info: dict | None) -> dict | None:
        return {key: value for key, value in info.items() if key != "token"} if info else None

    result = {
        "shard": entry["shard"],
        "output": {"file": entry["file"], "rows": entry["rows"], "bytes": entry["bytes"], "sha256": entry["sha256"]},
        "rejects": plain(entry.get("rejects")),
        "stats": entry.get("stats", {}),
    }
    if entry.get("artifacts"):
        result["artifacts"] = [plain(info) for info in entry["artifacts"]]
    return result


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


def write_manifest(location: StepLocation, components: dict[str, Any], shard_results: list[dict], name: str | None = None) -> dict:
    """Commit a step: list its shards (sorted), their rejects and artifacts, written last and atomically.

    ``name`` is the pipeline stage that ran it: its ``_latest`` record is what ``--dry-run`` compares with.
    """
    shards = sorted(shard_results, key=lambda r: r["shard"])
    tokens = {f"{DATA_DIR}/{n}": f["token"] for n, f in storage.list_entries(location.data_folder).items()}
    if any(r.get("rejects") for r in shards):
        tokens |= {f"{REJECTS_DIR}/{n}": f["token"] for n, f in storage.list_entries(location.rejects_folder).items()}
    if any(r.get("artifacts") for r in shards):
        tokens |= {f"{ARTIFACTS_DIR}/{n}": f["token"] for n, f in storage.list_entries(location.artifacts_folder).items()}

    def listed(info: dict | None, folder: str) -> dict | None:
        return {**info, "token": tokens.get(f"{folder}/{info['file']}")} if info else None

    manifest = {
        "layout": LAYOUT,
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
                "token": tokens.get(f"{DATA_DIR}/{r['output']['file']}") if r.get("output") else None,
                "rejects": listed(r.get("rejects"), REJECTS_DIR),
                **({"artifacts": [listed(a, ARTIFACTS_DIR) for a in r["artifacts"]]} if r.get("artifacts") else {}),
                "stats": _without_samples(r.get("stats", {})),
            }
            for r in shards
        ],
    }
    samples = merge_counts([_samples_of(r.get("stats", {})) for r in shards])
    if samples:  # merged once, not per shard: the manifest stays small however many shards there are
        manifest["samples"] = samples
    _write_if_changed(location.manifest_url, json.dumps(manifest, indent=1, sort_keys=True).encode())
    latest = {"fingerprint": location.fingerprint, "components": components}
    _write_if_changed(location.latest_url(name or location.stage), canonical_json(latest).encode())
    return manifest


def _write_if_changed(url: str, data: bytes) -> None:
    """A fully cached re-run commits the same manifest: leave the object (and its date) alone."""
    try:
        if storage.read_bytes(url) == data:
            return
    except FileNotFoundError:
        pass
    storage.write_bytes(url, data)


def read_raw_manifest(folder: str) -> dict | None:
    """A step folder's manifest whatever its layout (gc removes old folders too)."""
    try:
        return json.loads(storage.read_bytes(storage.join(step_folder_of(folder), MANIFEST_NAME)))
    except FileNotFoundError:
        return None


def read_manifest(folder: str) -> dict | None:
    """The manifest of a step folder (or of the step above a data/, rejects/ or artifacts/ folder)."""
    manifest = read_raw_manifest(folder)
    if manifest is not None and manifest.get("layout") != LAYOUT:
        raise OldLayout(
            f"{step_folder_of(folder)} was written by an older fineflow (documents beside the manifest, no data/ "
            "folder) and is not read as it is: re-run its pipeline (new outputs get new folders) and remove the old "
            "ones with `fineflow gc`"
        )
    return manifest


def read_latest(location: StepLocation, name: str | None = None) -> dict | None:
    try:
        return json.loads(storage.read_bytes(location.latest_url(name or location.stage)))
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

    def difference(self) -> str | None:
        """How the stored file differs from its manifest entry (missing, size, sha256), or None;
        streamed, so a large artifact (a model) is hashed without holding it in memory."""
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in storage.iter_chunks(self.url):
                digest.update(chunk)
                size += len(chunk)
        except FileNotFoundError:
            return "missing"
        if self.bytes is not None and size != self.bytes:
            return f"{size:,} bytes, the manifest says {self.bytes:,}"
        if self.sha256 and digest.hexdigest() != self.sha256:
            return f"content differs: sha256 {digest.hexdigest()[:16]}"
        return None


def committed_entries(folder: str, rejects: bool = False) -> list[CommittedFile]:
    """The shard files a manifest lists: documents, or rejects with ``rejects=True`` (or when
    ``folder`` is the step's rejects/ folder)."""
    rejects = rejects or folder.rstrip("/").endswith("/" + REJECTS_DIR)
    step = step_folder_of(folder)
    manifest = read_manifest(step)
    if manifest is None:
        raise FileNotFoundError(f"{folder} has no {MANIFEST_NAME}: the step never completed there")
    files = []
    for entry in manifest["shards"]:
        if rejects:
            info = entry.get("rejects")
            if info:
                files.append(CommittedFile(storage.join(step, REJECTS_DIR, info["file"]), info["rows"], info.get("bytes"), info.get("sha256")))
        elif entry.get("file"):
            files.append(CommittedFile(storage.join(step, DATA_DIR, entry["file"]), entry["rows"], entry.get("bytes"), entry.get("sha256")))
    return files


def committed_artifacts(folder: str) -> list[CommittedFile]:
    """The artifacts a step's manifest lists (tokenizers, models, assignments, reports ...)."""
    step = step_folder_of(folder)
    manifest = read_manifest(step)
    if manifest is None:
        raise FileNotFoundError(f"{folder} has no {MANIFEST_NAME}: the step never completed there")
    return [
        CommittedFile(storage.join(step, ARTIFACTS_DIR, info["file"]), 0, info.get("bytes"), info.get("sha256"))
        for entry in manifest["shards"]
        for info in entry.get("artifacts") or []
    ]


def committed_files(folder: str, rejects: bool = False) -> list[str]:
    """URLs of the shard files a manifest lists (documents, or rejects with ``rejects=True``)."""
    return [entry.url for entry in committed_entries(folder, rejects)]


def verify_folder(folder: str) -> tuple[int, list[str]]:
    """Read every file a step's manifest lists and check its sha256: (files checked, problems)."""
    if read_manifest(folder) is None:
        return 0, [f"{folder}: no {MANIFEST_NAME} (the step never completed)"]
    entries = committed_entries(folder) + committed_entries(folder, rejects=True) + committed_artifacts(folder)
    problems = []
    for entry in entries:
        try:
            entry.read()
        except DamagedFile as error:
            problems.append(str(error).split(";")[0])
    return len(entries), problems
