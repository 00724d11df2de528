"""Read WARC/WET records from every shape crawls come in, surviving corrupt input.

The format is found by content, never by file name (``detect_format``):

- ``gzip``: a gzip member per record, as Common Crawl writes. The file can be split at any
  byte offset: a shard owns the members that *start* inside its range ``[start, end)``,
  reading the last one past ``end`` if needed. Members are found by their gzip header and
  confirmed by decompressing to ``WARC/``, which is also how reading resynchronises after
  garbage. Each member's bytes are read as a record stream, so a member holding several
  records loses none of them, and uncompressed records between members are read too.
- ``gzip-stream``: one gzip stream over many records (``gzip file.warc``). It cannot be split
  at byte offsets: one shard per file, read as a stream.
- ``zstd``: ``.warc.zst``, with the dictionary in a leading skippable frame when there is one
  (the WARC-zstd convention); one shard per file.
- ``warc``: uncompressed; one shard per file.

Inside the decompressed bytes ``fineflow.tasks.crawl.records`` splits records and checks every
``Content-Length`` against the record's trailer. Nothing is skipped without being reported:
``corrupt_record`` (garbage, a lying length, a member that does not decompress), ``truncated``
(the file ends inside a record) or ``oversized_record``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fineflow import storage
from fineflow.tasks.crawl.records import CORRUPT, OVERSIZED, TRUNCATED, VERSION_LINE, Span, iter_spans

__all__ = ["CORRUPT", "OVERSIZED", "TRUNCATED", "Record", "detect_format", "iter_records", "SPLITTABLE"]

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_DICTIONARY_FRAME = (0x184D2A5D).to_bytes(4, "little")
ZSTD_DICTIONARY_MAGIC = (0xEC30A437).to_bytes(4, "little")
_PIECE = 64 * 1024
_OUT = 1 << 20
_READ = 4 * 1024 * 1024
LOOKBACK = 8 * 1024 * 1024  # compressed bytes a split read walks back over to find the member chain

GZIP, GZIP_STREAM, ZSTD, PLAIN, EMPTY = "gzip", "gzip-stream", "zstd", "warc", "empty"
SPLITTABLE = (GZIP,)


@dataclass(frozen=True)
class Record:
    """A record, or a problem met while reading, with where it lies in the file.

    ``offset`` is the record's byte offset in the file, or that of the compressed unit (gzip
    member, zstd stream) holding it; ``inner`` is then its offset in the unit's decompressed
    bytes (0 for a unit's first record). ``length`` counts bytes where the record lies: in the
    decompressed unit when ``inner`` is set, in the file otherwise.
    """

    offset: int
    inner: int | None
    length: int
    data: bytes | None
    problem: str | None = None

    @property
    def locator(self) -> str:
        """``<offset>`` or ``<unit offset>+<offset inside it>``: where to find the record again."""
        return f"{self.offset}+{self.inner}" if self.inner else str(self.offset)


class _Window:
    """A window over a file from ``start``: buffered reads, absolute offsets, bounded memory.

    Reading goes forward and drops what it has passed (``release``); a read behind the buffer
    (rare: a resync after a damaged member) seeks back and reads again, so it stays correct.
    """

    def __init__(self, url: str, start: int, chunk: int = _READ):
        self._handle = storage.open_input(url, block_size=max(chunk, 1 << 16))
        self._handle.seek(start)
        self._chunk = chunk
        self._buffer = bytearray()
        self._base = start
        self.at_eof = False

    def close(self) -> None:
        self._handle.close()

    @property
    def end(self) -> int:
        return self._base + len(self._buffer)

    def _rewind(self, offset: int) -> None:
        if offset < self._base:
            self._handle.seek(offset)
            self._buffer = bytearray()
            self._base = offset
            self.at_eof = False

    def _fill(self, upto: int) -> None:
        while not self.at_eof and self._base + len(self._buffer) < upto:
            chunk = self._handle.read(self._chunk)
            if not chunk:
                self.at_eof = True
            self._buffer += chunk

    def slice(self, offset: int, length: int) -> bytes:
        self._rewind(offset)
        self._fill(offset + length)
        lo = offset - self._base
        return bytes(self._buffer[lo : lo + length])

    def find(self, pattern: bytes, offset: int, limit: int) -> int:
        """First offset >= ``offset`` and < ``limit`` where ``pattern`` starts, or -1."""
        self._rewind(offset)
        while True:
            self._fill(offset + self._chunk)
            lo = offset - self._base
            hit = self._buffer.find(pattern, lo)
            if hit >= 0:
                absolute = self._base + hit
                return absolute if absolute < limit else -1
            end = self._base + len(self._buffer)
            if self.at_eof or end >= limit:
                return -1
            offset = max(offset, end - len(pattern) + 1)
            self.release(offset)  # a long search holds at most a chunk or two

    def release(self, offset: int) -> None:
        """Drop buffered bytes before ``offset`` (they will not be needed again)."""
        drop = offset - self._base
        if drop > self._chunk:
            del self._buffer[:drop]
            self._base = offset


class _MemberStream:
    """The decompressed bytes of the gzip member at ``offset``, read in pieces.

    Afterwards ``end`` is the member's compressed end, or ``problem`` says why there is none.
    """

    def __init__(self, window: _Window, offset: int):
        self._window = window
        self._decompressor = zlib.decompressobj(31)
        self._position = offset
        self._tail = b""
        self.done = False
        self.end: int | None = None
        self.problem: str | None = None

    def read(self) -> bytes:
        while not self.done:
            data = self._tail
            if not data:
                self._window.release(self._position)  # every byte before it has been inflated
                data = self._window.slice(self._position, _PIECE)
                if not data:
                    self.done, self.problem = True, TRUNCATED
                    return b""
                self._position += len(data)
            try:
                out = self._decompressor.decompress(data, _OUT)
            except zlib.error:
                self.done, self.problem = True, CORRUPT
                return b""
            self._tail = self._decompressor.unconsumed_tail
            if self._decompressor.eof:
                self.done = True
                self.end = self._position - len(self._decompressor.unused_data)
            if out:
                return out
        return b""


def _skipping(read: Callable[[], bytes], count: int) -> Callable[[], bytes]:
    """``read`` with its first ``count`` bytes dropped (a rewind for streams that cannot seek)."""
    pending = bytearray()
    remaining = count

    def skipped() -> bytes:
        nonlocal remaining
        while remaining:
            chunk = read()
            if not chunk:
                return b""
            if len(chunk) <= remaining:
                remaining -= len(chunk)
                continue
            pending.extend(chunk[remaining:])
            remaining = 0
        if pending:
            out = bytes(pending)
            pending.clear()
            return out
        return read()

    return skipped


def _is_member_start(window: _Window, offset: int) -> bool:
    """A gzip header whose data inflates cleanly to ``WARC/`` (at the file's head: to anything)."""
    head = window.slice(offset, 4096)
    if not head.startswith(GZIP_MAGIC):
        return False
    decompressor = zlib.decompressobj(31)
    try:
        out = decompressor.decompress(head, 16)
    except zlib.error:
        return False
    if offset == 0:
        return bool(out) or decompressor.eof
    return out.startswith(b"WARC/")


def _next_member_start(window: _Window, offset: int, limit: int) -> int:
    while True:
        candidate = window.find(GZIP_MAGIC, offset, limit)
        if candidate < 0 or _is_member_start(window, candidate):
            return candidate
        offset = candidate + 1


def _unit_records(
    spans: Iterator[Span], offset: int, finished: Callable[[], str | None]
) -> Iterator[Record]:
    """Records of one compressed unit; a problem of the unit itself marks its last piece."""
    last: Span | None = None
    for span in spans:
        if last is not None:
            yield Record(offset, last.start, last.length, last.data, last.problem)
        last = span
    problem = finished()
    if last is None:
        if problem:
            yield Record(offset, 0, 0, None, problem)
        return
    if problem and (last.problem in (TRUNCATED, CORRUPT) or problem == CORRUPT):
        # The unit broke inside its last record, or failed its checksum after it: that record is
        # not trusted, and the problem says why (a damaged stream, or the file ends).
        yield Record(offset, last.start, last.length, None, problem)
        return
    yield Record(offset, last.start, last.length, last.data, last.problem)
    if problem:
        yield Record(offset, last.start + last.length, 0, None, problem)


def _member_records(url: str, window: _Window, offset: int, max_record_bytes: int):
    """Yield the records of the member at ``offset``; return its stream (its end or problem)."""
    streams = [_MemberStream(window, offset)]
    windows: list[_Window] = []

    def reopen(position: int) -> Callable[[], bytes]:
        windows.append(_Window(url, offset))
        streams.append(_MemberStream(windows[-1], offset))
        return _skipping(streams[-1].read, position)

    try:
        spans = iter_spans(streams[0].read, reopen, max_record_bytes)
        yield from _unit_records(spans, offset, lambda: streams[-1].problem)
    finally:
        for extra in windows:
            extra.close()
    return streams[-1]


def _first_plain_record(window: _Window, start: int, max_record_bytes: int) -> Span | None:
    """The first span (a record, or a problem) of the uncompressed bytes at ``start``.

    The read is bounded, so a broken record never pulls the rest of the file into memory.
    """
    limit = start + max_record_bytes + 2 * _READ
    cursor = start

    def read() -> bytes:
        nonlocal cursor
        chunk = window.slice(cursor, min(_READ, limit - cursor)) if cursor < limit else b""
        cursor += len(chunk)
        return chunk

    def reopen(position: int) -> Callable[[], bytes]:
        nonlocal cursor
        cursor = start + position
        return read

    return next(iter_spans(read, reopen, max_record_bytes), None)


def _next_plain_start(window: _Window, position: int, limit: int) -> int:
    """Where the next uncompressed record starts after ``position`` and before ``limit``, or -1."""
    record = position + 1
    while (record := window.find(b"WARC/", record, limit)) >= 0:
        if VERSION_LINE.match(window.slice(record, 16)):
            return record
        record += 1
    return -1


def _member_in_head(window: _Window, position: int, span: Span) -> bool:
    """Whether a gzip member starts inside a would-be record's headers: then it is no record (a
    body may hold a .warc.gz, headers are text)."""
    head_end = window.find(b"\r\n\r\n", position, position + span.length)
    return _next_member_start(window, position + 1, head_end if head_end >= 0 else position + span.length) >= 0


def _gap(window: _Window, start: int, max_record_bytes: int):
    """Yield what lies between a member's end (or the file's head) and the next member:
    uncompressed records (a file mixing both) or garbage; return where the next member starts."""
    position = start
    member: int | None = None  # the next member start (-1: none to the end), searched again once passed
    while True:
        if not window.slice(position, 1):
            return -1
        if position != start and _is_member_start(window, position):
            return position
        span = _first_plain_record(window, position, max_record_bytes)
        if span is not None and span.problem in (None, OVERSIZED) and not _member_in_head(window, position, span):
            yield Record(position, None, span.length, span.data, span.problem)
            position += span.length
            continue
        if member is None or 0 <= member <= position:
            member = _next_member_start(window, position + 1, 1 << 62)
        record = _next_plain_start(window, position, member if member >= 0 else 1 << 62)
        found = [p for p in (member, record) if p >= 0]
        stop = min(found) if found else window.end  # neither: the searches read to the end
        # Cut off by what follows (a member, a record) it is corrupt; at the end of the file, truncated.
        problem = TRUNCATED if not found and span is not None and span.problem == TRUNCATED else CORRUPT
        yield Record(position, None, stop - position, None, problem)
        position = stop


def _drain(generator) -> int:  # noqa: ANN001
    """Run a generator to its end, dropping what it yields; return what it returns."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def _first_member_from(url: str, start: int, max_record_bytes: int) -> int:
    """The first member of the file's member chain at or after ``start``, found by walking the
    chain from ``LOOKBACK`` bytes earlier (inflating members only to find their ends).

    A record whose body is itself a ``.warc.gz`` carries real gzip members inside its own member
    (deflate stores incompressible bytes as they are); scanning forward from ``start`` would take
    one of those for a record. Walking from before ``start`` steps over them, as a whole read does,
    so split reads equal the whole read unless such a record is longer than ``LOOKBACK``.
    """
    anchor = max(0, start - LOOKBACK)
    window = _Window(url, anchor)
    try:
        if anchor == 0 and not _is_member_start(window, 0):
            position = _drain(_gap(window, 0, max_record_bytes))  # the file's head, as a whole read
        else:
            position = _next_member_start(window, anchor, 1 << 62)
        while 0 <= position < start:
            stream = _MemberStream(window, position)
            while stream.read():
                pass
            if stream.problem == TRUNCATED:
                return -1
            if stream.problem == CORRUPT:
                position = _next_member_start(window, position + 1, 1 << 62)
                continue
            following = stream.end
            if not window.slice(following, 1):
                return -1
            if _is_member_start(window, following):
                position = following
            else:  # skip what lies between members exactly as a whole read does
                position = _drain(_gap(window, following, max_record_bytes))
            window.release(max(position, anchor))
        return position
    finally:
        window.close()


def iter_gzip_records(url: str, start: int, end: int, max_record_bytes: int) -> Iterator[Record]:
    """Records whose gzip member starts in ``[start, end)``, and problems met on the way."""
    window = _Window(url, start)
    try:
        position = start
        if start == 0:
            if not _is_member_start(window, 0):
                if window.slice(0, 1):
                    position = yield from _gap(window, 0, max_record_bytes)  # the file's head
                else:
                    position = -1
        else:
            # The bytes before the first member here belong to a member that started earlier.
            position = _first_member_from(url, start, max_record_bytes)
        while 0 <= position < end:
            stream = yield from _member_records(url, window, position, max_record_bytes)
            if stream.problem == TRUNCATED:
                return
            if stream.problem == CORRUPT:
                position = _next_member_start(window, position + 1, end)
            else:
                following = stream.end
                if not window.slice(following, 1):
                    return  # end of file
                if _is_member_start(window, following):
                    position = following
                else:
                    # Bytes after a good member that are not a member: this shard owns them (even
                    # past ``end``) because its last member ends where they begin.
                    position = yield from _gap(window, following, max_record_bytes)
            if position >= 0:
                window.release(position)
    finally:
        window.close()


def _zstd():
    try:
        from compression import zstd  # Python 3.14+
    except ImportError:
        from backports import zstd
    return zstd


def _is_frame_start(head: bytes) -> bool:
    """A zstd frame, or a skippable frame (magic 0x184D2A50-0x184D2A5F)."""
    return head[:4] == ZSTD_MAGIC or (len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50)


def _next_frame(data: bytes, start: int) -> int:
    """The first position >= ``start`` where a zstd frame or skippable frame begins, or -1."""
    found = [data.find(ZSTD_MAGIC, start)]
    position = start + 1
    while (hit := data.find(b"\x2a\x4d\x18", position)) >= 0:
        if data[hit - 1] & 0xF0 == 0x50:
            found.append(hit - 1)
            break
        position = hit + 1
    found = [f for f in found if f >= start]
    return min(found) if found else -1


class _ZstdStream:
    """The decompressed bytes of a zstd file, frame after frame, at most ``_OUT`` bytes a read.

    Input that ends inside a frame is ``truncated``; a frame that does not decompress is
    ``corrupt_record``. Garbage between frames is skipped to the next frame, and one NUL byte
    stands in for it in the output, so the record reader counts it as corrupt instead of
    losing it silently.
    """

    def __init__(self, url: str):
        self._zstd = _zstd()
        self._handle = storage.open_input(url)
        self.problem: str | None = None
        self._done = False
        self._dictionary = None
        self._pending = self._handle.read(8)
        if self._pending[:4] == ZSTD_DICTIONARY_FRAME and len(self._pending) == 8:
            size = int.from_bytes(self._pending[4:8], "little")
            raw = self._handle.read(size)
            self._pending = b""
            try:
                if len(raw) != size:
                    raise ValueError("the dictionary frame is cut short")
                if raw.startswith(ZSTD_MAGIC):  # the dictionary may itself be compressed
                    raw = self._zstd.decompress(raw)
                # A trained dictionary starts with its magic number; anything else is raw content.
                self._dictionary = self._zstd.ZstdDict(raw, is_raw=not raw.startswith(ZSTD_DICTIONARY_MAGIC))
                self._zstd.ZstdDecompressor(zstd_dict=self._dictionary)  # checks the dictionary's tables
            except (self._zstd.ZstdError, ValueError, EOFError):
                self._done, self.problem = True, CORRUPT  # nothing after a damaged dictionary can be read
        self._frame = None

    def close(self) -> None:
        self._handle.close()

    def _take(self, size: int = _PIECE) -> bytes:
        data, self._pending = self._pending or self._handle.read(size), b""
        return data

    def _skip_garbage(self, data: bytes) -> None:
        """Drop bytes up to the next frame start (or the end of the file)."""
        while True:
            hit = _next_frame(data, 1)
            if hit >= 0:
                self._pending = data[hit:]
                return
            more = self._handle.read(_PIECE)
            if not more:
                return
            data = data[-4:] + more  # a magic number may straddle the two reads


    def read(self) -> bytes:
        while not self._done:
            if self._frame is None:
                data = self._take()
                if len(data) < 4:
                    data += self._handle.read(4 - len(data))
                if not data:
                    self._done = True
                    return b""
                if not _is_frame_start(data):
                    self._skip_garbage(data)
                    return b"\x00"  # stands for the garbage: the record reader counts it
                self._pending = data
                zstd = self._zstd
                self._frame = zstd.ZstdDecompressor(zstd_dict=self._dictionary) if self._dictionary else zstd.ZstdDecompressor()
            data = self._take() if self._frame.needs_input else b""
            if self._frame.needs_input and not data:
                self._done, self.problem = True, TRUNCATED  # the input ends inside a frame
                return b""
            try:
                out = self._frame.decompress(data, _OUT)
            except (self._zstd.ZstdError, EOFError):
                self._done, self.problem = True, CORRUPT
                return b""
            if self._frame.eof:
                self._pending, self._frame = self._frame.unused_data, None
            if out:
                return out
        return b""


def _unit_stream_records(open_stream: Callable[[], object], max_record_bytes: int) -> Iterator[Record]:
    """Records of a file read as one decompressed stream (offset 0; ``inner`` in the stream)."""
    streams = [open_stream()]

    def reopen(position: int) -> Callable[[], bytes]:
        streams.append(open_stream())
        return _skipping(streams[-1].read, position)

    try:
        spans = iter_spans(streams[0].read, reopen, max_record_bytes)
        yield from _unit_records(spans, 0, lambda: streams[-1].problem)
    finally:
        for stream in streams:
            stream.close()


def iter_zstd_records(url: str, max_record_bytes: int) -> Iterator[Record]:
    return _unit_stream_records(lambda: _ZstdStream(url), max_record_bytes)


class _GzipStream:
    """Every gzip member of a file, inflated one after the other (as ``gzip -d`` reads them), for
    files whose members do not hold whole records: one stream over the file, or blocks cut by size."""

    def __init__(self, url: str):
        self._window = _Window(url, 0)
        self._member = _MemberStream(self._window, 0)
        self.problem: str | None = None

    def close(self) -> None:
        self._window.close()

    def read(self) -> bytes:
        while True:
            out = self._member.read()
            if out:
                return out
            member = self._member
            if member.problem or member.end is None:
                self.problem = member.problem
                return b""
            if not self._window.slice(member.end, 1):
                return b""  # the end of the file
            if self._window.slice(member.end, 3) != GZIP_MAGIC:
                self.problem = CORRUPT  # trailing bytes that are not gzip: counted, not read
                return b""
            self._member = _MemberStream(self._window, member.end)


def iter_gzip_stream_records(url: str, max_record_bytes: int) -> Iterator[Record]:
    return _unit_stream_records(lambda: _GzipStream(url), max_record_bytes)


def iter_plain_records(url: str, max_record_bytes: int) -> Iterator[Record]:
    with storage.open_input(url) as handle:

        def read() -> bytes:
            return handle.read(_READ)

        def reopen(position: int) -> Callable[[], bytes]:
            handle.seek(position)
            return read

        for span in iter_spans(read, reopen, max_record_bytes):
            yield Record(span.start, None, span.length, span.data, span.problem)


def iter_records(shard: dict, max_record_bytes: int) -> Iterator[Record]:
    """The records of one planned shard, whatever its file's format."""
    path, fmt = shard["path"], shard["format"]
    if fmt == GZIP:
        return iter_gzip_records(path, shard["start"], shard["end"], max_record_bytes)
    if fmt == GZIP_STREAM:
        return iter_gzip_stream_records(path, max_record_bytes)
    if fmt == ZSTD:
        return iter_zstd_records(path, max_record_bytes)
    if fmt == PLAIN:
        return iter_plain_records(path, max_record_bytes)
    if fmt == EMPTY:
        return iter(())
    raise ValueError(f"unknown input format {fmt!r} for {path}")


def detect_format(url: str) -> str:
    """The file's format, from its first bytes (and, for gzip, its first member)."""
    with storage.open_input(url, block_size=1 << 16) as handle:
        head = handle.read(8)
    if not head:
        return EMPTY
    if head.startswith(ZSTD_MAGIC) or head[:4] == ZSTD_DICTIONARY_FRAME:
        return ZSTD
    window = _Window(url, 0, chunk=1 << 16)
    try:
        if head.startswith(GZIP_MAGIC):
            return GZIP if _first_member_is_one_record(url, window) else GZIP_STREAM
        if head.startswith(b"WARC/"):
            # Uncompressed: a plain file, unless gzip members follow its first record (a mixed file;
            # the gzip reader reads the uncompressed records between members too).
            records = iter_plain_records(url, 1 << 20)
            first = next(records)
            records.close()
            if first.problem in (None, OVERSIZED):
                return GZIP if _is_member_start(window, first.offset + first.length) else PLAIN
        # Garbage first: gzip if a member starts in the first MiB.
        return GZIP if _next_member_start(window, 1, 1 << 20) >= 0 else PLAIN
    finally:
        window.close()


def _first_member_is_one_record(url: str, window: _Window) -> bool:
    """Whether the first gzip member holds exactly one whole record (Common Crawl's layout,
    splittable), rather than several (one stream) or part of one (members cut by size)."""
    if not _is_member_start(window, 0):
        return True  # damaged head: the member reader resynchronises and counts it
    # Records over 1 MiB are skipped unread here: only their number and ends matter.
    records = _member_records(url, window, 0, 1 << 20)
    found = []
    try:
        while len(found) < 2:
            found.append(next(records))
    except StopIteration as stop:
        stream = stop.value
        if len(found) != 1:
            return not found
        if found[0].problem == TRUNCATED and stream.problem is None:
            # The member ends inside its record: cut by size (BGZF-like), unless the next member
            # starts a record (then this record's length lies, and members hold records).
            head = window.slice(stream.end, 4096)
            try:
                return not head.startswith(GZIP_MAGIC) or zlib.decompressobj(31).decompress(head, 5) == b"WARC/"
            except zlib.error:
                return True
        return True
    records.close()
    return False
