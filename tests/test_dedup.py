"""The dedup stage's pure functions and steps: datatrove-identical signatures, planted
duplicates with a known answer, order independence, incremental mode, crash and re-run."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from fineflow.documents import DOCUMENT_SCHEMA
from fineflow.steps import run_shard
from fineflow.tasks.dedup.buckets import group_edges
from fineflow.tasks.dedup.cluster import choose_kept, connected_components
from fineflow.tasks.dedup.config import DedupStage
from fineflow.tasks.dedup.minhash import MinHashSpec, bands_for_threshold, shingle_hashes, signature
from fineflow.tasks.dedup.normalize import normalize_text, normalize_url
from fineflow.tasks.dedup.plan import plan_dedup
from fineflow.tasks.text.words import load_splitter

# ---------------------------------------------------------------- signatures

# Produced with datatrove 0.10.1: MinhashDedupSignature(config=MinhashConfig(hash_config=
# HashConfig(64, hash_fc))).get_signature(get_shingles(text)), language "en";
# the values are [band 0, first 4] and [band 13, last 2].
DATATROVE_SIGNATURES = {
    ("xxhash", 0): [[85330943174081874, 366011346326592937, 94962479071457377, 34440879854629237], [16473097186800209, 3963570588256049]],
    ("xxhash", 1): [[92297659794777102, 118527752729473997, 267066935434904, 204055417581045252], [509001589314043061, 87386906090408543]],
    ("sha1", 0): [[295547203027492847, 284080765670708113, 594234408324153881, 226360113463360020], [306993506350509109, 247527173327987808]],
    ("sha1", 1): [[20554675986205617, 288195991883859651, 181291314771065079, 139588331972678712], [358776717507114248, 190758785833211347]],
}
TEXTS = [
    "The quick brown fox jumps over the lazy dog, again and again: 3.14 times!",
    "Ünïcode Téxt — with accents, numbers 1,000 and 42; and more words to make shingles.",
]


def test_permutation_parameters_are_datatrove_s():
    a, b = MinHashSpec().permutations
    assert a[0, :3].tolist() == [775169054918279404, 1758426461858698313, 2109959069025162]
    assert b[0, :3].tolist() == [1062448801025099917, 1324811268927594100, 1217488311597731462]


@pytest.mark.parametrize(("hash_function", "index"), sorted(DATATROVE_SIGNATURES))
def test_signatures_equal_datatrove_bit_for_bit(hash_function, index):
    spec = MinHashSpec(hash_function=hash_function)
    words = load_splitter("spacy:en")(normalize_text(TEXTS[index]))
    bands = signature(shingle_hashes(words, spec), spec).reshape(14, 8)
    assert [bands[0][:4].tolist(), bands[13][-2:].tolist()] == DATATROVE_SIGNATURES[(hash_function, index)]


def test_signature_is_the_minimum_over_shingles_in_any_chunking():
    spec = MinHashSpec()
    hashes = np.random.default_rng(3).integers(0, 2**63, size=10_000, dtype=np.uint64)
    a, b = spec.permutations
    with np.errstate(over="ignore"):
        direct = ((hashes.reshape(-1, 1) * a + b) % np.uint64((1 << 61) - 1)).min(axis=0)
    assert np.array_equal(signature(hashes, spec), direct)
    assert signature(np.empty(0, np.uint64), spec) is None  # fewer words than a shingle


def test_normalization():
    assert normalize_text("Héllo,  WORLD!\n3.14 and 1,000 — ÇA") == "hello world 0 and 0 ca"
    same = {
        normalize_url(u)
        for u in (
            "https://www.example.com/a/b/?utm_source=feed&b=2&a=1#top",
            "http://example.com/a/b?a=1&b=2&fbclid=XYZ",
            "https://EXAMPLE.com:443/a/b?b=2&a=1",
        )
    }
    assert same == {"example.com/a/b?a=1&b=2"}
    assert normalize_url("https://example.com/a/b?a=2") != normalize_url("https://example.com/a/b?a=1")


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.85])
def test_threshold_picks_bands_and_rows_around_it(threshold):
    bands, rows = bands_for_threshold(threshold, 112)
    assert bands * rows <= 112
    assert abs((1 / bands) ** (1 / rows) - threshold) < 0.12
    config = DedupStage.model_validate({"stage": "dedup", "threshold": threshold})
    assert (config.bands, config.rows) == (bands, rows)
    with pytest.raises(ValueError, match="either threshold or bands"):
        DedupStage.model_validate({"stage": "dedup", "threshold": threshold, "bands": 10})


# ---------------------------------------------------------------- clustering maths


def union_find_components(edges: list[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)).filter(lambda e: e[0] != e[1]), max_size=120))
def test_label_propagation_finds_the_connected_components(edges):
    frame = pl.DataFrame({"a": [a for a, _ in edges], "b": [b for _, b in edges]}, schema={"a": pl.Int64, "b": pl.Int64})
    found = dict(connected_components(frame).iter_rows())
    assert found == union_find_components(edges)


@pytest.mark.parametrize("length", [2, 300, 5000])
def test_a_long_chain_is_one_component(length):
    # a chain is the worst case for label propagation (its diameter is its length); listed
    # from the far end so that the smallest label has to travel the whole way
    nodes = list(range(length))
    frame = pl.DataFrame({"a": nodes[1:][::-1], "b": nodes[:-1][::-1]}, schema={"a": pl.Int64, "b": pl.Int64})
    components = connected_components(frame)
    assert components["component"].unique().to_list() == [0] and components.height == length


def test_sliding_windows_chain_every_document():
    # document i shares a band key with i+1 only (a text edited a little more at every copy):
    # one cluster, although the first and last share nothing
    edges = [(i, i + 1) for i in range(0, 2000, 2)] + [(i + 1, i + 2) for i in range(0, 1998, 2)]
    frame = pl.DataFrame({"a": [b for _, b in edges], "b": [a for a, _ in edges]}, schema={"a": pl.Int64, "b": pl.Int64})
    found = dict(connected_components(frame).iter_rows())
    assert found == union_find_components(edges) and set(found.values()) == {0}


def members(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"node": pl.Int64, "id": pl.String, "crawl_date": pl.Datetime("us", "UTC"), "text_chars": pl.Int64,
                "exact_key": pl.UInt64, "url_key": pl.UInt64, "component": pl.Int64},
        orient="row",
    )


def test_kept_member_is_earliest_then_longest_then_smallest_id():
    day = datetime(2024, 1, 1, tzinfo=timezone.utc)
    frame = members(
        [
            (1, "b", day + timedelta(days=1), 900, 1, 10, 0),
            (2, "c", day, 100, 2, 20, 0),  # earliest: kept
            (3, "d", day, 100, 2, 30, 0),  # same text as the kept one
            (4, "e", None, 5000, 4, 20, 0),  # same URL as the kept one
            (5, "z", day, 50, 7, 70, 5),
            (6, "y", day, 50, 8, 80, 5),  # tie on date and length: smallest id "y" kept
            (-1, "old", day + timedelta(days=9), 1, 9, 90, 5),  # a previous run's document wins
        ]
    )
    roles = choose_kept(frame)
    by_id = {row["id"]: row for row in roles.iter_rows(named=True)}
    assert by_id["c"]["drop_reason"] is None and by_id["c"]["cluster_id"] == "c"
    assert by_id["d"]["drop_reason"] == "exact_duplicate"
    assert by_id["e"]["drop_reason"] == "url_duplicate"
    assert by_id["b"]["drop_reason"] == "near_duplicate"
    assert by_id["old"]["drop_reason"] is None
    assert by_id["y"]["drop_reason"] == by_id["z"]["drop_reason"] == "near_duplicate"
    assert by_id["c"]["cluster_size"] == 4 and by_id["y"]["cluster_size"] == 3
    only_near = {row["id"]: row["drop_reason"] for row in choose_kept(frame, exact=False, url=False).iter_rows(named=True)}
    assert only_near["d"] == only_near["e"] == "near_duplicate" and only_near["c"] is None


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_shuffling_documents_does_not_change_the_kept_set(rnd):
    # 40 documents with planted equal band keys; shuffling their order renumbers every node.
    keys = [rnd.randrange(12) if rnd.random() < 0.6 else None for _ in range(40)]
    docs = [(f"doc{i:02d}", keys[i], rnd.randrange(3), rnd.randrange(1000)) for i in range(40)]

    def kept(order: list[tuple]) -> set[str]:
        frame = pl.DataFrame(
            {"node": list(range(len(order))), "band_00": [d[1] for d in order]}, schema={"node": pl.Int64, "band_00": pl.UInt64}
        )
        components = connected_components(group_edges(frame, "band_00"))
        base = datetime(2024, 1, 1, tzinfo=timezone.utc)
        rows = [(n, d[0], base + timedelta(days=d[2]), d[3], None, None) for n, d in enumerate(order)]
        attrs = pl.DataFrame(rows, schema={"node": pl.Int64, "id": pl.String, "crawl_date": pl.Datetime("us", "UTC"),
                                           "text_chars": pl.Int64, "exact_key": pl.UInt64, "url_key": pl.UInt64}, orient="row")
        roles = choose_kept(attrs.join(components, on="node"))
        removed = set(roles.filter(pl.col("drop_reason").is_not_null())["id"])
        return {d[0] for d in order} - removed

    shuffled = docs[:]
    rnd.shuffle(shuffled)
    assert kept(docs) == kept(shuffled)


# ---------------------------------------------------------------- the four steps on planted duplicates


def paragraphs(seed: int, n: int = 8) -> list[str]:
    words = "data crawl filter token model river stone garden window paper music light story market energy table".split()
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(words) + str(rnd.randrange(50)) for _ in range(40)) + "." for _ in range(n)]


def write_shard(path, docs: list[dict]) -> None:
    base = {"language": "en", "language_score": 0.9, "source": "x@0", "warc_record_id": None, "content_type": "text/html", "charset": "utf-8"}
    pq.write_table(pa.Table.from_pylist([{**base, **d} for d in docs], schema=DOCUMENT_SCHEMA), path)


def run_dedup(upstream_folder: str, shards: int, root: str, upstream_fp: str = "up", **options) -> dict[str, list]:
    from fineflow.steps import PlanContext, Source, StageInputs

    upstream = StageInputs((Source("upstream", upstream_fp, upstream_folder, shards),))
    context = PlanContext(root=root, name="dedup", kind="dedup", inputs=upstream)
    plans = plan_dedup(DedupStage.model_validate({"stage": "dedup", **options}), context)
    results = {}
    for plan in plans:
        results[plan.step] = [run_shard(plan.function, s, plan.params, plan.location) for s in plan.shards]
        if plan.step == "signatures":
            from fineflow.manifest import write_manifest

            write_manifest(plan.location, plan.fingerprint.components, results[plan.step])
    results["plans"] = plans
    return results


@pytest.fixture
def planted(tmp_path):
    day = datetime(2024, 5, 1, tzinfo=timezone.utc)
    original = paragraphs(1)
    changed = original[:]
    changed[3] = paragraphs(99, 1)[0]  # one paragraph of eight replaced: Jaccard of 5-grams about 0.75
    shard0 = [
        {"id": "original", "url": "https://a.example/page", "text": "\n\n".join(original), "crawl_date": day},
        {"id": "unrelated-1", "url": "https://b.example/1", "text": "\n\n".join(paragraphs(2)), "crawl_date": day},
        {"id": "short", "url": "https://b.example/short", "text": "too short", "crawl_date": day},
    ]
    shard1 = [
        {"id": "exact-copy", "url": "https://mirror.example/page", "text": "\n\n".join(original), "crawl_date": day + timedelta(days=2)},
        {"id": "edited-copy", "url": "https://c.example/page", "text": "\n\n".join(changed), "crawl_date": day + timedelta(days=1)},
        {"id": "tracked-url", "url": "https://www.b.example/1?utm_source=x", "text": "\n\n".join(paragraphs(3)), "crawl_date": day + timedelta(days=3)},
        {"id": "unrelated-2", "url": "https://d.example/2", "text": "\n\n".join(paragraphs(4)), "crawl_date": day},
        {"id": "short-copy", "url": "https://e.example/short", "text": "Too short", "crawl_date": day},
    ]
    folder = tmp_path / "upstream"
    folder.mkdir()
    write_shard(folder / "part-00000.parquet", shard0)
    write_shard(folder / "part-00001.parquet", shard1)
    return str(folder)


def outputs(results: dict, step: str = "remove") -> tuple[pl.DataFrame, pl.DataFrame]:
    plan = next(p for p in results["plans"] if p.step == step)
    kept = pl.concat([pl.read_parquet(plan.location.shard_url(s["shard"])) for s in plan.shards])
    rejects = [pl.read_parquet(plan.location.rejects_url(r["shard"])) for r in results[step] if r["rejects"]]
    return kept, pl.concat(rejects) if rejects else pl.DataFrame()


def test_planted_duplicates_across_shards(planted, tmp_path):
    results = run_dedup(planted, 2, str(tmp_path / "root"))
    kept, rejects = outputs(results)
    reasons = dict(zip(rejects["id"], rejects["drop_reason"]))
    assert reasons == {"exact-copy": "exact_duplicate", "edited-copy": "near_duplicate", "tracked-url": "url_duplicate", "short-copy": "exact_duplicate"}
    assert set(rejects["dup_cluster_id"]) == {"original", "unrelated-1", "short"}
    sizes = dict(zip(kept["id"], kept["dup_cluster_size"]))
    assert sizes == {"original": 3, "unrelated-1": 2, "short": 2, "unrelated-2": 1}
    assert set(DOCUMENT_SCHEMA.names) < set(rejects.columns)
    cluster_stats = results["cluster"][0]["stats"]
    assert cluster_stats["clusters"] == 3 and cluster_stats["cluster_sizes"] == {"2": 2, "3-4": 1}
    assert sum(cluster_stats["to_remove"].values()) == 4


def test_near_duplicates_only_and_short_documents_are_never_near_duplicates(planted, tmp_path):
    results = run_dedup(planted, 2, str(tmp_path / "root"), exact=False, url=False)
    _, rejects = outputs(results)
    assert set(rejects["id"]) == {"exact-copy", "edited-copy"}  # 'short-copy' has no shingle of 5 words
    # the exact pass is off: the exact copy was found by MinHash alone, so it is a near-duplicate
    assert set(rejects["drop_reason"]) == {"near_duplicate"}
    assert results["signatures"][0]["stats"]["without_signature"] == 1


def test_a_crashed_clustering_then_a_rerun_equals_an_uninterrupted_run(planted, tmp_path, monkeypatch):
    from fineflow.tasks.dedup import cluster

    clean = run_dedup(planted, 2, str(tmp_path / "clean"))
    calls = {"n": 0}
    real_commit = cluster.commit_artifact

    def crash_on_second_file(url, name, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("worker lost while writing")
        return real_commit(url, name, data)

    monkeypatch.setattr(cluster, "commit_artifact", crash_on_second_file)
    with pytest.raises(OSError):
        run_dedup(planted, 2, str(tmp_path / "crashed"))
    monkeypatch.setattr(cluster, "commit_artifact", real_commit)
    rerun = run_dedup(planted, 2, str(tmp_path / "crashed"))
    for step in ("cluster", "remove"):
        a = [r["output"]["sha256"] for r in clean[step]]
        b = [r["output"]["sha256"] for r in rerun[step]]
        assert a == b, step
    assert outputs(clean)[1].equals(outputs(rerun)[1])


def test_incremental_dedup_against_a_previous_run(planted, tmp_path):
    first = run_dedup(planted, 2, str(tmp_path / "root"))
    previous = next(p for p in first["plans"] if p.step == "signatures").location.folder
    day = datetime(2024, 6, 1, tzinfo=timezone.utc)
    new_folder = tmp_path / "new"
    new_folder.mkdir()
    write_shard(
        new_folder / "part-00000.parquet",
        [
            {"id": "new-copy-of-original", "url": "https://f.example/x", "text": "\n\n".join(paragraphs(1)), "crawl_date": day - timedelta(days=365)},
            {"id": "brand-new", "url": "https://g.example/y", "text": "\n\n".join(paragraphs(5)), "crawl_date": day},
        ],
    )
    second = run_dedup(str(new_folder), 1, str(tmp_path / "root"), upstream_fp="new-crawl", previous=previous)
    kept, rejects = outputs(second)
    # older than the previous run's copy, yet removed: previous documents are never touched
    assert dict(zip(rejects["id"], rejects["drop_reason"])) == {"new-copy-of-original": "exact_duplicate"}
    assert rejects["dup_cluster_id"].to_list() == ["original"]
    assert kept["id"].to_list() == ["brand-new"]
    assert second["signatures"][0]["stats"]["docs_in"] == 2  # only the new shard was signed
    plans = {p.step: p for p in second["plans"]}
    assert plans["cluster"].fingerprint.components["inputs"]["previous"] == first["plans"][0].fingerprint.value
    with pytest.raises(ValueError, match="this run's own signatures"):
        run_dedup(planted, 2, str(tmp_path / "root"), previous=previous)
    with pytest.raises(ValueError, match="signed with shingles='words', this run uses 'chars'"):
        run_dedup(str(new_folder), 1, str(tmp_path / "root"), upstream_fp="new-crawl", previous=previous, shingles="chars")
    with pytest.raises(ValueError, match="signed with bands=14, this run uses 20"):
        run_dedup(str(new_folder), 1, str(tmp_path / "root"), upstream_fp="new-crawl", previous=previous, bands=20)


def test_a_50_mb_single_line_document_is_keyed_on_a_prefix_and_never_confused():
    from fineflow.tasks.dedup.signatures import document_keys

    params = {"url_dedup": True, "near_dedup": True, "word_splitters": {}, "max_text_chars": 2_000_000}
    spec = MinHashSpec()
    line = "word " * 10_000_000  # 50 MB, one line
    first = document_keys(line + "end one", "https://a.example/1", "en", params, spec)
    second = document_keys(line + "end two", "https://a.example/2", "en", params, spec)
    assert first["exact_key"] != second["exact_key"]  # equal prefixes, different texts
    assert first["band_00"] == second["band_00"] is not None  # near-duplicates by their prefix
    assert document_keys("", None, None, params, spec)["exact_key"] is None


# ---------------------------------------------------------------- character shingles (Nemotron-CC)

NEMOTRON_CHARS = {"shingles": "chars", "n_grams": 24, "bands": 20, "rows": 13}


def test_char_shingles_are_every_window_of_n_characters_hashed_once():
    from fineflow.tasks.dedup.minhash import char_shingle_hashes

    for function, digest in (("xxhash", xxhash.xxh64_intdigest), ("sha1", lambda b: int.from_bytes(hashlib.sha1(b).digest()[:8], "little"))):
        spec = MinHashSpec(n_grams=3, hash_function=function, shingles="chars")
        expected = sorted({digest(s.encode()) for s in ("abc", "bca", "cab", "ab ")})
        assert char_shingle_hashes("abcabcab ", spec).tolist() == expected  # "abc" twice, hashed once
        assert char_shingle_hashes("ab", spec).size == 0  # fewer characters than a shingle


def test_char_shingles_option_is_range_checked_and_defaults_to_24_characters():
    assert DedupStage(stage="dedup", shingles="chars").n_grams == 24
    assert DedupStage(stage="dedup").n_grams == 5
    assert DedupStage(stage="dedup", shingles="chars", n_grams=100).n_grams == 100
    with pytest.raises(ValueError, match="at least 5 characters"):
        DedupStage(stage="dedup", shingles="chars", n_grams=3)
    with pytest.raises(ValueError, match="at most 50 words"):
        DedupStage(stage="dedup", n_grams=60)
    with pytest.raises(ValueError, match="less than or equal to 200"):
        DedupStage(stage="dedup", shingles="chars", n_grams=201)
    with pytest.raises(ValueError, match="'words' or 'chars'"):
        DedupStage.model_validate({"stage": "dedup", "shingles": "bytes"})


def test_the_shingle_kind_enters_the_signatures_fingerprint(tmp_path):
    from fineflow.steps import PlanContext, Source, StageInputs

    def signatures_fingerprint(**options) -> str:
        upstream = StageInputs((Source("upstream", "up", str(tmp_path), 1),))
        context = PlanContext(root=str(tmp_path / "root"), name="dedup", kind="dedup", inputs=upstream)
        return plan_dedup(DedupStage.model_validate({"stage": "dedup", **options}), context)[0].fingerprint.value

    words, chars = signatures_fingerprint(n_grams=24), signatures_fingerprint(shingles="chars", n_grams=24)
    assert words != chars
    assert chars == signatures_fingerprint(shingles="chars")  # 24 is the default, not a different setting
    assert chars != signatures_fingerprint(shingles="chars", n_grams=25)


def test_char_shingles_find_near_duplicates_that_word_shingles_cannot_see(tmp_path):
    """One character changed in a long unspaced string (a token, a code blob, a sequence) is a
    near-duplicate by 24-character shingles; it is one word, so it has no word 5-gram at all. A
    word changed in prose is found either way."""
    rnd = random.Random(7)
    blob = "".join(rnd.choice("acgtxyzqwkj") for _ in range(3000))
    prose = "\n\n".join(paragraphs(11))
    day = datetime(2024, 5, 1, tzinfo=timezone.utc)
    docs = [
        {"id": "blob", "url": "https://a.example/1", "text": blob},
        {"id": "blob-edited", "url": "https://a.example/2", "text": blob[:1500] + "m" + blob[1501:]},
        {"id": "blob-other", "url": "https://a.example/3", "text": "".join(rnd.choice("acgtxyzqwkj") for _ in range(3000))},
        {"id": "prose", "url": "https://b.example/1", "text": prose},
        {"id": "prose-edited", "url": "https://b.example/2", "text": prose.replace(prose.split()[100], "lighthouse", 1)},
        {"id": "prose-other", "url": "https://b.example/3", "text": "\n\n".join(paragraphs(12))},
        {"id": "short", "url": "https://c.example/1", "text": "a short one"},
        {"id": "short-copy", "url": "https://c.example/2", "text": "A short one!"},
    ]
    folder = tmp_path / "upstream"
    folder.mkdir()
    # the edited copies are crawled later, so the originals are the ones kept
    write_shard(folder / "part-00000.parquet", [{**d, "crawl_date": day + timedelta(days="-" in d["id"])} for d in docs])

    def near_rejects(root: str, **options) -> tuple[set[str], int]:
        results = run_dedup(str(folder), 1, str(tmp_path / root), exact=False, url=False, **options)
        rejects = outputs(results)[1]
        return set(rejects["id"]) if len(rejects) else set(), results["signatures"][0]["stats"]["without_signature"]

    assert near_rejects("words") == ({"prose-edited"}, 5)  # 3 blobs and 2 short texts: fewer than 5 words
    assert near_rejects("chars", **NEMOTRON_CHARS) == ({"blob-edited", "prose-edited"}, 2)  # short: under 24 characters
