"""dedup's first step, ``signatures``: per document, the keys every duplicate test groups on.

One row per input document, in input order: ``node`` (``shard << 32 | row``: a global id that
the later steps use instead of strings), the document's ``id``, ``crawl_date`` and text length
(what decides which member of a cluster is kept), ``exact_key`` (xxh64 of the normalized
text), ``url_key`` (xxh64 of the normalized URL) and one ``band_NN`` key per LSH band (null
when the document has fewer words, or characters, than a shingle).
"""

from __future__ import annotations

import time

import pyarrow as pa
import xxhash

from fineflow.documents import commit_shard, read_input
from fineflow.tasks.dedup.minhash import MinHashSpec, band_keys, char_shingle_hashes, shingle_hashes, signature
from fineflow.tasks.dedup.normalize import normalize_text, normalize_url
from fineflow.tasks.text.words import default_splitter, load_splitter

STEP_VERSION = "2"  # 2: FineWeb's punctuation list in the normalization
LIBRARIES = ("xxhash", "numpy", "pyarrow")
ROW_BITS = 32
MAX_TEXT_CHARS = 2_000_000


def node_id(shard: int, row: int) -> int:
    return (shard << ROW_BITS) | row


def spec_of(params: dict) -> MinHashSpec:
    return MinHashSpec(
        params["n_grams"], params["bands"], params["rows"], params["seed"], params["hash_function"],
        params.get("shingles", "words"),
    )


def band_columns(bands: int) -> list[str]:
    return [f"band_{i:02d}" for i in range(bands)]


def signature_schema(bands: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("node", pa.int64(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("crawl_date", pa.timestamp("us", tz="UTC")),
            pa.field("text_chars", pa.int64()),
            pa.field("exact_key", pa.uint64()),
            pa.field("url_key", pa.uint64()),
            *[pa.field(name, pa.uint64()) for name in band_columns(bands)],
        ]
    )


def document_keys(text: str | None, url: str | None, language: str | None, params: dict, spec: MinHashSpec) -> dict:
    """The keys of one document (a pure function of its inputs).

    A text longer than ``max_text_chars`` is normalized and shingled on its first
    ``max_text_chars`` characters (a 50 MB line costs seconds, not minutes); its exact key also
    covers a hash of the rest, so only truly equal texts share it.
    """
    text = text or ""
    limit = params.get("max_text_chars", MAX_TEXT_CHARS)
    normalized = normalize_text(text[:limit])
    exact = normalized
    if len(text) > limit:
        exact += "\0" + xxhash.xxh64_hexdigest(text[limit:].encode("utf-8", "surrogatepass"))
    keys: dict = {
        "exact_key": xxhash.xxh64_intdigest(exact.encode("utf-8", "surrogatepass")) if normalized else None,
        "url_key": None,
    }
    if params["url_dedup"]:
        url_form = normalize_url(url)
        keys["url_key"] = xxhash.xxh64_intdigest(url_form.encode("utf-8")) if url_form else None
    bands = [None] * spec.bands
    if params["near_dedup"] and normalized:
        if spec.shingles == "chars":
            hashes = char_shingle_hashes(normalized, spec)
        else:
            splitter = (
                params.get("word_splitter")
                or params["word_splitters"].get(language or "")
                or default_splitter(language or "und")
            )
            hashes = shingle_hashes(load_splitter(splitter)(normalized), spec)
        sig = signature(hashes, spec)
        if sig is not None:
            bands = band_keys(sig, spec)
    keys.update(zip(band_columns(spec.bands), bands))
    return keys


def signatures_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    spec = spec_of(params)
    table = read_input(shard)
    number = shard["shard"]
    columns: dict[str, list] = {name: [] for name in signature_schema(spec.bands).names}
    texts = table.column("text").to_pylist()
    urls = table.column("url").to_pylist()
    languages = table.column("language").to_pylist()
    without_signature = 0
    for row, (text, url, language) in enumerate(zip(texts, urls, languages)):
        keys = document_keys(text, url, language, params, spec)
        without_signature += keys["band_00"] is None
        columns["node"].append(node_id(number, row))
        columns["text_chars"].append(len(text or ""))
        for name, value in keys.items():
            columns[name].append(value)
    columns["id"] = table.column("id").to_pylist()
    columns["crawl_date"] = table.column("crawl_date").to_pylist()
    output = pa.Table.from_pydict(columns, schema=signature_schema(spec.bands))
    return commit_shard(
        number,
        output_url,
        output,
        without_signature=without_signature if params["near_dedup"] else 0,
        seconds=round(time.perf_counter() - started, 3),
    )
