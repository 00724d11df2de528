"""Content fingerprints: the one place that decides when work can be reused.

A step's fingerprint hashes its stage and step name, an explicit code version (fineflow's
version, the step's own version, the versions of the libraries it uses and the hashes of model
or list files), its resolved parameters and the fingerprints of its inputs. Raw input files
enter by path, size and content hash, never by mtime or ETag: those only decide whether a
memoised content hash can be reused without reading the file again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fineflow import __version__, storage

FINGERPRINT_CHARS = 20


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any, chars: int = FINGERPRINT_CHARS) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:chars]


def library_versions(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    versions = {}
    for name in sorted(names):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not-installed"
    return versions


@dataclass(frozen=True)
class Fingerprint:
    """A fingerprint and the named parts it was computed from (kept to explain cache misses)."""

    components: dict[str, Any]
    value: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", digest(self.components))

    def changed_components(self, previous: dict[str, Any]) -> list[str]:
        """Dotted names of the parts that differ from an earlier fingerprint's components."""
        return _diff(previous, self.components, prefix="")


def _diff(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changed = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                changed.append(name)
            else:
                changed.extend(_diff(old[key], new[key], name))
        return changed
    return [] if canonical_json(old) == canonical_json(new) else [prefix or "(all)"]


def step_fingerprint(
    *,
    stage: str,
    step: str,
    step_version: str,
    params: dict[str, Any],
    inputs: dict[str, Any],
    libraries: tuple[str, ...] = (),
    resources: dict[str, str] | None = None,
) -> Fingerprint:
    from fineflow.manifest import LAYOUT  # (manifest imports this module)

    return Fingerprint(
        {
            "stage": stage,
            "step": step,
            "code": {
                "fineflow": __version__,
                "layout": LAYOUT,  # where a step's files go: a new layout is a new folder, never a misread
                "step": step_version,
                "libraries": library_versions(libraries),
                "resources": dict(sorted((resources or {}).items())),
            },
            "params": params,
            "inputs": inputs,
        }
    )


def file_content_hash(url: str, memo_root: str | None = None) -> dict[str, Any]:
    """``{"path", "size", "blake2b"}`` of a file; the hash is memoised under ``memo_root``.

    The memo is keyed by path, size and the storage's change token (mtime or ETag), so an
    unchanged file is read once; a changed file always gets a fresh content hash.
    """
    record = input_record(url, memo_root)
    return {"path": url, "size": record["size"], "blake2b": record["blake2b"]}


def input_record(url: str, memo_root: str | None = None) -> dict[str, Any]:
    """A raw input file's record: ``{"path", "size", "change_token", "blake2b"}``, memoised under
    ``memo_root`` (``<root>/_meta/input-hashes/``) while path, size and change token stay the same."""
    fs, path = storage.filesystem(url)
    info = fs.info(path)
    size = int(info["size"])
    change_token = storage.change_token(info)
    memo_url = None
    if memo_root is not None:
        memo_url = storage.join(memo_root, "_meta", "input-hashes", digest(url, 32) + ".json")
        try:
            memo = json.loads(storage.read_bytes(memo_url))
            if memo["path"] == url and memo["size"] == size and memo["change_token"] == change_token:
                return {"path": url, "size": size, "change_token": change_token, "blake2b": memo["blake2b"]}
        except (FileNotFoundError, KeyError, ValueError):
            pass
    hasher = hashlib.blake2b(digest_size=20)
    for chunk in storage.iter_chunks(url):
        hasher.update(chunk)
    record = {"path": url, "size": size, "change_token": change_token, "blake2b": hasher.hexdigest()}
    if memo_url is not None:
        storage.write_bytes(memo_url, canonical_json(record).encode())
    return record
