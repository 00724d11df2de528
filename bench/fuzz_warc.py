"""Coverage-guided fuzzing of the WARC record reader (``tasks/crawl/records.py``, ``tasks/crawl/warc.py``).

The promise under test: on any input bytes the reader never raises, every byte is accounted for
(records and problem spans tile the stream), and for the splittable ``gzip`` format reading a
file in shards cut at any byte offsets gives exactly what one whole read gives.

Setup (a separate venv; atheris 3.1.0 ships wheels for CPython 3.12-3.14 only, none for 3.11)::

    uv venv bench/.venv-fuzz --python 3.12
    uv pip install --python bench/.venv-fuzz atheris==3.1.0 backports.zstd zstandard fsspec

The harness puts the repository root on ``sys.path`` (``import fineflow`` then maps
``fineflow.tasks`` to ``tasks/``), so the project itself need not be installed there.

Run::

    bench/.venv-fuzz/bin/python bench/fuzz_warc.py -max_total_time=600
    bench/.venv-fuzz/bin/python bench/fuzz_warc.py -atheris_runs=20000
    bench/.venv-fuzz/bin/python bench/fuzz_warc.py /tmp/fuzz-crashes/crash-<sha1>   # replay one input

Arguments starting with a single ``-`` and positional paths go to libFuzzer unchanged. When no
corpus directory is given, the corpus is ``bench/results/fuzz-warc/corpus`` (git-ignored) plus the
seed directory ``bench/results/fuzz-warc/seeds``, rewritten on every start from real records of
``examples/data/CC-MAIN-SAMPLE-00000.warc.gz`` and hand-made edge cases (lying Content-Length,
garbage, truncation, stray gzip/zstd magic). Defaults added unless given: ``-max_len=8192``,
``-timeout=30``, ``-dict=<WARC tokens>``, ``-artifact_prefix=/tmp/fuzz-crashes/``,
``-print_final_stats=1``. Own options:

``--keep-going``
    record each distinct failure (exception type and place) under ``/tmp/fuzz-crashes/`` with
    its traceback and go on fuzzing, instead of crashing at the first one;
``--random``
    no atheris: a plain random-mutation loop over the same seeds (also used automatically when
    atheris cannot be imported); takes ``-runs=N`` / ``-max_total_time=S`` as well.

Input layout: byte 0 picks the container (``raw`` uncompressed, ``gzip-pieces`` one gzip member
per record with some records left uncompressed between members, ``gzip-whole`` one gzip stream,
``zstd-whole`` one zstd frame, ``zstd-dict`` a dictionary in a skippable frame then one frame
per record, ``as-is`` the payload written unchanged); byte 1 picks ``max_record_bytes``
(1, 64, 256 or 1 MiB: small values drive the oversized path that rewinds with ``reopen``), the
read size given to ``iter_spans`` and which records stay uncompressed; bytes 2-7 are three
shard cut offsets; the rest is the payload.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

try:
    import atheris
except ImportError:  # no wheel for this Python: the --random fallback still works
    atheris = None

import zstandard  # noqa: E402

if atheris is not None:
    with atheris.instrument_imports(include=["fineflow"]):
        from fineflow.tasks.crawl import warc
        from fineflow.tasks.crawl.records import Span, iter_spans
else:
    from fineflow.tasks.crawl import warc
    from fineflow.tasks.crawl.records import Span, iter_spans

SAMPLE = REPO / "examples" / "data" / "CC-MAIN-SAMPLE-00000.warc.gz"
WORK = REPO / "bench" / "results" / "fuzz-warc"
CRASH_DIR = Path("/tmp/fuzz-crashes")

MODES = ("raw", "gzip-pieces", "gzip-whole", "zstd-whole", "zstd-dict", "as-is")
MAX_RECORD = (1, 64, 256, 1 << 20)
READ_SIZES = (1, 7, 64, 1 << 16)
HEADER = 8  # mode, flags, three 2-byte cut offsets
KNOWN_PROBLEMS = {None, warc.CORRUPT, warc.TRUNCATED, warc.OVERSIZED}
# Raw-content zstd dictionary for the zstd-dict container (a typical WARC header).
ZSTD_DICT = (
    b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Date: 2026-09-01T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:"
    b">\r\nContent-Length: \r\nContent-Type: application/http; msgtype=response\r\nWARC-Target-URI: https://"
    b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><title></title>"
)
TOKENS = [
    b"WARC/1.0\r\n",
    b"WARC/1.1\r\n",
    b"WARC/",
    b"Content-Length: ",
    b"content-length:",
    b"\r\n\r\n",
    b"\r\n",
    b"\n\n",
    b"WARC-Type: response\r\n",
    b"\x1f\x8b\x08",
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff",
    b"\x28\xb5\x2f\xfd",
    b"\x5d\x2a\x4d\x18",
    b"\x37\xa4\x30\xec",
    b"Content-Length: 0\r\n\r\n",
    b"Content-Length: 99999999999\r\n",
]

_PATH = Path(tempfile.mkdtemp(prefix="fuzz-warc-")) / "input"  # one file, rewritten per input
_KEEP_GOING = False
_seen: set[str] = set()


# ---------------------------------------------------------------------------------------------
# Building a file from a fuzz input


def _pieces(payload: bytes) -> list[bytes]:
    """The payload cut before each ``WARC/`` (no empty pieces)."""
    cuts = [m.start() for m in re.finditer(rb"WARC/", payload) if m.start() > 0]
    bounds = [0, *cuts, len(payload)]
    return [payload[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def _zstd_dict_file(pieces: list[bytes], compressed_dict: bool) -> bytes:
    dictionary = zstandard.ZstdCompressionDict(ZSTD_DICT)
    frame = zstandard.ZstdCompressor().compress(ZSTD_DICT) if compressed_dict else ZSTD_DICT
    compressor = zstandard.ZstdCompressor(dict_data=dictionary)
    return (
        warc.ZSTD_DICTIONARY_FRAME
        + len(frame).to_bytes(4, "little")
        + frame
        + b"".join(compressor.compress(p) for p in pieces)
    )


def decode(data: bytes):
    """(mode, max_record_bytes, read_size, gzip mask, cut values, payload, mode byte) of a fuzz input."""
    head = (data[:HEADER] + bytes(HEADER))[:HEADER]
    mode = MODES[head[0] % len(MODES)]
    flags = head[1]
    cuts = [int.from_bytes(head[i : i + 2], "little") for i in (2, 4, 6)]
    return mode, MAX_RECORD[flags & 3], READ_SIZES[(flags >> 2) & 3], flags >> 4, cuts, data[HEADER:], head[0]


def encode(
    mode: str, payload: bytes, max_index: int = 3, read_index: int = 2, mask: int = 0, cuts=(0, 0, 0), variant: int = 0
) -> bytes:
    head = bytes([MODES.index(mode) + len(MODES) * variant, max_index | (read_index << 2) | (mask << 4)])
    return head + b"".join(c.to_bytes(2, "little") for c in cuts) + payload


def build(mode: str, payload: bytes, mask: int, selector: int):
    """File bytes, and the layout the reader must find: [(file offset, gzipped?, bytes)] or None."""
    if mode == "raw":  # predictable unless the payload holds what may be a gzip member
        return payload, None if warc.GZIP_MAGIC in payload else [(0, False, payload)] if payload else []
    if mode == "gzip-pieces":
        layout, out, offset = [], [], 0
        for i, piece in enumerate(_pieces(payload)):
            zipped = mask == 0 or bool((mask >> (i % 4)) & 1)
            blob = gzip.compress(piece, compresslevel=1 + selector % 9, mtime=0) if zipped else piece
            layout.append((offset, zipped, piece))
            out.append(blob)
            offset += len(blob)
        # Only when no uncompressed piece holds a gzip header can the layout be predicted.
        predictable = not any(not z and warc.GZIP_MAGIC in p for _, z, p in layout)
        return b"".join(out), layout if predictable else None
    if mode == "gzip-whole":
        return gzip.compress(payload, mtime=0), [(0, True, payload)]
    if mode == "zstd-whole":
        return zstandard.ZstdCompressor().compress(payload), "zstd"
    if mode == "zstd-dict":
        return _zstd_dict_file(_pieces(payload), bool(selector & 0x80)), "zstd"
    return payload, None  # as-is


# ---------------------------------------------------------------------------------------------
# Invariants


def _tuple(record) -> tuple:
    return (record.offset, record.inner, record.length, record.problem, record.data)


def spans_of(data: bytes, max_record_bytes: int, read_size: int) -> list[Span]:
    """``iter_spans`` over ``data`` fed ``read_size`` bytes at a time; rewinds served from ``data``."""

    def reader(position: int):
        chunks = iter([data[i : i + read_size] for i in range(position, len(data), read_size)])
        return lambda: next(chunks, b"")

    return list(iter_spans(reader(0), reader, max_record_bytes))


def check_tiling(spans: list[Span], data: bytes) -> None:
    position = 0
    for span in spans:
        assert span.start == position, f"span starts at {span.start}, previous ended at {position}"
        assert span.length > 0, f"empty span at {span.start}"
        assert (span.data is None) != (span.problem is None), f"span at {span.start}: data and problem {span.problem!r}"
        assert span.problem in KNOWN_PROBLEMS, span.problem
        if span.data is not None:
            assert span.data == data[span.start : span.start + span.length], (
                f"record data at {span.start} is not its bytes"
            )
            assert span.data.startswith(b"WARC/"), f"record at {span.start} does not start with WARC/"
        position += span.length
    assert position == len(data), f"spans cover {position} of {len(data)} bytes"


def expected_records(layout, max_record_bytes: int) -> list[tuple]:
    """What a whole read must give for a file laid out as ``layout`` (members and plain runs)."""
    expected, plain_start, plain = [], None, b""

    def flush(followed: bool):
        nonlocal plain_start, plain
        if plain:
            if not followed:
                spans = spans_of(plain, max_record_bytes, 1 << 20)
            else:
                # The reader sees the member's bytes after the run, not the end of a stream: model
                # them with a few bytes that start nothing, and cut the spans back to the run.
                spans = []
                for s in spans_of(plain + b"\xff" * 5, max_record_bytes, 1 << 20):
                    if s.start >= len(plain):
                        break
                    if s.start + s.length > len(plain):
                        s = Span(s.start, len(plain) - s.start, None, "corrupt_record")
                    spans.append(s)
            expected.extend((plain_start + s.start, None, s.length, s.problem, s.data) for s in spans)
        plain_start, plain = None, b""

    for offset, zipped, piece in layout:
        if zipped:
            flush(followed=True)
            expected.extend(
                (offset, s.start, s.length, s.problem, s.data) for s in spans_of(piece, max_record_bytes, 1 << 20)
            )
        else:
            plain_start = offset if plain_start is None else plain_start
            plain += piece
    flush(followed=False)
    return expected


def _member(file: bytes, offset: int):
    """(decompressed bytes, compressed end) of a gzip member that inflates cleanly at ``offset``, else None."""
    decompressor = zlib.decompressobj(31)
    try:
        out = decompressor.decompress(file[offset:])
    except zlib.error:
        return None
    if not decompressor.eof:
        return None
    return out, len(file) - len(decompressor.unused_data)


def check_gzip_structure(records: list[tuple], file: bytes, max_record_bytes: int) -> None:
    """A whole read of a gzip-format file: units follow each other without gaps or overlaps.

    A unit is a gzip member (records with ``inner`` set, sharing its offset) or a run of
    uncompressed records between members (``inner`` None, file offsets). A member that inflates
    cleanly must give exactly the records of its decompressed bytes and end where the next unit
    starts; a broken member's report covers the bytes up to the next unit.
    """
    units: list[tuple[int, list[tuple]]] = []
    for record in records:
        offset, inner = record[0], record[1]
        if inner is not None and units and units[-1][0] == offset and units[-1][1][0][1] is not None:
            units[-1][1].append(record)
        elif inner is None and units and units[-1][1][0][1] is None:
            units[-1][1].append(record)
        else:
            units.append((offset, [record]))
    cursor = 0  # where the next unit must start; None: anywhere after the previous one
    floor = 0

    def past_empty_members(position: int, stop: int) -> int:
        """Members that inflate to nothing give no record: step over them."""
        while position < stop and (member := _member(file, position)) is not None and not member[0]:
            position = member[1]
        return position

    for offset, unit in units:
        if cursor is not None:
            cursor = past_empty_members(cursor, offset)
            assert offset == cursor, f"unit at {offset}, previous ended at {cursor}"
        else:
            assert offset >= floor, f"unit at {offset} before {floor}"
        if unit[0][1] is None:  # uncompressed run
            position = offset
            for r in unit:
                assert r[0] == position and r[2] > 0, (
                    f"uncompressed record at {r[0]} (expected {position}, length {r[2]})"
                )
                assert r[3] in KNOWN_PROBLEMS and (r[4] is None) != (r[3] is None)
                if r[4] is not None:
                    assert r[4] == file[r[0] : r[0] + r[2]]
                position += r[2]
            cursor, floor = position, position
            continue
        member = _member(file, offset)
        if member is not None:
            content, end = member
            got = [(r[1], r[2], r[3], r[4]) for r in unit]
            want = [(s.start, s.length, s.problem, s.data) for s in spans_of(content, max_record_bytes, 1 << 20)]
            assert got == want, f"member at {offset}: records differ from its decompressed bytes"
            cursor, floor = end, end
        else:  # a broken member: its records still tile what it gave, a zero-length problem last
            position = 0
            for i, r in enumerate(unit):
                assert r[1] == position, f"member at {offset}: record at inner {r[1]}, expected {position}"
                assert r[3] in KNOWN_PROBLEMS
                assert r[2] > 0 or (r[3] is not None and i == len(unit) - 1), f"member at {offset}: empty record"
                position += r[2]
            assert unit[-1][3] is not None, f"member at {offset} does not inflate but reports no problem"
            cursor, floor = None, offset + 1
    if cursor is not None:
        cursor = past_empty_members(cursor, len(file))
        assert cursor == len(file), f"units end at {cursor}, the file at {len(file)}"


def check_file(file: bytes, layout, payload: bytes, max_record_bytes: int, cut_values: list[int]) -> None:
    path = str(_PATH)
    with open(path, "wb") as handle:
        handle.write(file)
    size = len(file)
    fmt = warc.detect_format(path)
    assert fmt in (warc.GZIP, warc.GZIP_STREAM, warc.ZSTD, warc.PLAIN, warc.EMPTY), fmt
    assert (fmt == warc.EMPTY) == (size == 0), f"format {fmt} for {size} bytes"
    whole = [
        _tuple(r) for r in warc.iter_records({"path": path, "format": fmt, "start": 0, "end": size}, max_record_bytes)
    ]

    if fmt == warc.PLAIN:
        check_tiling([Span(r[0], r[2], r[4], r[3]) for r in whole], file)
        assert all(r[1] is None for r in whole)
        assert whole == [
            (s.start, None, s.length, s.problem, s.data) for s in spans_of(file, max_record_bytes, 1 << 20)
        ]
    elif fmt in (warc.ZSTD, warc.GZIP_STREAM):  # one decompressed stream: records tile it from 0
        assert all(r[0] == 0 and r[1] is not None for r in whole)
        position = 0
        for i, r in enumerate(whole):
            assert r[1] == position and (r[2] > 0 or (r[3] is not None and i == len(whole) - 1))
            position += r[2]
        streamed = None
        if layout == "zstd":  # we compressed ``payload`` ourselves: nothing may be missing
            streamed = payload
        elif fmt == warc.GZIP_STREAM and isinstance(layout, list) and all(zipped for _, zipped, _ in layout):
            streamed = b"".join(piece for _, _, piece in layout)  # every member, inflated in turn
        if streamed is not None:
            want = [(0, s.start, s.length, s.problem, s.data) for s in spans_of(streamed, max_record_bytes, 1 << 20)]
            assert whole == want, f"{fmt} records differ from the records of the decompressed bytes"
    elif fmt == warc.GZIP:
        check_gzip_structure(whole, file, max_record_bytes)
        if isinstance(layout, list):
            assert whole == expected_records(layout, max_record_bytes), f"records differ from the file's layout ({fmt})"

    if fmt == warc.GZIP and size:
        cuts = sorted({0, size, *(c % (size + 1) for c in cut_values)})
        split = [
            _tuple(r)
            for start, end in zip(cuts, cuts[1:])
            for r in warc.iter_records({"path": path, "format": fmt, "start": start, "end": end}, max_record_bytes)
        ]
        assert split == whole, f"split read at {cuts} differs from the whole read"


def check(data: bytes) -> None:
    mode, max_record_bytes, read_size, mask, cut_values, payload, selector = decode(data)
    # The record splitter alone, over the payload: tiling, and the same result whatever the read size.
    spans = spans_of(payload, max_record_bytes, read_size)
    check_tiling(spans, payload)
    assert spans == spans_of(payload, max_record_bytes, 1 << 20), "spans depend on the read size"
    file, layout = build(mode, payload, mask, selector)
    check_file(file, layout, payload, max_record_bytes, cut_values)


def _signature(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    inner = [f for f in frames if "/tasks/crawl/" in f.filename] or frames
    place = f"{Path(inner[-1].filename).name}:{inner[-1].lineno}" if inner else "?"
    message = str(error).split(" at ")[0][:60] if isinstance(error, AssertionError) else ""
    return f"{type(error).__name__} {place} {message}"


def record_failure(data: bytes, error: BaseException) -> bool:
    """Save a failing input and its traceback; True when this kind of failure is new."""
    signature = _signature(error)
    if signature in _seen:
        return False
    _seen.add(signature)
    CRASH_DIR.mkdir(parents=True, exist_ok=True)
    name = CRASH_DIR / f"crash-{hashlib.sha1(data).hexdigest()}"
    name.write_bytes(data)
    text = "".join(traceback.format_exception(error))
    name.with_suffix(".txt").write_text(f"{signature}\ninput: {data!r}\n\n{text}")
    print(f"\n=== finding: {signature}\n    saved {name}\n{text}", file=sys.stderr, flush=True)
    return True


def TestOneInput(data: bytes) -> None:
    if not _KEEP_GOING:
        check(data)
        return
    try:
        check(data)
    except Exception as error:  # noqa: BLE001 - every exception is a finding, kept and counted
        record_failure(data, error)


# ---------------------------------------------------------------------------------------------
# Seeds


def _sample_records(limit: int = 3000) -> list[bytes]:
    """Small records (warcinfo, requests, a small response) from the sample's first members."""
    raw = SAMPLE.read_bytes()
    found, position = [], 0
    while position < len(raw) and len(found) < 12:
        decompressor = zlib.decompressobj(31)
        out = decompressor.decompress(raw[position:])
        position = len(raw) - len(decompressor.unused_data)
        if len(out) <= limit:
            found.append(out)
    return found


def _record(body: bytes, delta: int = 0, eol: bytes = b"\r\n", header: bytes = b"Content-Length") -> bytes:
    head = eol.join(
        [
            b"WARC/1.0",
            b"WARC-Type: resource",
            b"WARC-Target-URI: https://example.org/x",
            header + b": " + str(len(body) + delta).encode(),
            b"",
            b"",
        ]
    )
    return head + body + b"\r\n\r\n"


def seeds() -> list[bytes]:
    records = _sample_records()
    small = [r for r in records if len(r) < 700]
    response = next((r for r in records if len(r) > 1500), records[-1])
    body = b"hello\r\nworld, some text\nwith lines"
    ok = _record(body)
    out: list[bytes] = []
    for mode in MODES:
        for max_index in (1, 3):
            out.append(encode(mode, b"".join(small[:3]), max_index=max_index, cuts=(300, 700, 0)))
        out.append(encode(mode, small[0] + response, max_index=1, read_index=1, mask=0b0101, cuts=(1, 500, 1200)))
        out.append(encode(mode, ok + b"garbage\x00\xff" + ok, mask=0b0010, cuts=(5, 40, 90)))
    hand = [
        b"",
        ok,
        ok + ok + ok,
        _record(body, +1) + ok,
        _record(body, -1) + ok,
        _record(body, +5) + ok,
        _record(body, -5) + ok,
        _record(body, +100) + ok,
        _record(body, +4) + ok,
        _record(body, -len(body)) + ok,
        _record(body, 99999999999) + ok,
        _record(body, eol=b"\n"),
        _record(body, header=b"content-length") + _record(body, header=b"CONTENT-LENGTH "),
        ok.replace(b"Content-Length", b"X-Length"),
        ok.replace(b"\r\n\r\n", b"\r\n", 1),
        b"garbage before" + ok + b"garbage after",
        b"WARC/ not a version\r\n" + ok + b"WARC/1.0" + ok,
        _record(b"inner WARC/1.0\r\nContent-Length: 3\r\n\r\nabc\r\n\r\n") + ok,
        ok[:20],
        ok[:60],
        ok[: len(ok) - 2],
        ok[: len(ok) - 5],
        ok + b"\x1f\x8b\x08\x00junk" + ok,
        ok + gzip.compress(ok, mtime=0)[:30],
        response[:1500],
        small[0] + response[:1000] + small[1],
    ]
    for i, payload in enumerate(hand):
        for mode in ("raw", "gzip-pieces", "gzip-whole", "zstd-whole"):
            out.append(
                encode(
                    mode, payload, max_index=i % 4, read_index=i % 4, mask=(i * 5) % 16, cuts=(i * 7, i * 31, i * 101)
                )
            )
    head = SAMPLE.read_bytes()[:4402]  # the sample's first members, as they lie in the file
    as_is = [
        head[:712],
        head[:500],
        head[:335] + b"garbage" + head[335:712],
        head[:335] + ok + head[335:712],
        ok + head[:712],
        head[:712] + _record(body, +3),
        b"\x28\xb5\x2f\xfd" + b"\x00" * 8 + ok,
        zstandard.ZstdCompressor().compress(ok + ok)[:-3],
        zstandard.ZstdCompressor().compress(ok) + b"trailing garbage",
        _zstd_dict_file([ok, ok], False),
        _zstd_dict_file([ok, ok], True),
        _zstd_dict_file([ok, ok], True)[:40],
        warc.ZSTD_DICTIONARY_FRAME + b"\x10\x00\x00\x00" + b"\x28\xb5\x2f\xfd" + b"\x00" * 12 + ok,
        warc.ZSTD_DICTIONARY_FRAME + b"\xff\x00\x00\x00" + ok,
        gzip.compress(ok + ok, mtime=0)[:-4],
        gzip.compress(ok, mtime=0) + gzip.compress(b"not a record", mtime=0) + gzip.compress(ok, mtime=0),
    ]
    for i, payload in enumerate(as_is):
        out.append(encode("as-is", payload, max_index=(1, 3)[i % 2], cuts=(10 + i * 13, 200 + i * 17, 400 + i * 37)))
    return out


def write_seeds(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        old.unlink()
    all_seeds = seeds()
    for data in all_seeds:
        (directory / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
    return len(all_seeds)


def write_dictionary(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in token) + '"\n' for token in TOKENS))


# ---------------------------------------------------------------------------------------------
# Fallback: random mutation without atheris


def _mutate(data: bytes, pool: list[bytes], rng) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            del buf[at : at + rng.randint(1, 16)]
        elif op == 4:
            buf[at:at] = rng.choice(TOKENS)
        elif op == 5 and buf:
            a = rng.randrange(len(buf))
            buf[at:at] = buf[a : a + rng.randint(1, 64)]
        elif op == 6:
            other = rng.choice(pool)
            a = rng.randrange(len(other) + 1)
            buf[at:] = other[a:]
        elif op == 7 and len(buf) > HEADER:
            for m in re.finditer(rb"\d+", bytes(buf[HEADER:])):  # tweak a number (a Content-Length)
                if rng.random() < 0.5:
                    value = str(max(0, int(m.group()) + rng.randint(-6, 6))).encode()
                    buf[HEADER + m.start() : HEADER + m.end()] = value
                    break
    return bytes(buf[:8192])


def random_fuzz(args: list[str]) -> None:
    import random

    options = {a.split("=", 1)[0].lstrip("-"): a.split("=", 1)[1] for a in args if a.startswith("-") and "=" in a}
    runs = int(options.get("runs", options.get("atheris_runs", "-1")))
    limit = float(options.get("max_total_time", "0")) or float("inf")
    rng = random.Random(int(options.get("seed", "1")))
    pool = seeds()
    started = time.monotonic()
    count = findings = 0
    for data in pool + [Path(p).read_bytes() for p in args if not p.startswith("-") and Path(p).is_file()]:
        count += 1
        try:
            check(data)
        except Exception as error:  # noqa: BLE001
            findings += record_failure(data, error)
    while count != runs and time.monotonic() - started < limit:
        data = _mutate(rng.choice(pool), pool, rng)
        count += 1
        try:
            check(data)
        except Exception as error:  # noqa: BLE001
            findings += record_failure(data, error)
            if not _KEEP_GOING:
                break
        if count % 5000 == 0:
            pool.append(data)  # a little diversity; no coverage feedback in this mode
            print(f"#{count} {count / (time.monotonic() - started):.0f} exec/s findings: {findings}", flush=True)
    elapsed = time.monotonic() - started
    print(
        f"random mode: {count} runs in {elapsed:.0f} s ({count / max(elapsed, 1e-9):.0f} exec/s), {findings} distinct findings"
    )
    sys.exit(1 if findings and not _KEEP_GOING else 0)


def main() -> None:
    global _KEEP_GOING
    argv = sys.argv[1:]
    _KEEP_GOING = "--keep-going" in argv
    use_random = "--random" in argv or atheris is None
    argv = [a for a in argv if a not in ("--keep-going", "--random")]
    if use_random:
        if atheris is None:
            print("atheris is not importable here: running the plain random-mutation fallback", file=sys.stderr)
        random_fuzz(argv)
        return
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    paths = [a for a in argv if not a.startswith("-")]
    extra = []
    if not paths:  # a fresh seed directory next to the growing corpus
        corpus = WORK / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        count = write_seeds(WORK / "seeds")
        print(f"seeded {count} inputs into {WORK / 'seeds'}", file=sys.stderr)
        extra += [str(corpus), str(WORK / "seeds")]
    if "-dict" not in flags:
        write_dictionary(WORK / "warc.dict")
        extra.append(f"-dict={WORK / 'warc.dict'}")
    for flag, value in (
        ("-max_len", "8192"),
        ("-timeout", "30"),
        ("-artifact_prefix", f"{CRASH_DIR}/"),
        ("-print_final_stats", "1"),
    ):
        if flag not in flags:
            extra.append(f"{flag}={value}")
    CRASH_DIR.mkdir(parents=True, exist_ok=True)
    atheris.Setup([sys.argv[0], *argv, *extra], TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
