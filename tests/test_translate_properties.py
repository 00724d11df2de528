"""Properties of the translate stage's steps under hostile documents (issue #27): empty,
whitespace, NUL, invalid UTF-8, very long lines without punctuation, mixed scripts; any mode and
windows. The steps run in-process with the identity backend: every step finishes, every chosen
(document, target) is in decide's output or its rejects exactly once, and every count is finite
and non-negative. The hard window and the refusal plumbing are checked on their own, cheaply."""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import example, given, settings
from hypothesis import strategies as st
from stage_runner import run_plans

from fineflow import registry
from fineflow.llm import ResponseCache
from fineflow.manifest import shard_name
from fineflow.planning import plan_stage
from fineflow.steps import Source, StageInputs
from fineflow.tasks.translate import backends, window
from fineflow.tasks.translate.segment import reassemble, segment_document, segments

PIECES = ["Hello world.", "Привет, мир.", "你好世界。", "مرحبا بالعالم.", "\x00", "\n", "  ", "\t", "e\u0301", "word ",
          "https://example.org/x", "x = f(a);", "- item", "12 34", "\u2028", "🙂"]

long_lines = st.builds(lambda word, n: " ".join([word] * n), st.sampled_from(["alpha", "字字字", "مرحبا", "x" * 60]),
                       st.integers(200, 1500))
texts = st.one_of(
    st.just(""), st.text(alphabet=" \t\n\r\u3000\u00a0\x00", max_size=12), st.text(max_size=120), long_lines,
    st.lists(st.sampled_from(PIECES), max_size=40).map("".join),
)
# A document's text as bytes: UTF-8 of a text, or bytes another writer left (often not UTF-8).
raw_texts = st.one_of(texts.map(lambda text: text.encode("utf-8")), st.binary(max_size=80))
configs = st.fixed_dictionaries({
    "mode": st.sampled_from(["sentences", "windows", "lines"]),
    "window_tokens": st.integers(8, 300),
    "max_input_tokens": st.one_of(st.none(), st.integers(8, 600)),
    "targets": st.sampled_from([["fr"], ["de", "fr"]]),
})


def numbers(value: object):  # noqa: ANN201
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


def run_stage(raw: list[bytes], config: dict, root: Path) -> dict:
    folder = root / "docs"
    folder.mkdir()
    ids = [f"d{i}" for i in range(len(raw))]
    pq.write_table(pa.table({"id": ids, "text": pa.array(raw, pa.binary()).view(pa.string()), "language": ["en"] * len(raw)}),
                   folder / shard_name(0))
    stage = registry.validate_stage({
        "stage": "translate", "targets": config["targets"],
        "segment": {"mode": config["mode"], "window_tokens": config["window_tokens"]},
        "backend": {"kind": "identity", **({"max_input_tokens": config["max_input_tokens"]} if config["max_input_tokens"] else {})},
    })
    return run_plans(plan_stage(stage, str(root / "store"), StageInputs((Source("docs", "f" * 20, str(folder), 1),)), "t"))


def rows(steps: dict, step: str, folder: str = "data_folder") -> list[dict]:
    plan, _ = steps[step]
    return pa.concat_tables([pq.read_table(f) for f in sorted(Path(getattr(plan.location, folder)).glob("*.parquet"))]).to_pylist()


@settings(derandomize=True, deadline=None, max_examples=20)
@given(st.lists(raw_texts, min_size=1, max_size=5), configs)
@example([b"", b" \x00 ", b"Bad \xff\xfe bytes. More.", " ".join(["alpha"] * 3400).encode()],
         {"mode": "sentences", "window_tokens": 200, "max_input_tokens": None, "targets": ["de", "fr"]})
@example([b"\xc3", ("你好世界。" * 400).encode()], {"mode": "windows", "window_tokens": 8, "max_input_tokens": 8, "targets": ["fr"]})
def test_every_chosen_document_is_kept_or_rejected_once_and_counts_are_sane(raw, config):
    with tempfile.TemporaryDirectory() as folder:
        steps = run_stage(raw, config, Path(folder))
        chosen = [row["id"] for row in rows(steps, "choose")]
        expected = Counter(f"{doc}#{target}" for doc in chosen for target in config["targets"])
        decided = Counter(row["id"] for row in rows(steps, "decide"))
        rejected = rows(steps, "decide", "rejects_folder")
        assert decided + Counter(row["id"] for row in rejected) == expected
        assert not set(decided) & {row["id"] for row in rejected}
        assert all(row["drop_reason"].startswith("translate:") for row in rejected)
        for row in rejected:
            undecodable = row["drop_reason"] == "translate:undecodable"
            index = int(row["source_id"][1:])
            assert undecodable == (not _utf8(raw[index]))
            assert undecodable == ("not valid UTF-8" in (row["drop_detail"] or ""))
        selected = steps["select"][1][0]["stats"]
        assert selected["docs_out"] + sum(selected.get("skipped", {}).values()) == len(raw)
        for _, results in steps.values():
            for value in numbers([result["stats"] for result in results]):
                assert math.isfinite(value) and value >= 0


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(derandomize=True, deadline=None, max_examples=150)
@given(texts, st.sampled_from(["sentences", "windows", "lines"]), st.integers(8, 300), st.integers(8, 200))
@example(" ".join(["alpha"] * 3400), "sentences", 200, 512)  # the punctuation-less line
@example("字" * 3000, "lines", 200, 8)
def test_the_hard_window_holds_every_segment_and_the_text_comes_back(text, mode, window_tokens, limit):
    pieces = segment_document(text, "en", mode, window_tokens, None, limit, window.estimate)
    assert reassemble(pieces, segments(pieces)) == text
    # A single character over the window is never cut further (a 4-byte character is 2 estimated tokens).
    assert all(window.estimate(part) <= limit for part in segments(pieces))


class Refusing:
    """A stand-in backend that refuses any batch holding a text with ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.calls = 0

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        self.calls += 1
        if any(self.marker in text for text in texts):
            raise backends.Refused("HTTP 400: 'refused'")
        return [text.upper() for text in texts]


@settings(derandomize=True, deadline=None, max_examples=60)
@given(st.lists(st.text(alphabet="abcX ", min_size=1, max_size=8), min_size=1, max_size=40, unique=True), st.integers(1, 16))
def test_a_refused_text_is_isolated_and_only_all_refused_fails(texts, batch_size):
    refused = {text for text in texts if "X" in text}
    with tempfile.TemporaryDirectory() as folder:
        stats = backends.Stats()
        spec = {"kind": "http", "batch_size": batch_size}
        try:
            found, failures = backends.translate_all(spec, Refusing("X"), ResponseCache(folder), texts, "en", "fr", stats)
        except RuntimeError as error:
            assert "none accepted" in str(error) and len(refused) >= 8
            return
    keys = {backends.segment_key(text): text for text in texts}
    assert set(found) | set(failures) == set(keys) and not set(found) & set(failures)
    assert {keys[key] for key in failures} == refused
    assert all(failure.reason == "refused" and "HTTP 400" in failure.detail for failure in failures.values())
    assert all(found[key] == keys[key].upper() for key in found)
    assert stats.failed == len(refused) and stats.sent == len(texts) >= 0
