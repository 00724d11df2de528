"""Read WARC/WET records from a byte range of a file, surviving corrupt input.

Common Crawl compresses each record as its own gzip member, so a file can be split at any byte
offset: a shard owns the members that *start* inside its range ``[start, end)``, reading the last
one past ``end`` if needed. Members are found by their gzip header and confirmed by decompressing
to ``WARC/``, which is also how reading resynchronises after garbage bytes. A member that does
not decompress is reported as ``corrupt_record``; a file that ends inside a member as
``truncated``. Nothing is skipped without being reported.

Uncompressed WARC files cannot be split this way and are read whole with fastwarc.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from fineflow import storage

GZIP_MAGIC = b"\x1f\x8b\x08"
_PIECE = 64 * 1024
_READ = 4 * 1024 * 1024

CORRUPT = "corrupt_record"
TRUNCATED = "truncated"
OVERSIZED = "oversized_record"


@dataclass(frozen=True)
class Member:
    offset: int  # byte offset of the record (its gzip member) in the file
    data: bytes | None  # the decompressed record, None when ``problem`` is set
    problem: str | None = None


class _Window:
    """A forward-only window over a file from ``start``: buffered reads, absolute offsets."""

    def __init__(self, url: str, start: int):
        self._handle = storage.open_input(url)
        self._handle.seek(start)
        self._buffer = bytearray()
        self._base = start
        self.at_eof = False

    def close(self) -> None:
        self._handle.close()

    def _fill(self, upto: int) -> None:
        while not self.at_eof and self._base + len(self._buffer) < upto:
            chunk = self._handle.read(_READ)
            if not chunk:
                self.at_eof = True
            self._buffer += chunk

    def slice(self, offset: int, length: int) -> bytes:
        self._fill(offset + length)
        lo = offset - self._base
        return bytes(self._buffer[lo : lo + length])

    def find(self, pattern: bytes, offset: int, limit: int) -> int:
        """First offset >= ``offset`` and < ``limit`` where ``pattern`` starts, or -1."""
        while True:
            self._fill(offset + _READ)
            lo = offset - self._base
            hit = self._buffer.find(pattern, lo)
            if hit >= 0:
                absolute = self._base + hit
                return absolute if absolute < limit else -1
            end = self._base + len(self._buffer)
            if self.at_eof or end >= limit:
                return -1
            offset = max(offset, end - len(pattern) + 1)

    def release(self, offset: int) -> None:
        """Drop buffered bytes before ``offset`` (they will not be needed again)."""
        drop = offset - self._base
        if drop > _READ:
            del self._buffer[:drop]
            self._base = offset


def _is_member_start(window: _Window, offset: int) -> bool:
    head = window.slice(offset, 4096)
    if not head.startswith(GZIP_MAGIC):
        return False
    try:
        out = zlib.decompressobj(31).decompress(head, 16)
    except zlib.error:
        return False
    return out.startswith(b"WARC/")


def _next_member_start(window: _Window, offset: int, limit: int) -> int:
    while True:
        candidate = window.find(GZIP_MAGIC, offset, limit)
        if candidate < 0 or _is_member_start(window, candidate):
            return candidate
        offset = candidate + 1


def _decompress_member(window: _Window, offset: int, max_bytes: int) -> tuple[bytes | None, int, str | None]:
    """Decompress the member at ``offset``: (data, compressed length, problem).

    An oversized member is still decompressed to its end (output discarded) to find the next one.
    """
    decompressor = zlib.decompressobj(31)
    parts: list[bytes] = []
    produced = 0
    position = offset
    while True:
        piece = window.slice(position, _PIECE)
        if not piece:
            return None, position - offset, TRUNCATED
        try:
            out = decompressor.decompress(piece)
        except zlib.error:
            return None, 0, CORRUPT
        produced += len(out)
        if produced <= max_bytes:
            parts.append(out)
        if decompressor.eof:
            position += len(piece) - len(decompressor.unused_data)
            if produced > max_bytes:
                return None, position - offset, OVERSIZED
            return b"".join(parts), position - offset, None
        position += len(piece)


def iter_gzip_members(url: str, start: int, end: int, max_record_bytes: int) -> Iterator[Member]:
    """Records whose gzip member starts in ``[start, end)``, and problems met on the way."""
    window = _Window(url, start)
    try:
        position = start
        if start == 0:
            if not _is_member_start(window, 0):
                if window.slice(0, 1):
                    yield Member(0, None, CORRUPT)  # garbage at the head of the file
                position = _next_member_start(window, 1, end)
        else:
            # The bytes before the first member here belong to a member that started earlier.
            position = _next_member_start(window, start, end)
        while 0 <= position < end:
            data, consumed, problem = _decompress_member(window, position, max_record_bytes)
            yield Member(position, data, problem)
            if problem == TRUNCATED:
                return
            if problem == CORRUPT:
                position = _next_member_start(window, position + 1, end)
            else:
                following = position + consumed
                if not window.slice(following, 1):
                    return  # end of file
                if _is_member_start(window, following):
                    position = following
                else:
                    # Bytes after a good member that are not a member: this shard owns that
                    # garbage (even past ``end``) because its last member ends where it begins.
                    yield Member(following, None, CORRUPT)
                    position = _next_member_start(window, following + 1, end)
            if position >= 0:
                window.release(position)
    finally:
        window.close()


def is_gzip(url: str) -> bool:
    with storage.open_input(url) as handle:
        return handle.read(3) == GZIP_MAGIC


def iter_plain_records(url: str) -> Iterator[Member]:
    """Records of an uncompressed WARC file, whole (fastwarc finds the record boundaries)."""
    from fastwarc.warc import ArchiveIterator

    with storage.open_input(url) as handle:
        iterator = ArchiveIterator(handle, parse_http=False, stream_detect=False)
        try:
            for record in iterator:
                offset = record.stream_pos
                buffer = io.BytesIO()
                record.write(buffer)
                yield Member(offset, buffer.getvalue())
        except OSError:
            yield Member(-1, None, CORRUPT)
