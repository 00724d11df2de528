"""What a URL given to a reader (``fineflow inspect``) names, checked before anything is read.

Readers see committed files only: a step folder through its manifest (documents and rejects
never mixed), each file checked against the manifest's sha256 when read. Everything else that
people point readers at by mistake gets a one-line explanation instead of a traceback.
"""

from __future__ import annotations

import posixpath

from fineflow import storage
from fineflow.manifest import (
    ARTIFACTS_DIR,
    DATA_DIR,
    MANIFEST_NAME,
    REJECTS_DIR,
    CommittedFile,
    OldLayout,
    committed_entries,
    read_manifest,
    step_folder_of,
)

PARQUET_MAGIC = b"PAR1"


class NotReadable(ValueError):
    """The URL does not name committed documents; the message says what it is instead."""


def _is_folder(url: str) -> bool:
    fs, path = storage.filesystem(url)
    return fs.isdir(path)


def _parquet_check(url: str) -> None:
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as handle:
        head = handle.read(4)
    if head != PARQUET_MAGIC:
        raise NotReadable(
            f"{url} is not a Parquet file (a WARC or other input?): inspect reads stage outputs; run a pipeline over it first"
        )


def files_to_read(url: str, rejects: bool = False, uncommitted: bool = False) -> tuple[list[CommittedFile], list[str]]:
    """The files to read for ``url``, and warnings. Raises ``NotReadable`` with the reason."""
    url = storage.normalize(url)
    fs, path = storage.filesystem(url)
    if not fs.exists(path) and not any(ch in url for ch in "*?["):
        raise NotReadable(f"{url} does not exist")
    name = posixpath.basename(url.rstrip("/"))
    if any(ch in url for ch in "*?["):
        if rejects:
            raise NotReadable("--rejects needs a step's output folder, not a glob")
        return _loose_files(storage.expand(url), url), [f"{url}: files read as they are, without a manifest to check them against"]
    if not _is_folder(url):
        _parquet_check(url)
        return [CommittedFile(url, 0, None, None)], [f"{url} is one file: read as it is, without a manifest to check it against"]
    try:
        if read_manifest(url) is not None:
            if name == ARTIFACTS_DIR:
                raise NotReadable(f"{url} holds a step's artifacts, not documents: `fineflow inspect {step_folder_of(url)}` lists them")
            return committed_entries(url, rejects=rejects), []
    except OldLayout as error:
        raise NotReadable(str(error)) from None
    names = storage.list_names(url)
    if name == "_runs" or posixpath.basename(posixpath.dirname(url)) == "_runs":
        raise NotReadable(f"{url} holds run records, not documents: `fineflow report` shows a run, its summary.json names its outputs")
    if names & {"_runs", "_prefect", "_meta"}:
        raise NotReadable(
            f"{url} is a storage root: pass a step's output folder (<root>/<stage>/<step>/<fingerprint>), "
            "as `fineflow run` prints it and the run's summary.json names it"
        )
    step = step_folder_of(url)
    data_names = storage.list_names(storage.join(step, DATA_DIR)) if DATA_DIR in names or name == DATA_DIR else set()
    parts = sorted(n for n in data_names if n.startswith("part-") and n.endswith(".parquet"))
    if parts:  # a step folder whose manifest was never written: a failed or running step
        if not uncommitted:
            raise NotReadable(
                f"{url} is uncommitted: it has no {MANIFEST_NAME} (its step failed or is still running), so its files "
                "are not trusted; re-run the pipeline, or pass --uncommitted to look anyway"
            )
        folder = storage.join(step, REJECTS_DIR if rejects or name == REJECTS_DIR else DATA_DIR)
        files = sorted(n for n in storage.list_names(folder) if n.startswith("part-") and n.endswith(".parquet"))
        return (
            [CommittedFile(storage.join(folder, n), 0, None, None) for n in files],
            [f"{url} is uncommitted (no {MANIFEST_NAME}): showing its files as they are"],
        )
    loose = sorted(storage.join(url, n) for n in names if n.endswith(".parquet"))
    if not loose:
        raise NotReadable(f"{url} holds no Parquet files and no {MANIFEST_NAME}")
    return _loose_files(loose, url), []


def _loose_files(urls: list[str], pattern: str) -> list[CommittedFile]:
    """Files named directly (a glob, or a folder of Parquet files fineflow did not write)."""
    urls = [
        u for u in urls
        if f"/{REJECTS_DIR}/" not in u and f"/{ARTIFACTS_DIR}/" not in u and not posixpath.basename(u).startswith(".tmp-")
    ]
    if not urls:
        raise NotReadable(f"{pattern} matches no Parquet file")
    for url in urls:
        _parquet_check(url)
    return [CommittedFile(url, 0, None, None) for url in urls]
