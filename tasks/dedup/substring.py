"""Exact-substring dedup (Nemotron-CC's use of google-research/deduplicate-text-datasets, in-process):
every span of at least ``length_threshold`` UTF-8 bytes that already occurred earlier in the same
chunk is cut out of the document holding the later copy.

A chunk is a run of consecutive documents of one shard, in shard order, of at most ``chunk_bytes``
UTF-8 bytes (a longer document is a chunk alone). Repeats are looked for inside a chunk only: a
span whose copies lie in different chunks (or shards) is not found, as the recipe's tool finds
nothing across its chunks. Which copy goes: all but the first in canonical order (the document
earlier in the shard; in one document, the earlier offset). Byte ranges are widened to whole
characters before they are cut, so the text stays valid UTF-8.

How: the chunk's texts joined by a 0xFF byte (never in UTF-8, so no match runs across two
documents), a suffix array (``pydivsufsort``, libdivsufsort) and its LCP array; suffixes linked by
an LCP of at least the threshold form a group of identical prefixes, and every member of a group
but the one at the smallest offset starts a removed window of ``length_threshold`` bytes (the union
of these windows is exactly the union of every later copy of every repeated span). All numpy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

SEPARATOR = 0xFF
TOO_SHORT = "substring_too_short"
UNDECODABLE = "substring_undecodable"  # text that is not UTF-8 (another writer's bytes): its own reject
SPANS_COLUMN = "substring_spans_removed"
BYTES_COLUMN = "substring_bytes_removed"


class SubstringDedup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    length_threshold: int = Field(
        default=100, ge=8, le=1_000_000, description="shortest repeated span removed, in UTF-8 bytes (the recipe's 100)"
    )
    chunk_bytes: int = Field(
        default=32 * 2**20, ge=1024, le=2**31 - 2, description="UTF-8 bytes per suffix array (a shard is split into chunks)"
    )
    min_chars: int = Field(default=50, ge=0, le=1_000_000, description="a document the cut leaves shorter (in characters) is dropped")


def chunks(texts: list[bytes], chunk_bytes: int) -> Iterator[list[int]]:
    """Row numbers of consecutive documents, at most ``chunk_bytes`` bytes (with separators) each."""
    rows: list[int] = []
    size = 0
    for row, text in enumerate(texts):
        if rows and size + len(text) + 1 > chunk_bytes:
            yield rows
            rows, size = [], 0
        rows.append(row)
        size += len(text) + 1
    if rows:
        yield rows


def removed_mask(data: bytes, threshold: int) -> np.ndarray:
    """For the bytes of one chunk (texts joined by 0xFF), True where a byte belongs to a span of at
    least ``threshold`` bytes that also starts at an earlier offset."""
    from pydivsufsort import divsufsort, kasai

    n = len(data)
    mask = np.zeros(n, dtype=bool)
    if n <= threshold:
        return mask
    raw = np.frombuffer(data, dtype=np.uint8)
    sa = divsufsort(data)  # int32 (chunks are < 2 GiB)
    lcp = kasai(data, sa)  # lcp[r]: common prefix of suffixes sa[r] and sa[r + 1]
    # only ranks with a long common prefix matter: everything after is sized by them, not the chunk
    linked = np.flatnonzero(lcp[:-1] >= threshold)
    prefix, offset = lcp[linked], sa[linked]
    del lcp
    # a common prefix stops at a separator (both suffixes have it at the same offset)
    separators = np.flatnonzero(raw == SEPARATOR)
    next_separator = np.append(separators, n)[np.searchsorted(separators, offset)]
    linked = linked[np.minimum(prefix, next_separator - offset) >= threshold]
    del prefix, offset, next_separator, separators
    if not len(linked):
        return mask
    # groups: runs of ranks linked to the next; in each, the smallest offset is the first copy
    to_next = np.zeros(n + 1, dtype=bool)  # rank r is linked to rank r + 1
    to_next[linked] = True
    del linked
    members = np.flatnonzero(to_next[:-1] | np.roll(to_next, 1)[:-1])
    opens = np.flatnonzero(~to_next[members - 1])  # a member not linked to the rank before it (members >= 1 or rank 0)
    del to_next
    starts = sa[members]
    del sa, members
    first = np.repeat(np.minimum.reduceat(starts, opens), np.diff(np.append(opens, len(starts))))
    later = starts[starts != first]
    del starts, first
    cover = np.zeros(n + 1, dtype=np.int32)
    cover[later] += 1  # offsets are unique, so plain indexing adds once each
    cover[later + threshold] -= 1
    return np.cumsum(cover[:-1], dtype=np.int32) > 0


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _whole_characters(text: bytes, start: int, end: int) -> tuple[int, int]:
    """Widen a byte range to character boundaries (a UTF-8 continuation byte is 0b10xxxxxx)."""
    while start > 0 and text[start] & 0xC0 == 0x80:
        start -= 1
    while end < len(text) and text[end] & 0xC0 == 0x80:
        end += 1
    return start, end


def cut(text: bytes, mask: np.ndarray) -> tuple[bytes, int, int]:
    """The text without its masked bytes (widened to whole characters): text, spans, bytes removed."""
    spans: list[tuple[int, int]] = []
    for start, end in _runs(mask):
        start, end = _whole_characters(text, start, end)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    if not spans:
        return text, 0, 0
    pieces, previous = [], 0
    for start, end in spans:
        pieces.append(text[previous:start])
        previous = end
    pieces.append(text[previous:])
    kept = b"".join(pieces)
    return kept, len(spans), len(text) - len(kept)


def dedup_texts(texts: list[str], options: SubstringDedup) -> tuple[list[str], list[int], list[int], int]:
    """Each text without the repeated spans of its chunk: texts, spans and bytes removed per text, chunks."""
    encoded = [text.encode("utf-8") for text in texts]
    out, spans, removed = list(texts), [0] * len(texts), [0] * len(texts)
    n_chunks = 0
    for rows in chunks(encoded, options.chunk_bytes):
        n_chunks += 1
        data = bytes([SEPARATOR]).join(encoded[row] for row in rows)
        mask = removed_mask(data, options.length_threshold)
        offset = 0
        for row in rows:
            end = offset + len(encoded[row])
            if mask[offset:end].any():
                kept, spans[row], removed[row] = cut(encoded[row], mask[offset:end])
                out[row] = kept.decode("utf-8")
            offset = end + 1
    return out, spans, removed, n_chunks


def apply(docs: pa.Table, options: SubstringDedup) -> tuple[pa.Table, pa.Table, dict]:
    """Cut the repeated spans from a shard's documents: (kept, too short, stats). Kept documents get
    the rewritten text and the counts; a document a cut leaves under ``min_chars`` characters is rejected
    (``substring_too_short``) with its original text and the counts."""
    from fineflow.documents import set_columns, undecodable_rows

    docs, bad = undecodable_rows(docs)  # decoded with U+FFFD for the rejects; never compared
    texts = [("" if row in bad else text or "") for row, text in enumerate(docs.column("text").to_pylist())]
    new_texts, spans, removed, n_chunks = dedup_texts(texts, options)
    new_texts = [text if row in bad else new for row, (text, new) in enumerate(zip(docs.column("text").to_pylist(), new_texts))]
    counted = set_columns(docs, {SPANS_COLUMN: pa.array(spans, pa.int32()), BYTES_COLUMN: pa.array(removed, pa.int64())})
    # only a cut can make a document too short: one that was short already is not this stage's to drop
    reasons = [UNDECODABLE if row in bad else None if n == 0 or len(text) >= options.min_chars else TOO_SHORT
               for row, (n, text) in enumerate(zip(spans, new_texts))]
    keep = pa.array([reason is None for reason in reasons], pa.bool_())
    rewritten = counted.set_column(counted.schema.get_field_index("text"), "text", pa.array(new_texts, pa.string()))
    rejects = counted.filter(pc.invert(keep))
    rejects = set_columns(rejects, {"drop_reason": pa.array([r for r in reasons if r], pa.string())})
    stats = {
        "substring_chunks": n_chunks,
        "substring_docs_cut": sum(1 for n in spans if n),
        "substring_spans_removed": sum(spans),
        "substring_bytes_removed": sum(removed),
    }
    return rewritten.filter(keep), rejects, stats
