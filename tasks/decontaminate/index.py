"""decontaminate's first step, ``index``: every benchmark's hashed n-grams in one sorted array.

One task for the whole stage (the index is built once and every shard of the ``scan`` step reads
it by URL). The artifact ``ngrams.npz`` holds ``hashes`` (uint64, sorted) and ``benchmarks``
(uint16, the benchmark of each entry, a hash found in two benchmarks appearing twice): 10 bytes
per distinct n-gram of a benchmark, about 10 MB per million. The step's output table has one
row per benchmark (files, items, items shorter than n words, distinct n-grams).
"""

from __future__ import annotations

import io
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

STEP_VERSION = "1." + NGRAM_VERSION
LIBRARIES = ("numpy", "xxhash", "pyarrow")
INDEX = "ngrams.npz"
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
    buffer = io.BytesIO()
    np.savez(buffer, hashes=all_hashes[order], benchmarks=all_numbers[order],
             names=np.array(json.dumps([b["name"] for b in params["benchmarks"]])))
    artifact = commit_artifact(output_url, INDEX, buffer.getvalue())
    stats = {row["benchmark"]: {key: row[key] for key in ("files", "items", "items_too_short", "ngrams")} for row in rows}
    return commit_shard(
        shard["shard"], output_url, pa.Table.from_pylist(rows), docs_in=0, artifacts=[artifact],
        benchmarks=stats, index_entries=len(order), index_bytes=artifact["bytes"],
        seconds=round(time.perf_counter() - started, 3),
    )


class NgramIndex:
    """The index as a worker holds it: lookups of many n-gram hashes at once."""

    def __init__(self, data: bytes) -> None:
        with np.load(io.BytesIO(data)) as arrays:
            self.hashes = arrays["hashes"]
            self.benchmarks = arrays["benchmarks"]
            self.names: list[str] = json.loads(str(arrays["names"]))

    def lookup(self, grams: np.ndarray) -> list[tuple[int, int]]:
        """(position in ``grams``, benchmark number) for every n-gram found, by position."""
        if not len(grams) or not len(self.hashes):
            return []
        left = np.searchsorted(self.hashes, grams, side="left")
        found = np.flatnonzero(self.hashes[np.minimum(left, len(self.hashes) - 1)] == grams)
        if not len(found):
            return []
        right = np.searchsorted(self.hashes, grams[found], side="right")
        pairs = []
        for position, start, end in zip(found.tolist(), left[found].tolist(), right.tolist()):
            pairs += [(position, int(number)) for number in self.benchmarks[start:end]]
        return pairs


@lru_cache(maxsize=2)
def load_index(url: str) -> NgramIndex:
    """Once per worker process: the URL names the index step's fingerprint, so its content never changes."""
    return NgramIndex(storage.read_bytes(url))
