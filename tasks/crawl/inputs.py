"""Crawl inputs: expand paths, globs and Common Crawl listings, describe files, plan shards.

The shard plan depends only on the input files and ``shard_bytes``, never on the number of
workers, so a re-run on another cluster reuses the same shards (and their cached results).
"""

from __future__ import annotations

import gzip
import hashlib

from fineflow import storage
from fineflow.fingerprint import file_content_hash
from fineflow.tasks.crawl.warc import EMPTY, SPLITTABLE, detect_format


class InputError(ValueError):
    pass


def listing_paths(listing: str, base_url: str, limit: int | None, sample: float | None, seed: int) -> list[str]:
    """Files named in a Common Crawl ``warc.paths.gz``/``wet.paths.gz`` listing.

    Sampling keeps a path when a seeded hash of it falls under ``sample``: the same paths on
    every run and machine, independent of the listing's order.
    """
    raw = storage.read_bytes(listing)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    paths = [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]
    if sample is not None:
        threshold = int(sample * 2**64)
        paths = [p for p in paths if int.from_bytes(hashlib.sha256(f"{seed}:{p}".encode()).digest()[:8]) < threshold]
    if limit is not None:
        paths = paths[:limit]
    base = base_url.rstrip("/")
    return [p if "://" in p else f"{base}/{p.lstrip('/')}" for p in paths]


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def expand_inputs(patterns: list[str]) -> tuple[list[str], list[str]]:
    """The files the patterns name, and warnings.

    A missing file, or patterns that match nothing at all, are errors; one glob matching
    nothing among others that match is a warning (a weekly listing may have an empty day).
    """
    files: list[str] = []
    warnings: list[str] = []
    for pattern in patterns:
        matches = storage.expand(pattern)
        if not matches:
            if not _is_glob(pattern):
                raise InputError(f"inputs: {pattern} does not exist")
            warnings.append(f"inputs: the glob {pattern} matches no file")
        files.extend(matches)
    if not files:
        raise InputError(f"inputs: {', '.join(patterns)} match no file")
    return sorted(set(files)), warnings


def describe_files(files: list[str], memo_root: str | None, content_hash: bool) -> list[dict]:
    """Path, size, format (sniffed from the content) and, unless the files are immutable by name,
    content hash."""
    described = []
    for url in files:
        if content_hash:
            entry = file_content_hash(url, memo_root)
        else:
            entry = {"path": url, "size": storage.size(url)}
        entry["format"] = detect_format(url) if entry["size"] else EMPTY
        described.append(entry)
    return described


def plan_shards(files: list[dict], shard_bytes: int) -> list[dict]:
    """Split gzip-per-record files into byte ranges of about ``shard_bytes``; others stay whole.

    Empty files get no shard (the stage warns about them)."""
    shards = []
    for entry in sorted(files, key=lambda e: e["path"]):
        size, fmt = entry["size"], entry["format"]
        if size == 0 or fmt == EMPTY:
            continue
        pieces = max(1, round(size / shard_bytes)) if fmt in SPLITTABLE else 1
        bounds = [size * i // pieces for i in range(pieces + 1)]
        for start, end in zip(bounds, bounds[1:]):
            shards.append({"path": entry["path"], "start": start, "end": end, "format": fmt})
    for index, shard in enumerate(shards):
        shard["shard"] = index
    return shards


def input_warnings(files: list[dict]) -> list[str]:
    """What a user should hear about the inputs before reading them."""
    return [f"inputs: {entry['path']} is empty" for entry in files if entry["format"] == EMPTY]


def describe_inputs(files: list[dict], shard_bytes: int) -> dict:
    """The inputs for the summary: files and bytes by format, and which files are read whole."""
    formats: dict[str, int] = {}
    for entry in files:
        formats[entry["format"]] = formats.get(entry["format"], 0) + 1
    whole = [e for e in files if e["format"] not in SPLITTABLE and e["format"] != EMPTY and e["size"] > shard_bytes]
    return {
        "files": len(files),
        "bytes": sum(entry["size"] for entry in files),
        "formats": dict(sorted(formats.items())),
        # A gzip stream, zstd or uncompressed file cannot be split at byte offsets: one shard each,
        # however large (recompress with a gzip member per record to parallelise it).
        "one_shard_per_file": {"files": len(whole), "bytes": sum(e["size"] for e in whole), "first": [e["path"] for e in whole[:10]]},
    }
