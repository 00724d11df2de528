"""Every shape of WARC gives the same documents: per-record gzip, one gzip stream, zstd (with and
without a dictionary), uncompressed, mixed; and a lying Content-Length loses nothing else."""

from __future__ import annotations

import gzip
import re

import polars as pl
import pytest
from backports import zstd

from fineflow.tasks.crawl.inputs import describe_files, plan_shards
from fineflow.tasks.crawl.stage import extract_shard
from fineflow.tasks.crawl.warc import (
    CORRUPT,
    GZIP,
    GZIP_STREAM,
    PLAIN,
    ZSTD,
    ZSTD_DICTIONARY_FRAME,
    detect_format,
    iter_gzip_records,
)

PARAMS = dict(
    extractor="resiliparse", extraction_timeout_s=30.0, include_text_plain=False, keep_truncated=False,
    max_record_bytes=64 << 20, langid_model="lid.176", url_filter=None, url_filter_options={},
)


def _records(sample):
    return [m.data for m in iter_gzip_records(str(sample), 0, sample.stat().st_size, 64 << 20)]


def _extract(path, out, shard_bytes=1 << 30):
    shards = plan_shards(describe_files([str(path)], None, True), shard_bytes)
    docs, stats = [], []
    for shard in shards:
        folder = out / f"s{shard['shard']}"
        result = extract_shard(shard, PARAMS, str(folder / "part.parquet"), str(folder / "rejects.parquet"))
        docs.append(pl.read_parquet(folder / "part.parquet"))
        stats.append(result["stats"])
    return shards, pl.concat(docs), stats


@pytest.fixture(scope="module")
def reference(sample_warc, tmp_path_factory):
    shards, docs, stats = _extract(sample_warc, tmp_path_factory.mktemp("reference"))
    return docs.sort("id"), stats[0]


def _zstd_with_dictionary(data: bytes, records: list[bytes]) -> bytes:
    """The WARC-zstd convention: a dictionary in a skippable frame, then one frame per record."""
    dictionary = zstd.train_dict(records[:200], 16384)
    frame = zstd.compress(dictionary.dict_content)  # the dictionary may be compressed
    return ZSTD_DICTIONARY_FRAME + len(frame).to_bytes(4, "little") + frame + b"".join(zstd.compress(r, zstd_dict=dictionary) for r in records)


@pytest.mark.parametrize("shape", ["gzip-stream", "zstd", "zstd-dictionary", "plain"])
def test_every_shape_gives_the_same_documents_and_ids(sample_warc, tmp_path, reference, shape):
    records = _records(sample_warc)
    raw = b"".join(records)
    content = {
        "gzip-stream": lambda: gzip.compress(raw),
        "zstd": lambda: zstd.compress(raw),
        "zstd-dictionary": lambda: _zstd_with_dictionary(raw, records),
        "plain": lambda: raw,
    }[shape]()
    path = tmp_path / "sample.bin"  # the name says nothing: the format is sniffed from the content
    path.write_bytes(content)
    expected_format = {"gzip-stream": GZIP_STREAM, "zstd": ZSTD, "zstd-dictionary": ZSTD, "plain": PLAIN}[shape]
    assert detect_format(str(path)) == expected_format

    shards, docs, stats = _extract(path, tmp_path, shard_bytes=100_000)  # small shards: only gzip splits
    assert len(shards) == 1 and shards[0]["format"] == expected_format
    expected, reference_stats = reference
    docs = docs.sort("id")
    assert docs["id"].to_list() == expected["id"].to_list()
    assert docs["text"].to_list() == expected["text"].to_list()
    assert stats[0]["docs_in"] == reference_stats["docs_in"] and stats[0]["skips"] == reference_stats["skips"]


def test_per_record_gzip_is_still_split(sample_warc, tmp_path, reference):
    assert detect_format(str(sample_warc)) == GZIP
    shards, docs, _ = _extract(sample_warc, tmp_path, shard_bytes=500_000)
    assert len(shards) > 1
    assert docs.sort("id")["id"].to_list() == reference[0]["id"].to_list()


def _lie(record: bytes, delta: int) -> bytes:
    return re.sub(rb"Content-Length: (\d+)", lambda m: b"Content-Length: " + str(int(m.group(1)) + delta).encode(), record, count=1)


def _ten_records_with_an_html_response(sample_warc):
    records = _records(sample_warc)
    for start in range(len(records) - 10):
        window = records[start : start + 10]
        if b"WARC-Type: response" in window[4][:400] and b"text/html" in window[4][:1500]:
            return window
    raise AssertionError("no window found")


@pytest.mark.parametrize("delta", [500, -50])
@pytest.mark.parametrize("compress", [False, True])
def test_a_lying_length_costs_only_its_own_record(sample_warc, tmp_path, delta, compress):
    records = _ten_records_with_an_html_response(sample_warc)
    clean = tmp_path / "clean.warc"
    clean.write_bytes(b"".join(records))
    _, clean_docs, clean_stats = _extract(clean, tmp_path / "clean")
    liar_id = set(clean_docs["id"]) - set(
        _extract(_write(tmp_path / "without.warc", b"".join(records[:4] + records[5:])), tmp_path / "without")[1]["id"]
    )
    assert len(liar_id) == 1  # record 4 is a document when honest

    lying = b"".join(_lie(r, delta) if i == 4 else r for i, r in enumerate(records))
    path = _write(tmp_path / "liar.warc", gzip.compress(lying) if compress else lying)
    _, docs, stats = _extract(path, tmp_path / "liar")
    assert stats[0]["skips"].get(CORRUPT) == 1
    assert stats[0]["docs_in"] == clean_stats[0]["docs_in"]  # every record accounted for
    assert set(docs["id"]) == set(clean_docs["id"]) - liar_id  # every good record kept
    assert not docs["text"].str.contains("WARC-Type|WARC/1\\.|WARC-Record-ID").any()


def _write(path, data):
    path.write_bytes(data)
    return path


def test_uncompressed_records_between_gzip_members_are_read(sample_warc, tmp_path, reference):
    records = _records(sample_warc)
    mixed = b"".join(r if i % 3 else gzip.compress(r) for i, r in enumerate(records))  # starts with a member
    path = _write(tmp_path / "mixed.warc.gz", mixed)
    assert detect_format(str(path)) == GZIP
    _, docs, stats = _extract(path, tmp_path, shard_bytes=300_000)
    assert docs.sort("id")["id"].to_list() == reference[0]["id"].to_list()
    assert sum(s["skips"].get(CORRUPT, 0) for s in stats) == 0


def test_gzip_members_cut_by_size_are_one_stream(sample_warc, tmp_path, reference):
    """bgzip-style files: members of a fixed size, records spanning them (as `gzip -d` reads them)."""
    raw = b"".join(_records(sample_warc))
    blocks = b"".join(gzip.compress(raw[i : i + 60_000]) for i in range(0, len(raw), 60_000))
    path = _write(tmp_path / "blocks.warc.gz", blocks)
    assert detect_format(str(path)) == GZIP_STREAM
    _, docs, stats = _extract(path, tmp_path)
    assert docs.sort("id")["id"].to_list() == reference[0]["id"].to_list() and CORRUPT not in stats[0]["skips"]


def test_hostile_records_are_counted_not_raised(sample_warc, tmp_path):
    from fineflow.tasks.crawl.warc import iter_records

    good = _records(sample_warc)[1]
    cases = {
        "huge length": b"WARC/1.0\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nabc\r\n\r\n" + good,
        "no trailer in its member": gzip.compress(good[:-4]) + gzip.compress(good),
        "short trailer in its member": gzip.compress(good[:-2]) + gzip.compress(good),
        "endless headers": b"WARC/1.0\r\nX: y\r\n" * 20_000 + good,
    }
    for name, data in cases.items():
        path = _write(tmp_path / "case", data)
        records = list(iter_records({"path": str(path), "format": detect_format(str(path)), "start": 0, "end": len(data)}, 1 << 20))
        kept = [r.data for r in records if r.data]
        assert kept and all(k.rstrip(b"\r\n") == good.rstrip(b"\r\n") for k in kept), name
        assert sum(r.length for r in records if r.inner is None) in (0, len(data)), name


def test_a_member_failing_its_checksum_does_not_yield_its_record(sample_warc, tmp_path):
    from fineflow.tasks.crawl.warc import iter_gzip_records

    records = _records(sample_warc)[:3]
    members = [bytearray(gzip.compress(r)) for r in records]
    members[1][-8] ^= 0xFF  # the CRC32 in the member's trailer
    path = _write(tmp_path / "crc.warc.gz", b"".join(bytes(m) for m in members))
    found = list(iter_gzip_records(str(path), 0, path.stat().st_size, 1 << 20))
    assert [r.data for r in found if r.data] == [records[0], records[2]]
    assert [r.problem for r in found if r.problem] == [CORRUPT]


def test_zstd_garbage_between_frames_and_damaged_dictionaries_are_counted(sample_warc, tmp_path):
    from fineflow.tasks.crawl.warc import iter_records

    records = _records(sample_warc)[:5]
    frames = [zstd.compress(r) for r in records]

    def read(data: bytes):
        path = _write(tmp_path / "input.zst", data)
        found = list(iter_records({"path": str(path), "format": ZSTD, "start": 0, "end": len(data)}, 1 << 20))
        return [r.data for r in found if r.data], [r.problem for r in found if r.problem]

    assert read(frames[0] + b"garbage between frames" + b"".join(frames[1:])) == (records, [CORRUPT])
    dictionary = zstd.train_dict(_records(sample_warc)[:200], 16384)
    damaged = bytearray(dictionary.dict_content)
    damaged[20:60] = bytes(40)
    with_dictionary = b"".join(zstd.compress(r, zstd_dict=dictionary) for r in records)
    frame = ZSTD_DICTIONARY_FRAME + len(damaged).to_bytes(4, "little") + bytes(damaged)
    assert read(frame + with_dictionary) == ([], [CORRUPT])
    cut = ZSTD_DICTIONARY_FRAME + (len(dictionary.dict_content) + 999).to_bytes(4, "little") + dictionary.dict_content
    assert read(cut) == ([], [CORRUPT])
