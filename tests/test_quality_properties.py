"""Property test: quality's score, calibrate and decide steps, called directly, on hostile documents and configs."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fineflow.tasks.quality import fasttext_model
from fineflow.tasks.quality.calibrate import calibrate_shard
from fineflow.tasks.quality.config import KeepRule
from fineflow.tasks.quality.decide import decide_shard
from fineflow.tasks.quality.score import score_shard

PARAMS = {"epoch": 5, "lr": 1.0, "dim": 10, "word_ngrams": 2, "min_count": 1, "ws": 5, "bucket": 2000}
INVALID_UTF8 = b"caf\xc3 \xff\xfe"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("quality-properties")
    os.environ.setdefault("FINEFLOW_MODEL_CACHE", str(folder / "cache"))  # the model check's markers
    path = folder / "model.bin"
    texts = [f"a lesson about topic {i} with words" for i in range(40)] + [f"buy now cheap deal {i}" for i in range(40)]
    fasttext_model.train(texts, [True] * 40 + [False] * 40, PARAMS, 0, str(path))
    return str(path)


def document_table(texts: list[bytes | None], languages: list[str | None]) -> pa.Table:
    """A document table whose ``text`` holds these bytes as they are (valid UTF-8 or not), as another writer's file can."""
    raw = pa.array(texts, pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers(), null_count=raw.null_count)
    return pa.table({"id": [f"d{n}" for n in range(len(texts))], "text": text, "language": pa.array(languages, pa.string())})


def run_steps(docs: pa.Table, model: str, folder: Path, keep: list[dict], scorers: int = 1, ensemble: bool = False,
              per_language: bool = False, weight: str = "chars", max_chars: int = 1_000_000, min_docs: int = 50,
              min_distinct_scores: int = 20) -> tuple[dict, pa.Table, pa.Table]:
    """score -> calibrate -> decide on one shard; the decide step's result (with the score and calibrate steps'
    under ``score`` and ``calibrate``), kept documents and rejects."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(docs, folder / "input.parquet")
    shard = {"shard": 0, "input": str(folder / "input.parquet")}
    names = ["ft", "ft2"][:scorers]
    specs = {name: {"kind": "fasttext", "path": model, "label": fasttext_model.POSITIVE, "max_chars": max_chars,
                    "batch_size": 64, "device": None, "regression": False} for name in names}
    scores, grids = str(folder / "scores.parquet"), str(folder / "grids.parquet")
    scored = score_shard(shard, {"scorers": specs, "max_chars": max_chars}, scores, str(folder / "scores-rejects.parquet"))
    calibrated = calibrate_shard({"shard": 0}, {"scores": [scores], "scorers": names, "weight": weight, "per_language": per_language,
                                                "min_docs": min_docs, "min_distinct_scores": min_distinct_scores},
                                 grids, str(folder / "grids-rejects.parquet"))
    result = decide_shard({**shard, "scores": scores}, {
        "grids": grids, "scorers": names, "per_language": per_language, "weight": weight, "ensemble": ensemble,
        "keep": [KeepRule(**rule).model_dump(mode="json") for rule in keep],
    }, str(folder / "kept.parquet"), str(folder / "rejects.parquet"))
    result["score"], result["calibrate"] = scored, calibrated
    return result, pq.read_table(folder / "kept.parquet"), pq.read_table(folder / "rejects.parquet")


hostile_text = st.one_of(
    st.none(),
    st.sampled_from([b"", b"   \n\t ", b"\x00", b"a\x00b", INVALID_UTF8, b"\xed\xa0\x80", "x".encode() * 50_000]),
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=20),
)
keep_rules = st.sampled_from([[], [{"scorer": "ft", "min": 0.5}], [{"scorer": "ft", "top_share": 0.3, "unit": "docs"}],
                              [{"scorer": "ft", "top_share": 1.0}], [{"scorer": "ft", "min": -1e300}]])


@settings(derandomize=True, deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(hostile_text, min_size=0, max_size=12), data=st.data(), keep=keep_rules,
       ensemble=st.booleans(), per_language=st.booleans(), weight=st.sampled_from(["tokens", "bytes", "chars", "docs"]),
       max_chars=st.integers(1, 20_000), min_docs=st.integers(1, 5))
@example(texts=[INVALID_UTF8, b"fine text", None], data=None, keep=[{"scorer": "ft", "min": 0.5}], ensemble=True,
         per_language=True, weight="chars", max_chars=10_000, min_docs=1)
@example(texts=[INVALID_UTF8], data=None, keep=[], ensemble=True, per_language=False, weight="tokens", max_chars=1, min_docs=1)
def test_every_document_comes_out_once_with_finite_scores(model, tmp_path_factory, texts, data, keep, ensemble,
                                                          per_language, weight, max_chars, min_docs):
    languages = (data.draw(st.lists(st.sampled_from(["en", "de", None]), min_size=len(texts), max_size=len(texts)))
                 if data is not None else [None] * len(texts))
    if ensemble and data is not None and data.draw(st.booleans()):
        keep = [*keep, {"min_level": 2}]
    folder = tmp_path_factory.mktemp("run")
    result, kept, rejects = run_steps(document_table(texts, languages), model, folder, keep, scorers=2 if ensemble else 1,
                                      ensemble=ensemble, per_language=per_language, weight=weight, max_chars=max_chars,
                                      min_docs=min_docs, min_distinct_scores=min_docs)

    seen = Counter(kept["id"].to_pylist() + rejects["id"].to_pylist())
    assert seen == Counter(f"d{n}" for n in range(len(texts)))  # each document exactly once
    undecodable = {f"d{n}" for n, t in enumerate(texts) if t is not None and not _is_utf8(t)}
    reasons = dict(zip(rejects["id"].to_pylist(), rejects["drop_reason"].to_pylist()))
    assert {i for i, r in reasons.items() if r == "quality:undecodable"} == undecodable
    assert set(reasons.values()) <= {"quality:undecodable", "quality:ft", "quality:level"}
    details = dict(zip(rejects["id"].to_pylist(), rejects["drop_detail"].to_pylist()))
    assert all(details[i] and "not valid UTF-8" in details[i] for i in undecodable)
    for table in (kept, rejects):
        table["text"].validate(full=True)  # every reader can read what was written
    for value in kept["quality_ft"].to_pylist():
        assert value is not None and math.isfinite(value) and 0 <= value <= 1
    for value in rejects["quality_ft"].to_pylist():
        assert value is None or math.isfinite(value)
    stats = result["stats"]
    assert stats["docs_in"] == len(texts) and stats["docs_out"] == kept.num_rows and stats["rejects"] == rejects.num_rows
    for key in ("docs_in", "docs_out", "rejects", "text_chars", "rejected_chars"):
        assert isinstance(stats[key], int) and stats[key] >= 0
    assert all(count > 0 for count in stats["drop_reasons"].values())


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
