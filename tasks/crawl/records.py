"""Split an uncompressed WARC byte stream into records, trusting no ``Content-Length`` blindly.

A record is ``WARC/x.y`` + headers + a blank line + ``Content-Length`` bytes + ``\\r\\n\\r\\n``.
A record is accepted only when its declared length lands on that trailer (or, where the stream
ends, on a shorter run of line breaks). When it does not,
the length lies: the record is a ``corrupt_record`` and reading resynchronises on the next
``WARC/<version>`` line after the record's headers, so a lying length can neither
swallow the records after it nor leak their bytes into its own text. Every byte of the stream
is reported once: as a record, or inside a problem span (garbage, corrupt, truncated, oversized).

The stream comes from a ``read()`` function; ``reopen(position)`` gives a fresh one positioned
at ``position`` for the rare rewind (a lying length beyond the buffered window).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

CORRUPT = "corrupt_record"
TRUNCATED = "truncated"
OVERSIZED = "oversized_record"

_CHUNK = 1 << 20
_MAX_HEADER = 1 << 20  # WARC headers longer than this are not headers
_START = b"WARC/"
VERSION_LINE = re.compile(rb"WARC/\d+\.\d+\r?\n")  # a record's first line
# At most 18 digits: a longer length is a lie (and would not fit a file anyway).
_CONTENT_LENGTH = re.compile(rb"\r?\ncontent-length[ \t]*:[ \t]*(\d{1,18})[ \t]*\r?(?=\n|$)", re.IGNORECASE)
_TRAILER = b"\r\n\r\n"

Reader = Callable[[], bytes]


@dataclass(frozen=True)
class Span:
    """One piece of the stream: a record (``data`` set) or a problem (``problem`` set)."""

    start: int
    length: int
    data: bytes | None
    problem: str | None = None


class _Buffer:
    """A forward-only buffer over ``read()`` with absolute positions."""

    def __init__(self, read: Reader, base: int = 0):
        self._read = read
        self._data = bytearray()
        self.base = base
        self.eof = False

    @property
    def end(self) -> int:
        return self.base + len(self._data)

    def fill(self, upto: int) -> None:
        while not self.eof and self.end < upto:
            chunk = self._read()
            if chunk:
                self._data += chunk
            else:
                self.eof = True

    def slice(self, start: int, stop: int) -> bytes:
        self.fill(stop)
        return bytes(self._data[start - self.base : stop - self.base])

    def drop_before(self, position: int) -> None:
        if position > self.base:
            del self._data[: min(position, self.end) - self.base]
            self.base = position

    def skip_to(self, position: int) -> None:
        """Advance to ``position`` reading and discarding (memory stays bounded)."""
        while self.end < position and not self.eof:
            self.drop_before(self.end)
            self.fill(min(position, self.end + _CHUNK))
        self.drop_before(min(position, self.end))

    def find_within(self, pattern: bytes, start: int, stop: int) -> int:
        """First position in ``[start, stop)`` where ``pattern`` begins, or -1."""
        self.fill(stop)
        hit = self._data.find(pattern, start - self.base, stop - self.base)
        return self.base + hit if hit >= 0 else -1

    def find(self, pattern: bytes, start: int, discard: bool = False) -> int:
        """First position >= ``start`` where ``pattern`` begins, or -1 at the end of the stream."""
        while True:
            hit = self._data.find(pattern, max(start - self.base, 0))
            if hit >= 0:
                return self.base + hit
            if self.eof:
                return -1
            start = max(start, self.end - len(pattern) + 1)
            if discard:
                self.drop_before(start)
            self.fill(self.end + _CHUNK)


def _next_start(buffer: _Buffer, after: int) -> int:
    """The first record start (``WARC/<version>`` and a line break) at a position > ``after``.

    Not only at line starts: garbage often runs right up to the next record.
    """
    position = after + 1
    while True:
        hit = buffer.find(_START, position, discard=True)
        if hit < 0:
            return -1
        if VERSION_LINE.match(buffer.slice(hit, hit + 16)):
            return hit
        position = hit + 1


def _start_within(buffer: _Buffer, start: int, stop: int) -> int:
    """A record start in ``(start, stop)`` among buffered bytes, or -1."""
    position = start + 1
    while True:
        hit = buffer.find_within(_START, position, stop)
        if hit < 0:
            return -1
        if VERSION_LINE.match(buffer.slice(hit, hit + 16)):
            return hit
        position = hit + 1


def _trailer_end(buffer: _Buffer, block_end: int) -> int:
    """Where the record ending at ``block_end`` really ends, or -1 if its length cannot be right.

    The trailer must be ``\\r\\n\\r\\n``. Only where the stream ends (a gzip member holding
    one record, the end of a file) are fewer line breaks, or none, accepted. Accepting a short
    trailer before the next record too would let a length that lies by a few bytes more than a
    later record's size swallow the records in between; a record written with a short trailer
    is counted as ``corrupt_record`` instead, and the record after it is kept.
    """
    after = buffer.slice(block_end, block_end + 5)
    if after.startswith(_TRAILER):
        return block_end + 4
    if len(after) <= 4 and not after.strip(b"\r\n"):
        return block_end + len(after)
    return -1


def content_length(headers: bytes) -> int | None:
    match = _CONTENT_LENGTH.search(headers)
    return int(match.group(1)) if match else None


def iter_spans(read: Reader, reopen: Callable[[int], Reader], max_record_bytes: int) -> Iterator[Span]:
    """The records and problem spans of a stream, in order, covering it without gaps."""
    buffer = _Buffer(read)
    position = 0
    while True:
        buffer.drop_before(position)
        buffer.fill(position + 16)
        if buffer.end <= position:
            return
        if not VERSION_LINE.match(buffer.slice(position, position + 16)):
            position = yield from _resync(buffer, position, position)
            if position < 0:
                return
            continue

        # Headers end at the first blank line; a record start before it means a broken head. The
        # next start bounds the search, so hostile input costs linear time, not 1 MiB a candidate.
        buffer.fill(position + _MAX_HEADER)
        inner = _start_within(buffer, position, min(buffer.end, position + _MAX_HEADER))
        header_end = buffer.find_within(b"\r\n\r\n", position, inner if inner >= 0 else position + _MAX_HEADER)
        if inner >= 0 and header_end < 0:
            yield Span(position, inner - position, None, CORRUPT)
            position = inner
            continue
        if header_end < 0:
            if buffer.eof and buffer.end - position < _MAX_HEADER:
                yield Span(position, buffer.end - position, None, TRUNCATED)
                return
            position = yield from _resync(buffer, position, position + 1)
            if position < 0:
                return
            continue
        length = content_length(buffer.slice(position, header_end + 2))
        if length is None:
            position = yield from _resync(buffer, position, header_end)
            if position < 0:
                return
            continue
        block_start = header_end + 4
        block_end = block_start + length

        if length > max_record_bytes:
            # Too big to hold: skip it, then check that its length was honest.
            buffer.skip_to(block_end)
            if buffer.end >= block_end and (end := _trailer_end(buffer, block_end)) >= 0:
                yield Span(position, end - position, None, OVERSIZED)
                position = end
                continue
            # It lied (or the stream ends inside it): rewind and look for records inside it.
            buffer = _Buffer(reopen(block_start), block_start)
            following = _next_start(buffer, block_start - 1)
            stop = following if following >= 0 else buffer.end
            yield Span(position, stop - position, None, CORRUPT if following >= 0 else TRUNCATED)
            if following < 0:
                return
            position = following
            continue

        buffer.fill(block_end + 5)
        if buffer.end < block_end:
            following = _next_start(buffer, header_end)
            if following < 0:
                yield Span(position, buffer.end - position, None, TRUNCATED)
                return
            yield Span(position, following - position, None, CORRUPT)
            position = following
            continue
        end = _trailer_end(buffer, block_end)
        if end < 0:
            position = yield from _resync(buffer, position, header_end)
            if position < 0:
                return
            continue
        yield Span(position, end - position, buffer.slice(position, end))
        position = end


def _resync(buffer: _Buffer, position: int, search_from: int) -> Iterator[Span]:
    """Report ``[position, next record)`` as corrupt; return the next record's start or -1."""
    following = _next_start(buffer, search_from)  # reads to the end of the stream when it finds none
    stop = following if following >= 0 else buffer.end
    yield Span(position, stop - position, None, CORRUPT)
    return following
