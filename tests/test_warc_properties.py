"""Property tests: generated WARC byte streams (valid records, garbage between them, lying
lengths, truncation, per-record gzip, one gzip stream, zstd, uncompressed records mixed into
gzip) never make the reader raise, lose or invent a record, and split reads equal whole reads."""

from __future__ import annotations

import gzip
import os
import uuid

from backports import zstd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fineflow.tasks.crawl.records import iter_spans
from fineflow.tasks.crawl.warc import detect_format, iter_gzip_records, iter_records

MAX = 1 << 20
SETTINGS = settings(max_examples=int(os.environ.get("FINEFLOW_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Bodies: text with line breaks (never "WARC/", never a blank CRLF line).
_BODY = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\x00"), max_size=400).map(
    lambda text: text.replace("WARC/", "warc/").encode()
)
_GARBAGE = st.binary(min_size=1, max_size=120).filter(lambda b: b"WARC/" not in b and b"\x1f\x8b" not in b and b"\x28\xb5" not in b)


def _record(number: int, body: bytes, declared_delta: int = 0) -> bytes:
    head = (
        f"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Target-URI: https://example.org/{number}\r\n"
        f"WARC-Record-ID: <urn:uuid:{uuid.UUID(int=number)}>\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body) + declared_delta}\r\n\r\n"
    ).encode()
    return head + body + b"\r\n\r\n"


@st.composite
def streams(draw):
    """(pieces, honest records): each piece is (bytes, is_honest_record)."""
    pieces = []
    for number in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["record"] * 6 + ["garbage", "liar", "nested"]))
        body = draw(_BODY)
        if kind == "record":
            pieces.append((_record(number, body), True))
        elif kind == "nested":  # a record whose body is a .warc.gz: real gzip members inside a member
            inner = b"".join(gzip.compress(_record(1000 + number * 10 + i, body)) for i in range(draw(st.integers(1, 3))))
            pieces.append((_record(number, inner), True))
        elif kind == "garbage":
            pieces.append((draw(_GARBAGE), False))
        else:
            delta = draw(st.integers(-len(body), 600).filter(lambda d: d not in (0, 1, 2, 3, 4)))
            pieces.append((_record(number, body, delta), False))
    return pieces


def _lies_land_cleanly(pieces, cut: int | None = None) -> bool:
    """Exclude the one ambiguous case: a lying length landing exactly on another record's trailer
    (or on the end of the data: a cut there looks like an honest last record)."""
    data = b"".join(p for p, _ in pieces)[:cut]
    position = 0
    for piece, honest in pieces:
        if not honest and piece.startswith(b"WARC/"):
            header_end = piece.index(b"\r\n\r\n")
            declared = int(piece[piece.index(b"Content-Length: ") + 16 : header_end])
            block_end = position + header_end + 4 + declared
            if data[block_end : block_end + 4] == b"\r\n\r\n" or block_end >= len(data) - 4:
                return False
        position += len(piece)
    return True


def _good(records) -> list[bytes]:
    return [r.data for r in records if r.data is not None]


def _write(tmp_path_factory, data: bytes):
    path = tmp_path_factory.mktemp("fuzz") / "input"
    path.write_bytes(data)
    return path


@SETTINGS
@given(pieces=streams(), shape=st.sampled_from(["plain", "gzip-members", "gzip-stream", "zstd", "mixed"]))
def test_reader_keeps_exactly_the_honest_records(tmp_path_factory, pieces, shape):
    assume(_lies_land_cleanly(pieces))
    honest = [piece for piece, is_record in pieces if is_record]
    if shape == "plain":
        data = b"".join(p for p, _ in pieces)
    elif shape == "gzip-members":
        data = b"".join(p if p[:5] != b"WARC/" else gzip.compress(p) for p, ok in pieces)  # garbage stays raw
    elif shape == "mixed":  # every other record left uncompressed between members
        data = b"".join(gzip.compress(p) if i % 2 == 0 else p for i, (p, _) in enumerate(pieces))
    elif shape == "gzip-stream":
        data = gzip.compress(b"".join(p for p, _ in pieces))
    else:
        data = zstd.compress(b"".join(p for p, _ in pieces))
    path = _write(tmp_path_factory, data)
    fmt = detect_format(str(path))
    records = list(iter_records({"path": str(path), "format": fmt, "start": 0, "end": len(data)}, MAX))
    assert _good(records) == honest
    problems = [r for r in records if r.problem]
    assert bool(problems) == (len(honest) < len(pieces))  # something was wrong iff it says so


@SETTINGS
@given(pieces=streams(), cut=st.floats(0, 1))
def test_uncompressed_spans_tile_the_stream_and_truncation_keeps_the_prefix(pieces, cut):
    data = b"".join(p for p, _ in pieces)
    data = data[: int(len(data) * cut)]
    assume(_lies_land_cleanly(pieces, len(data)))
    chunks = iter([data[i : i + 37] for i in range(0, len(data), 37)])  # small reads: buffer edges
    spans = list(iter_spans(lambda: next(chunks, b""), lambda position: iter([data[position:], b""]).__next__, MAX))
    position = 0
    for span in spans:  # every byte is in exactly one span: a record or a counted problem
        assert span.start == position and span.length > 0
        position += span.length
    assert position == len(data)
    kept = [s.data for s in spans if s.data is not None]
    offset = 0
    complete = []
    for piece, honest in pieces:
        offset += len(piece)
        if honest and offset <= len(data):
            complete.append(piece)
    assert kept[: len(complete)] == complete and len(kept) - len(complete) <= 1
    for extra in kept[len(complete) :]:  # a record cut inside its trailer is still whole
        assert any(p.startswith(extra.rstrip(b"\r\n")) for p, ok in pieces if ok)


@SETTINGS
@given(pieces=streams(), bounds=st.lists(st.floats(0, 1), max_size=4), truncate=st.booleans())
def test_split_reads_equal_whole_reads(tmp_path_factory, pieces, bounds, truncate):
    data = b"".join(gzip.compress(p) if i % 3 else p for i, (p, _) in enumerate(pieces))
    if truncate:
        data = data[: len(data) * 2 // 3]
    assume(data)
    path = _write(tmp_path_factory, data)
    cuts = sorted({0, len(data), *(int(b * len(data)) for b in bounds)})
    whole = [(r.offset, r.inner, r.length, r.problem, r.data) for r in iter_gzip_records(str(path), 0, len(data), MAX)]
    split = [
        (r.offset, r.inner, r.length, r.problem, r.data)
        for start, end in zip(cuts, cuts[1:])
        for r in iter_gzip_records(str(path), start, end, MAX)
    ]
    assert split == whole
