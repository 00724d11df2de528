"""decontaminate's first step, ``index``: every benchmark's hashed n-grams in one sorted array.

One task for the whole stage (the index is built once and every shard of the ``scan`` step reads
it by URL). The artifact ``ngrams.bin`` is a little-endian header length (8 bytes), a JSON header
(benchmark names, entries), then ``hashes`` (uint64, sorted) and ``benchmarks`` (uint16, the
benchmark of each entry; a hash found in two benchmarks appears twice): 10 bytes per distinct
n-gram of a benchmark, 10 MB per million, read as one object and used in place (no copy). The
step's output table has one row per benchmark (files, items, items shorter than n words,
distinct n-grams).
"""

from __future__ import annotations

import json
import time
from functools import lru_cache

import numpy as np
import pyarrow as pa

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard
from fineflow.tasks.decontaminate.benchmarks import BenchmarkError, benchmark_files, read_items
from fineflow.tasks.decontaminate.ngrams import NGRAM_VERSION, ngram_hashes, splitter_name, word_hashes, words

STEP_VERSION = "2." + NGRAM_VERSION  # 2: the index as one flat file (ngrams.bin)
LIBRARIES = ("numpy", "xxhash", "pyarrow")
INDEX = "ngrams.bin"
FORMAT = "fineflow-decontaminate-index-1"
MAX_BENCHMARKS = 1000  # (the config's limit; uint16 benchmark numbers)


def index_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    n = params["n"]
    hashes, numbers, rows = [], [], []
    for number, benchmark in enumerate(params["benchmarks"]):
        splitter = splitter_name(benchmark["language"], params["word_splitters"])
        files = benchmark_files(benchmark["name"], benchmark["path"], benchmark["format"])
        items = short = 0
        found = []
        for url in files:
            for text in read_items(benchmark["name"], url, benchmark["columns"], benchmark["format"]):
                items += 1
                grams = ngram_hashes(word_hashes(words(text, splitter)), n)
                if len(grams):
                    found.append(grams)
                else:
                    short += 1
        unique = np.unique(np.concatenate(found)) if found else np.empty(0, np.uint64)
        if not len(unique):
            raise BenchmarkError(
                f"benchmark {benchmark['name']}: none of its {items} items has {n} words in columns "
                f"{', '.join(benchmark['columns'])}: nothing could match (check the columns, or lower n)"
            )
        hashes.append(unique)
        numbers.append(np.full(len(unique), number, np.uint16))
        rows.append({"benchmark": benchmark["name"], "language": benchmark["language"], "splitter": splitter,
                     "files": len(files), "items": items, "items_too_short": short, "ngrams": len(unique)})
    all_hashes = np.concatenate(hashes)
    all_numbers = np.concatenate(numbers)
    order = np.lexsort((all_numbers, all_hashes))
    names = [b["name"] for b in params["benchmarks"]]
    header = json.dumps({"format": FORMAT, "names": names, "entries": len(order), "n": n}).encode()
    data = b"".join([len(header).to_bytes(8, "little"), header,
                     all_hashes[order].astype("<u8").tobytes(), all_numbers[order].astype("<u2").tobytes()])
    artifact = commit_artifact(output_url, INDEX, data)
    stats = {row["benchmark"]: {key: row[key] for key in ("files", "items", "items_too_short", "ngrams")} for row in rows}
    return commit_shard(
        shard["shard"], output_url, pa.Table.from_pylist(rows), docs_in=0, artifacts=[artifact],
        benchmarks=stats, index_entries=len(order), index_bytes=artifact["bytes"],
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
        # views into ``data`` (kept alive by them): no second copy of the index in memory
        self.hashes = np.frombuffer(data, dtype="<u8", count=entries, offset=start)
        self.benchmarks = np.frombuffer(data, dtype="<u2", count=entries, offset=start + 8 * entries)

    def lookup(self, grams: np.ndarray) -> list[tuple[int, int]]:
        """(position in ``grams``, benchmark number) for every n-gram found, by position."""
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
        numbers = {int(d): self.benchmarks[start:end].tolist() for d, start, end in zip(found, left[found], right)}
        return [(int(position), number) for position in np.flatnonzero(hit[inverse]) for number in numbers[int(inverse[position])]]


@lru_cache(maxsize=2)
def load_index(url: str) -> NgramIndex:
    """Once per worker process: the URL names the index step's fingerprint, so its content never changes."""
    return NgramIndex(storage.read_bytes(url))
