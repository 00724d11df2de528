"""decontaminate's first step, ``index``: every benchmark item's hashed n-grams in one sorted array.

One task for the whole stage (the index is built once and every shard of the ``scan`` step reads
it by URL). The artifact ``ngrams.bin`` is a little-endian header length (8 bytes), a JSON header
(benchmark names, where each benchmark's item numbers start, entries), then ``hashes`` (uint64,
sorted) and ``items`` (uint32, the item of each entry, numbered across the benchmarks in their
order; a hash found in two items appears twice): 12 bytes per (n-gram, item) entry, 12 MB per
million, read as one object and used in place (no copy). The artifact ``items.parquet`` has
each item's benchmark, number in its benchmark and first characters (for the ``items`` step's
list of what was found). The step's output table has one row per benchmark (files, items, items
shorter than n words, distinct n-grams).
"""

from __future__ import annotations

import json
import time
from functools import lru_cache

import numpy as np
import pyarrow as pa

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, table_to_parquet_bytes
from fineflow.tasks.decontaminate.benchmarks import BenchmarkError, benchmark_files, read_items
from fineflow.tasks.decontaminate.ngrams import NGRAM_VERSION, ngram_hashes, splitter_name, word_hashes, words

STEP_VERSION = "3." + NGRAM_VERSION  # 3: entries name items (ngrams.bin, items.parquet)
LIBRARIES = ("numpy", "xxhash", "pyarrow")
INDEX = "ngrams.bin"
ITEMS = "items.parquet"
FORMAT = "fineflow-decontaminate-index-2"
MAX_ITEMS = 2**32 - 1  # uint32 item numbers
ITEM_CHARS = 200  # an item's text kept for the list of found items


def index_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    n = params["n"]
    hashes: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    rows, item_rows, offsets = [], [], []
    for benchmark in params["benchmarks"]:
        name = benchmark["name"]
        offsets.append(len(item_rows))
        splitter = splitter_name(benchmark["language"], params["word_splitters"])
        files = benchmark_files(name, benchmark["path"], benchmark["format"])
        first, short = len(hashes), 0
        for url in files:
            for text in read_items(name, url, benchmark["columns"], benchmark["format"]):
                grams = np.unique(ngram_hashes(word_hashes(words(text, splitter)), n))
                if len(grams):
                    hashes.append(grams)
                    numbers.append(np.full(len(grams), len(item_rows), np.uint32))
                else:
                    short += 1
                item_rows.append({"benchmark": name, "item": len(item_rows) - offsets[-1], "text": text[:ITEM_CHARS]})
                if len(item_rows) > MAX_ITEMS:
                    raise BenchmarkError(f"benchmark {name}: more than {MAX_ITEMS} items in all: split the stage")
        items = len(item_rows) - offsets[-1]
        if len(hashes) == first:
            raise BenchmarkError(
                f"benchmark {name}: none of its {items} items has {n} words in columns "
                f"{', '.join(benchmark['columns'])}: nothing could match (check the columns, or lower n)"
            )
        distinct = len(np.unique(np.concatenate(hashes[first:])))
        rows.append({"benchmark": name, "language": benchmark["language"], "splitter": splitter,
                     "files": len(files), "items": items, "items_too_short": short, "ngrams": distinct})
    all_hashes = np.concatenate(hashes)
    all_items = np.concatenate(numbers)
    del hashes, numbers
    order = np.lexsort((all_items, all_hashes))
    header = json.dumps({"format": FORMAT, "names": [row["benchmark"] for row in rows], "offsets": offsets + [len(item_rows)],
                         "entries": len(order), "n": n}).encode()
    data = b"".join([len(header).to_bytes(8, "little"), header,
                     all_hashes[order].astype("<u8").tobytes(), all_items[order].astype("<u4").tobytes()])
    index = commit_artifact(output_url, INDEX, data)
    listed = commit_artifact(output_url, ITEMS, table_to_parquet_bytes(pa.Table.from_pylist(item_rows)))
    stats = {row["benchmark"]: {key: row[key] for key in ("files", "items", "items_too_short", "ngrams")} for row in rows}
    return commit_shard(
        shard["shard"], output_url, pa.Table.from_pylist(rows), docs_in=0, artifacts=[index, listed],
        benchmarks=stats, index_entries=len(order), index_bytes=index["bytes"],
        seconds=round(time.perf_counter() - started, 3),
    )


class NgramIndex:
    """The index as a worker holds it: lookups of many n-gram hashes at once."""

    def __init__(self, data: bytes) -> None:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        if header.get("format") != FORMAT:
            raise ValueError(f"not a decontaminate index of this version ({header.get('format')!r})")
        entries, start = header["entries"], 8 + size
        self.names: list[str] = header["names"]
        self.offsets = np.array(header["offsets"], np.int64)  # benchmark b's items: offsets[b] .. offsets[b + 1] - 1
        # views into ``data`` (kept alive by them): no second copy of the index in memory
        self.hashes = np.frombuffer(data, dtype="<u8", count=entries, offset=start)
        self.items = np.frombuffer(data, dtype="<u4", count=entries, offset=start + 8 * entries)

    def benchmark_of(self, item: int) -> int:
        return int(np.searchsorted(self.offsets, item, side="right")) - 1

    def lookup(self, grams: np.ndarray) -> list[tuple[int, int]]:
        """(position in ``grams``, item number) for every n-gram found, by position."""
        if not len(grams) or not len(self.hashes):
            return []
        # searched in sorted order: neighbouring queries touch neighbouring memory (~20x fewer cache
        # misses than in text order on a large index)
        distinct, inverse = np.unique(grams, return_inverse=True)
        left = np.searchsorted(self.hashes, distinct, side="left")
        hit = self.hashes[np.minimum(left, len(self.hashes) - 1)] == distinct
        if not hit.any():
            return []
        found = np.flatnonzero(hit)
        right = np.searchsorted(self.hashes, distinct[found], side="right")
        items = {int(d): self.items[start:end].tolist() for d, start, end in zip(found, left[found], right)}
        return [(int(position), item) for position in np.flatnonzero(hit[inverse]) for item in items[int(inverse[position])]]


@lru_cache(maxsize=2)
def load_index(url: str) -> NgramIndex:
    """Once per worker process: the URL names the index step's fingerprint, so its content never changes."""
    return NgramIndex(storage.read_bytes(url))
