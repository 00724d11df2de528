"""Reading WARC records by byte range, and surviving corrupt input, on the real sample."""

from __future__ import annotations

from collections import Counter

import pytest

from fineflow.tasks.crawl.inputs import describe_files, plan_shards
from fineflow.tasks.crawl.warc import CORRUPT, TRUNCATED, iter_gzip_records

MAX = 64 << 20


def _members(path, start=0, end=None):
    end = end if end is not None else path.stat().st_size
    return list(iter_gzip_records(str(path), start, end, MAX))


def test_ranges_partition_the_records_exactly(sample_warc):
    whole = _members(sample_warc)
    assert len(whole) > 400 and all(m.problem is None for m in whole)
    size = sample_warc.stat().st_size
    for pieces in (2, 3, 7):
        bounds = [size * i // pieces for i in range(pieces + 1)]
        split = [m.offset for a, b in zip(bounds, bounds[1:]) for m in _members(sample_warc, a, b)]
        assert split == [m.offset for m in whole]


def test_shard_plan_covers_the_file_and_ignores_worker_count(sample_warc):
    described = describe_files([str(sample_warc)], memo_root=None, content_hash=True)
    shards = plan_shards(described, shard_bytes=500_000)
    assert [s["shard"] for s in shards] == list(range(len(shards)))
    assert shards[0]["start"] == 0 and shards[-1]["end"] == sample_warc.stat().st_size
    assert all(a["end"] == b["start"] for a, b in zip(shards, shards[1:]))
    assert plan_shards(described, shard_bytes=500_000) == shards


def _corrupted(sample_warc, tmp_path):
    data = sample_warc.read_bytes()
    offsets = [m.offset for m in _members(sample_warc)]
    broken = (
        data[: offsets[10]]
        + b"\x00garbage\xff" * 50  # garbage between two members
        + data[offsets[10] : offsets[20]]
        + data[offsets[20] + 12 : offsets[30]]  # member 20 loses its head
        + data[offsets[30] : offsets[31] + 200]  # the file ends inside member 31
    )
    path = tmp_path / "broken.warc.gz"
    path.write_bytes(broken)
    return path


def test_corrupt_regions_are_reported_and_good_records_kept(sample_warc, tmp_path):
    path = _corrupted(sample_warc, tmp_path)
    members = _members(path)
    problems = Counter(m.problem for m in members)
    assert problems[CORRUPT] == 2 and problems[TRUNCATED] == 1
    good = [m for m in members if m.problem is None]
    assert len(good) == 30  # members 0-9, 10-19, 21-29 and 30: none lost
    assert all(m.data.startswith(b"WARC/1.") for m in good)


@pytest.mark.parametrize("pieces", [2, 3, 5])
def test_corrupt_file_split_into_ranges_reports_the_same(sample_warc, tmp_path, pieces):
    path = _corrupted(sample_warc, tmp_path)
    whole = [(m.offset, m.problem) for m in _members(path)]
    size = path.stat().st_size
    bounds = [size * i // pieces for i in range(pieces + 1)]
    split = [(m.offset, m.problem) for a, b in zip(bounds, bounds[1:]) for m in _members(path, a, b)]
    assert split == whole


def test_garbage_file_is_one_corrupt_record(tmp_path):
    path = tmp_path / "garbage.warc.gz"
    path.write_bytes(b"\x1f\x8b\x08 this is not gzip at all" * 100)
    members = _members(path)
    assert [m.problem for m in members] == [CORRUPT]


def test_a_warc_gz_inside_a_record_is_never_taken_for_members_of_the_file(sample_warc, tmp_path):
    """Deflate stores incompressible bytes verbatim, so a record whose body is a .warc.gz carries
    real gzip members inside its own member: a shard starting among them must step over them."""
    import gzip

    records = [m.data for m in _members(sample_warc)[:6]]
    inner = b"".join(gzip.compress(r) for r in records[1:4])
    head = (
        "WARC/1.0\r\nWARC-Type: resource\r\nWARC-Target-URI: https://example.org/crawl.warc.gz\r\n"
        f"Content-Type: application/warc\r\nContent-Length: {len(inner)}\r\n\r\n"
    ).encode()
    path = tmp_path / "nested.warc.gz"
    path.write_bytes(gzip.compress(records[0]) + gzip.compress(head + inner + b"\r\n\r\n") + gzip.compress(records[5]))
    whole = [(m.offset, m.inner, m.length, m.problem) for m in _members(path)]
    assert [m[3] for m in whole] == [None, None, None] and len(whole) == 3
    size = path.stat().st_size
    for cut in range(1, size, 7):  # every shard boundary, including those inside the embedded members
        split = [(m.offset, m.inner, m.length, m.problem) for a, b in ((0, cut), (cut, size)) for m in _members(path, a, b)]
        assert split == whole, cut


def test_a_damaged_zstd_dictionary_is_one_corrupt_record(tmp_path):
    from fineflow.tasks.crawl.warc import ZSTD, detect_format, iter_records

    path = tmp_path / "bad-dictionary.warc.zst"
    path.write_bytes(b"]*M\x18\t\x00\x00\x00(\xb5/\xfd\x14\x00-\x06'")  # found by bench/fuzz_warc.py
    assert detect_format(str(path)) == ZSTD
    records = list(iter_records({"path": str(path), "format": ZSTD, "start": 0, "end": 17}, MAX))
    assert [m.problem for m in records] == [CORRUPT]


def test_an_uncompressed_head_never_spans_a_member(sample_warc, tmp_path):
    """Found by bench/fuzz_warc.py: a broken uncompressed head whose header end and length lie past
    the next member was taken for one record holding that member's bytes."""
    import gzip

    records = [m.data for m in _members(sample_warc)[:3]]
    path = tmp_path / "mixed.warc.gz"
    path.write_bytes(
        gzip.compress(records[0])
        + b"WARC/1.0\r\nX-Broken: head\r\n"  # no blank line: its headers never end here
        + gzip.compress(records[2])
        + b"\r\nContent-Length: 10\r\n\r\n0123456789\r\n\r\n"
    )
    found = _members(path)
    assert [m.data for m in found if m.data] == [records[0], records[2]]
    assert [m.problem for m in found if m.problem] == [CORRUPT, CORRUPT]


def test_an_oversized_uncompressed_record_between_members_is_oversized(sample_warc, tmp_path):
    """Found by bench/fuzz_warc.py: the check for a member inside a record's headers looked past
    the headers of a record too large to hold, and called it corrupt."""
    import gzip

    from fineflow.tasks.crawl.warc import OVERSIZED

    records = [m.data for m in _members(sample_warc)[:3]]
    path = tmp_path / "mixed.warc.gz"
    path.write_bytes(gzip.compress(records[0]) + records[1] + gzip.compress(records[2]))
    found = list(iter_gzip_records(str(path), 0, path.stat().st_size, 100))  # every record is oversized
    assert [(m.inner is None, m.problem) for m in found] == [(False, OVERSIZED), (True, OVERSIZED), (False, OVERSIZED)]
