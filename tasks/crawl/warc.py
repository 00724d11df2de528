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
    """A forward-only window over a file from ``start``: buffered reads, absolute offsets."""

    def __init__(self, url: str, start: int):
        self._handle = storage.open_input(url)
        self._handle.seek(start)
        self._buffer = bytearray()
        self._base = start
        self.at_eof = False

    def close(self) -> None:
        self._handle.close()

    @property
    def end(self) -> int:
        return self._base + len(self._buffer)

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
    """A gzip header whose data inflates cleanly to WARC bytes (at the file's head: to anything)."""
    head = window.slice(offset, 4096)
    if not head.startswith(GZIP_MAGIC):
        return False
    decompressor = zlib.decompressobj(31)
    try:
        out = decompressor.decompress(head, 4096)
    except zlib.error:
        return False
    if offset == 0:
        return bool(out) or decompressor.eof
    return b"WARC/" in out


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
    if problem and last.problem in (TRUNCATED, CORRUPT):
        # The unit broke inside its last record: say why (a damaged stream, or the file ends).
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
    """The uncompressed record starting at ``start`` if it is whole and honest, else None.

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

    span = next(iter_spans(read, reopen, max_record_bytes), None)
    return span if span is not None and span.start == 0 and span.problem in (None, OVERSIZED) else None


def _next_boundary(window: _Window, position: int) -> int:
    """Where the next gzip member or uncompressed record starts after ``position`` (or the end)."""
    member = _next_member_start(window, position + 1, 1 << 62)
    record = position + 1
    while True:
        record = window.find(b"WARC/", record, member if member >= 0 else 1 << 62)
        if record < 0 or VERSION_LINE.match(window.slice(record, 16)):
            break
        record += 1
    found = [p for p in (member, record) if p >= 0]
    return min(found) if found else window.end


def _gap(window: _Window, start: int, max_record_bytes: int):
    """Yield what lies between a member's end (or the file's head) and the next member:
    uncompressed records (a file mixing both) or garbage; return where the next member starts."""
    position = start
    while True:
        if not window.slice(position, 1):
            return -1
        if position != start and _is_member_start(window, position):
            return position
        span = _first_plain_record(window, position, max_record_bytes)
        if span is not None:
            yield Record(position, None, span.length, span.data, span.problem)
            position += span.length
            continue
        stop = _next_boundary(window, position)
        yield Record(position, None, stop - position, None, CORRUPT)
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


def _zstd_reader(url: str) -> tuple[Callable[[], bytes], Callable[[], str | None], Callable[[], None]]:
    """A read function over the decompressed frames, a problem getter, and a closer.

    Frames are fed by hand (not with a stream reader) so that input ending inside a frame is
    seen: it is ``truncated``, never an empty result.
    """
    import zstandard

    handle = storage.open_input(url)
    head = handle.read(8)
    dictionary = None
    if head[:4] == ZSTD_DICTIONARY_FRAME and len(head) == 8:
        raw = handle.read(int.from_bytes(head[4:8], "little"))
        try:
            if raw.startswith(ZSTD_MAGIC):  # the dictionary may itself be compressed
                raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
            dictionary = zstandard.ZstdCompressionDict(raw)
        except zstandard.ZstdError:
            dictionary = False  # a damaged dictionary: nothing after it can be read
    else:
        handle.seek(0)
    decompressor = zstandard.ZstdDecompressor(dict_data=dictionary) if dictionary else zstandard.ZstdDecompressor()
    state: dict = {"problem": None, "done": False, "pending": b"", "frame": decompressor.decompressobj(), "fed": False}
    if dictionary is False:
        state["done"], state["problem"] = True, CORRUPT

    def read() -> bytes:
        while not state["done"]:
            data, state["pending"] = state["pending"] or handle.read(_PIECE), b""
            if not data:
                state["done"] = True
                if state["fed"]:
                    state["problem"] = TRUNCATED  # the input ends inside a frame
                return b""
            try:
                out = state["frame"].decompress(data)
            except zstandard.ZstdError:
                state["done"], state["problem"] = True, CORRUPT
                return b""
            state["fed"] = True
            if state["frame"].eof:
                state["pending"] = state["frame"].unused_data
                state["frame"], state["fed"] = decompressor.decompressobj(), False
            if out:
                return out
        return b""

    return read, lambda: state["problem"], handle.close


def iter_zstd_records(url: str, max_record_bytes: int) -> Iterator[Record]:
    read, problem, close = _zstd_reader(url)
    extra: list[Callable[[], None]] = []
    problems = [problem]

    def reopen(position: int) -> Callable[[], bytes]:
        again, again_problem, again_close = _zstd_reader(url)
        extra.append(again_close)
        problems.append(again_problem)
        return _skipping(again, position)

    try:
        yield from _unit_records(iter_spans(read, reopen, max_record_bytes), 0, lambda: problems[-1]())
    finally:
        close()
        for closer in extra:
            closer()


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
    if fmt in (GZIP, GZIP_STREAM):  # a stream is one shard over the whole file
        return iter_gzip_records(path, shard["start"], shard["end"], max_record_bytes)
    if fmt == ZSTD:
        return iter_zstd_records(path, max_record_bytes)
    if fmt == PLAIN:
        return iter_plain_records(path, max_record_bytes)
    if fmt == EMPTY:
        return iter(())
    raise ValueError(f"unknown input format {fmt!r} for {path}")


def detect_format(url: str) -> str:
    """The file's format, from its first bytes (and, for gzip, its first member)."""
    with storage.open_input(url) as handle:
        head = handle.read(8)
    if not head:
        return EMPTY
    if head.startswith(ZSTD_MAGIC) or head[:4] == ZSTD_DICTIONARY_FRAME:
        return ZSTD
    window = _Window(url, 0)
    try:
        if head.startswith(GZIP_MAGIC):
            return GZIP_STREAM if _first_member_holds_more(url, window) else GZIP
        if head.startswith(b"WARC/"):
            # Uncompressed: a plain file, unless gzip members follow its first record (a mixed file;
            # the gzip reader reads the uncompressed records between members too).
            first = next(iter_plain_records(url, 1 << 20))
            if first.problem in (None, OVERSIZED):
                return GZIP if _is_member_start(window, first.offset + first.length) else PLAIN
        # Garbage first: gzip if a member starts in the first MiB.
        return GZIP if _next_member_start(window, 1, 1 << 20) >= 0 else PLAIN
    finally:
        window.close()


def _first_member_holds_more(url: str, window: _Window) -> bool:
    """Whether the first gzip member holds more than one record (a whole-file stream)."""
    if not _is_member_start(window, 0):
        return False
    # Records over 1 MiB are skipped unread here: only their number matters.
    records = _member_records(url, window, 0, 1 << 20)
    for count, _record in enumerate(records, start=1):
        if count > 1:
            records.close()
            return True
    return False
