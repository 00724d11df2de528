"""Model files checked where a bad one cannot hurt the run (fineflow.model_check, the fastText layout check)."""

from __future__ import annotations

import re
import resource
import time
from pathlib import Path

import pytest

from fineflow import model_check, registry
from fineflow.model_check import ModelCheckError
from fineflow.preflight import PreflightError, check_stage
from fineflow.tasks.quality import fasttext_model
from fineflow.tasks.text import fasttext_file

TESTS = Path(__file__).resolve().parent
PARAMS = {"epoch": 5, "lr": 1.0, "dim": 10, "word_ngrams": 2, "min_count": 1, "ws": 5, "bucket": 2000}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FINEFLOW_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_check, "_memo", {})
    return tmp_path / "cache"


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "model.bin"
    texts = [f"a lesson about topic {i} with words" for i in range(40)] + [f"buy now cheap deal {i}" for i in range(40)]
    fasttext_model.train(texts, [True] * 40 + [False] * 40, PARAMS, 0, str(path))
    return path


def prefix(model: Path, size: int, name: str = "trunc.bin") -> Path:
    cut = model.with_name(name)
    cut.write_bytes(model.read_bytes()[:size])
    return cut


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def quality_stage(path: Path) -> object:
    return registry.validate_stage({"stage": "quality", "name": "q", "scorers": {"dclm": {"fasttext": str(path)}}})


def test_a_truncated_fasttext_model_is_one_line_before_any_work_and_never_loaded_here(model, cache):
    """The issue's case: the first 20,000 bytes of a model (here its first 300: inside its dictionary), which
    fastText's loader reads forever. Preflight (what --dry-run runs) says so in one line, at once."""
    # Cut inside its weights: fastText would load it silently with part of its matrix missing.
    # (Checked first: it also imports what preflight needs, so the peak below is the check's alone.)
    short = prefix(model, model.stat().st_size - 100, "short.bin")
    with pytest.raises(PreflightError, match=r"short.bin is not a loadable fastText model \(truncated: header "
                       rf"promises {model.stat().st_size - 97:,} bytes, file has {model.stat().st_size - 100:,}\)$"):
        check_stage(quality_stage(short))
    before = peak_rss_bytes()
    started = time.monotonic()
    with pytest.raises(PreflightError) as raised:
        check_stage(quality_stage(prefix(model, 300)))
    assert re.fullmatch(r"stages.q.scorers.dclm.fasttext: trunc.bin is not a loadable fastText model "
                        r"\(truncated: header promises at least [\d,]+ bytes, file has 300\)", str(raised.value))
    assert time.monotonic() - started < 30
    assert peak_rss_bytes() - before < 50 * 2**20  # fastText's own loader grows by GBs on this file


def test_the_scoring_step_checks_before_it_loads(model, cache):
    with pytest.raises(ModelCheckError, match=r"^trunc.bin is not a loadable fastText model \(truncated"):
        fasttext_model.scorer(str(prefix(model, 20_000)), "__label__hq")


def test_a_load_that_runs_away_is_stopped_by_the_memory_cap_in_the_child(model, cache, monkeypatch):
    """Without the layout check, the truncated model reaches fastText: the child hits its cap, the parent stays small."""
    monkeypatch.setenv(model_check.FLOOR_ENV, str(256 * 2**20))
    before = peak_rss_bytes()
    started = time.monotonic()
    with pytest.raises(ModelCheckError, match=r"^trunc.bin is not a loadable fastText model \(loading it exceeded 256 MiB\)$"):
        model_check.check(str(prefix(model, 300)), "fastText", "fineflow.tasks.text.fasttext_file:describe")
    assert time.monotonic() - started < 60
    assert peak_rss_bytes() - before < 50 * 2**20


def slow_describe(path: str) -> dict:  # the child of the timeout test
    time.sleep(60)
    return {}


def test_a_load_that_hangs_is_stopped_by_the_timeout(model, cache, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv(model_check.TIMEOUT_ENV, "2")
    started = time.monotonic()
    with pytest.raises(ModelCheckError, match=r"^model.bin is not a loadable fastText model \(did not load within 2 s\)$"):
        model_check.check(str(model), "fastText", "test_model_check:slow_describe")
    assert time.monotonic() - started < 30


def test_a_good_model_is_described_once_per_machine(model, cache, monkeypatch):
    assert fasttext_file.check(str(model)) == {"labels": ["__label__lq", "__label__hq"], "dimension": 10}
    assert len(list((cache / model_check.MARKER_FOLDER).iterdir())) == 1

    def no_child(*args: object) -> dict:
        raise AssertionError("loaded again")

    monkeypatch.setattr(model_check, "_load_in_child", no_child)
    monkeypatch.setattr(model_check, "_memo", {})  # a new worker process on the same machine: the marker answers
    assert fasttext_file.check(str(model))["dimension"] == 10
    model.write_bytes(model.read_bytes())  # rewritten: a new identity, checked again
    with pytest.raises(AssertionError, match="loaded again"):
        fasttext_file.check(str(model))


def test_a_model_without_the_label_and_bad_limits_are_one_line(model, cache, monkeypatch):
    with pytest.raises(ValueError, match=r"^model.bin: the fastText model has no label '__label__cc' \(its labels: __label__lq, __label__hq\)$"):
        fasttext_model.check_label(str(model), "__label__cc")
    for bad in ("nan", "inf", "-1", "abc"):
        monkeypatch.setenv(model_check.FACTOR_ENV, bad)
        with pytest.raises(ValueError, match=rf"^{model_check.FACTOR_ENV} must be a number from 1 to 1000, got"):
            model_check.limits_for(10)


def test_a_language_filter_model_is_checked_before_any_work_too(model, cache):
    stage = registry.validate_stage({"stage": "filter", "name": "f",
                                     "filters": [{"name": "language", "model": str(prefix(model, 300))}]})
    with pytest.raises(PreflightError, match=r"^stages.f.* trunc.bin is not a loadable fastText model \(truncated"):
        check_stage(stage)
