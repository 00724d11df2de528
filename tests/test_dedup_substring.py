"""Exact-substring dedup: the suffix-array result equals a brute-force search; chunks; rejects."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import numpy as np
import pytest
from test_dedup import outputs, paragraphs, run_dedup, write_shard

from fineflow import registry
from fineflow.tasks.dedup.config import DedupStage
from fineflow.tasks.dedup.report import cluster_tables, summary_fields
from fineflow.tasks.dedup.substring import SubstringDedup, dedup_texts, removed_mask

ALPHABETS = ["abcdefgh ", "äöüßéè ", "дгжзий ", "的一是不了人 ", "🙂🚀🌍 ", "ab\u0301c "]  # 1 to 4 bytes a character


def brute_force(texts: list[str], threshold: int) -> list[str]:
    """By definition: a byte goes when a span of >= threshold bytes covering it starts at a later
    offset than a copy of it (documents joined in order, no span across two documents); removed
    ranges widened to whole characters."""
    encoded = [t.encode() for t in texts]
    data = b"".join(encoded)
    owner = [i for i, t in enumerate(encoded) for _ in t]
    ends = [sum(map(len, encoded[: owner[p] + 1])) for p in range(len(data))]
    gone = [False] * len(data)
    for a in range(len(data)):
        longest = 0
        for b in range(a):
            n = 0
            while a + n < ends[a] and b + n < ends[b] and data[a + n] == data[b + n]:
                n += 1
            longest = max(longest, n)
        if longest >= threshold:
            gone[a : a + longest] = [True] * longest
    out, offset = [], 0
    for text in encoded:
        keep = bytearray()
        mask = gone[offset : offset + len(text)]
        for i, byte in enumerate(text):
            # a byte of a character any of whose bytes goes, goes (widened to whole characters)
            start = i
            while start > 0 and text[start] & 0xC0 == 0x80:
                start -= 1
            end = i + 1
            while end < len(text) and text[end] & 0xC0 == 0x80:
                end += 1
            if not any(mask[start:end]):
                keep.append(byte)
        out.append(keep.decode())
        offset += len(text)
    return out


def generated(rnd: random.Random, n_docs: int) -> list[str]:
    """Random texts over mixed alphabets with spans copied from earlier text (and from itself)."""
    texts: list[str] = []
    for _ in range(n_docs):
        alphabet = rnd.choice(ALPHABETS)
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(10, 120)))
        for _ in range(rnd.randrange(0, 3)):
            source = rnd.choice(texts + [text])
            start = rnd.randrange(len(source))
            piece = source[start : start + rnd.randrange(5, 80)]
            at = rnd.randrange(len(text) + 1)
            text = text[:at] + piece + text[at:]
        texts.append(text)
    return texts


@pytest.mark.parametrize("seed", range(12))
def test_equals_brute_force_on_multilingual_texts(seed):
    rnd = random.Random(seed)
    texts = generated(rnd, rnd.randrange(2, 7))
    threshold = rnd.choice([8, 12, 20, 40])
    options = SubstringDedup(length_threshold=threshold, chunk_bytes=10**6, min_chars=0)
    cut, spans, removed, chunks = dedup_texts(texts, options)
    assert cut == brute_force(texts, threshold)
    assert chunks == 1
    assert [len(t.encode()) - len(c.encode()) for t, c in zip(texts, cut)] == removed
    assert all((n > 0) == (r > 0) for n, r in zip(spans, removed))


def test_the_first_copy_stays_and_every_later_one_goes():
    span = "Ein wiederholter Absatz über Größe — 重复的段落 — repeated boilerplate!"
    texts = ["intro A:" + span, "intro B;" + span + " tail B.", "nothing here"]
    threshold = len(span.encode()) - 4
    cut, spans, removed, _ = dedup_texts(texts, SubstringDedup(length_threshold=threshold, min_chars=0))
    assert cut == ["intro A:" + span, "intro B; tail B.", "nothing here"]
    assert spans == [0, 1, 0] and removed == [0, len(span.encode()), 0]
    # a span one byte shorter than the threshold stays
    cut, _, _, _ = dedup_texts(texts, SubstringDedup(length_threshold=len(span.encode()) + 1, min_chars=0))
    assert cut == texts


def test_repeats_across_chunks_are_not_found():
    span = "x" * 5 + "a repeated span of boilerplate long enough to count" + "y" * 5
    rnd = random.Random(0)
    fillers = ["".join(rnd.choice("pqrs") for _ in range(440)) for _ in range(3)]
    texts = [filler + mark + span + end for filler, mark, end in zip(fillers, "123", "!?.")]
    # 503 bytes each: the first two fit a chunk of 1024 bytes (with their separators), the third does not
    cut, _, _, chunks = dedup_texts(texts, SubstringDedup(length_threshold=20, chunk_bytes=1024, min_chars=0))
    assert chunks == 2 and cut == [texts[0], fillers[1] + "2?", texts[2]]
    cut, _, _, chunks = dedup_texts(texts, SubstringDedup(length_threshold=20, chunk_bytes=4096, min_chars=0))
    assert chunks == 1 and cut == [texts[0], fillers[1] + "2?", fillers[2] + "3."]
    # documents are never joined into a match: the separator ends every common prefix
    assert not removed_mask(b"abcdefghij\xffabcdefghij", 11).any()
    assert removed_mask(b"abcdefghij\xffabcdefghij", 10)[11:].all()


def test_substring_mode_rewrites_text_and_drops_documents_left_too_short(tmp_path):
    day = datetime(2024, 5, 1, tzinfo=timezone.utc)
    boiler = " ".join(paragraphs(7, 2))
    docs = [
        {"id": "first", "url": "https://a.example/1", "text": "Welcome!" + boiler, "crawl_date": day},
        {"id": "cut", "url": "https://a.example/2", "text": "Own words here, quite a few of them in fact?" + boiler, "crawl_date": day},
        {"id": "emptied", "url": "https://a.example/3", "text": boiler, "crawl_date": day},
        {"id": "short-uncut", "url": "https://a.example/4", "text": "tiny", "crawl_date": day},
    ]
    folder = tmp_path / "up"
    folder.mkdir()
    write_shard(folder / "part-00000.parquet", docs)
    config = {"exact": False, "url": False, "near": False, "substring": {"min_chars": 20}}
    results = run_dedup(str(folder), 1, str(tmp_path / "root"), **config)
    kept, rejects = outputs(results)
    assert kept["id"].to_list() == ["first", "cut", "short-uncut"]  # short already: not the cut's doing
    assert kept["text"].to_list() == [docs[0]["text"], "Own words here, quite a few of them in fact?", "tiny"]
    assert kept["substring_bytes_removed"].to_list() == [0, len(boiler.encode()), 0]
    assert rejects["drop_reason"].to_list() == ["substring_too_short"] and rejects["text"].to_list() == [boiler]
    stats = results["remove"][0]["stats"]
    assert stats["drop_reasons"] == {"substring_too_short": 1}
    assert stats["substring_bytes_removed"] == 2 * len(boiler.encode()) and stats["substring_spans_removed"] == 2
    summary = summary_fields({"remove": stats})
    assert summary["substring_docs_cut"] == 2 and summary["drop_reasons"] == {"substring_too_short": 1}
    rows = cluster_tables({"name": "dedup", "steps": [{"step": "remove", **stats}], **summary})[0].rows
    assert {"what": "substring bytes removed", "value": 2 * len(boiler.encode())} in rows
    kind = registry.get("dedup")
    assert kind.rewrites(DedupStage.model_validate({"stage": "dedup", **config}))
    assert not kind.rewrites(DedupStage.model_validate({"stage": "dedup"}))


def test_options_are_range_checked():
    with pytest.raises(ValueError, match="length_threshold"):
        SubstringDedup(length_threshold=0)
    with pytest.raises(ValueError, match="chunk_bytes"):
        SubstringDedup(chunk_bytes=2**40)
    assert np.array_equal(removed_mask(b"short", 100), np.zeros(5, bool))


def test_after_the_document_dedup_only_kept_documents_are_cut(tmp_path):
    day = datetime(2024, 5, 1, tzinfo=timezone.utc)
    boiler = " ".join(paragraphs(8, 1))
    own = " ".join(paragraphs(9, 2))
    docs = [
        {"id": "original", "url": "https://a.example/1", "text": own + "!" + boiler, "crawl_date": day},
        {"id": "exact-copy", "url": "https://b.example/1", "text": own + "!" + boiler, "crawl_date": day.replace(day=2)},
        {"id": "shares-boilerplate", "url": "https://c.example/1", "text": "Other words entirely, enough of them?" + boiler, "crawl_date": day},
    ]
    folder = tmp_path / "up"
    folder.mkdir()
    write_shard(folder / "part-00000.parquet", docs)
    results = run_dedup(str(folder), 1, str(tmp_path / "root"), near=False, substring={"min_chars": 10})
    kept, rejects = outputs(results)
    # the exact copy goes as a document; its text does not count as an earlier copy of anything
    assert dict(zip(rejects["id"], rejects["drop_reason"])) == {"exact-copy": "exact_duplicate"}
    assert kept["text"].to_list() == [docs[0]["text"], "Other words entirely, enough of them?"]
    assert kept["dup_cluster_size"].to_list() == [2, 1]
    assert kept["substring_spans_removed"].to_list() == [0, 1]


def test_a_text_that_is_not_utf8_is_its_own_reject_and_the_others_are_cut(tmp_path):
    """One undecodable document (bytes another writer stored as a string) never fails the shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    boiler = " ".join(paragraphs(7, 2))
    docs = [{"id": "a", "url": "https://a.example/1", "text": "Hello." + boiler},
            {"id": "b", "url": "https://a.example/2", "text": "Other words here, a good number of them." + boiler},
            {"id": "bad", "url": "https://a.example/3", "text": "x"}]
    folder = tmp_path / "up"
    folder.mkdir()
    write_shard(folder / "part-00000.parquet", docs)
    table = pq.read_table(folder / "part-00000.parquet")
    broken = pa.array([d["text"].encode() for d in docs[:2]] + [b"caf\xc3 \xff" + boiler.encode()], pa.binary())
    table = table.set_column(table.schema.get_field_index("text"), "text", broken.cast(pa.string(), safe=False))
    pq.write_table(table, folder / "part-00000.parquet")
    results = run_dedup(str(folder), 1, str(tmp_path / "root"), exact=False, url=False, near=False, substring={"min_chars": 20})
    kept, rejects = outputs(results)
    assert kept["id"].to_list() == ["a", "b"] and kept["substring_bytes_removed"].to_list()[1] > len(boiler) // 2
    assert rejects["id"].to_list() == ["bad"] and rejects["drop_reason"].to_list() == ["substring_undecodable"]
    assert "\ufffd" in rejects["text"].to_list()[0]
    assert results["remove"][0]["stats"]["drop_reasons"] == {"substring_undecodable": 1}
