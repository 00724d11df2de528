"""The cost planner: what every shard records of its cost, the fit and extrapolation on step
figures, and ``fineflow run --dry-run --estimate`` on a tiny pipeline run in-process (no cluster)."""

from __future__ import annotations

import gzip
import os
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO
from fineflow import cost_planner
from fineflow.config import load_config
from fineflow.tasks.common.cost import StepFigures, extrapolate, figures, total

PLUGINS = REPO / "tests" / "plugins"


@pytest.fixture(autouse=True)
def _plugins_forgotten():
    """The toy plug-in kind these runs load stays out of the other modules' tests."""
    from fineflow import registry

    kinds, plugins, path = dict(registry._KINDS), dict(registry._PLUGINS), list(sys.path)
    loaded = registry._entry_points_loaded
    yield
    registry._entry_points_loaded = loaded
    registry._KINDS.clear()
    registry._KINDS.update(kinds)
    registry._PLUGINS.clear()
    registry._PLUGINS.update(plugins)
    sys.path[:] = path


def _figures(**overrides) -> StepFigures:
    values = dict(stage="s", step="map", tasks=4, cpu_seconds=40.0, wall_seconds=60.0, peak_rss_mb=500.0,
                  start_rss_mb=300.0, bytes_written=1000, bytes_read=0)
    return StepFigures(**{**values, **overrides})


def test_a_map_step_scales_with_its_input_and_runs_in_waves():
    estimate = extrapolate(_figures(), scale=10.0, tasks=40, workers=8, basis="sample run")
    assert estimate.cpu_hours == pytest.approx(400.0 / 3600)
    assert estimate.wall_hours == pytest.approx(5 * 15.0 / 3600)  # 40 tasks of 15 s each, 8 at a time
    assert estimate.peak_rss_mb == pytest.approx(500.0)  # each task's input is the size it was
    assert estimate.bytes_written == 10_000
    assert estimate.basis == "sample run"
    fewer_slots = extrapolate(_figures(), scale=10.0, tasks=40, workers=3, basis="sample run")
    assert fewer_slots.wall_hours == pytest.approx(14 * 15.0 / 3600)


def test_a_reduction_grows_its_memory_with_the_input():
    reduction = _figures(step="cluster", tasks=1, cpu_seconds=5.0, wall_seconds=5.0, peak_rss_mb=350.0, start_rss_mb=300.0)
    estimate = extrapolate(reduction, scale=100.0, tasks=1, workers=16, basis="last run")
    assert estimate.tasks == 1
    assert estimate.wall_hours == pytest.approx(500.0 / 3600)  # one task: no parallelism to gain
    assert estimate.peak_rss_mb == pytest.approx(300.0 + 50.0 * 100)
    unknown = extrapolate(reduction, scale=100.0, tasks=None, workers=16, basis="last run")
    assert unknown.tasks == 1  # without the full plan's count a one-task step stays one task
    assert extrapolate(_figures(), scale=2.5, tasks=None, workers=1, basis="x").tasks == 10


def test_a_first_task_one_off_cost_is_paid_once_per_worker_not_per_byte():
    stats = [{"cpu_seconds": c, "wall_seconds": c, "peak_rss_mb": 1.0, "start_rss_mb": 1.0, "bytes_written": 1}
             for c in (10.0, 2.0, 2.0, 3.0)]  # the first task loaded a model: 8 s beyond the others' median
    found = figures("s", "map", stats)
    assert found.first_task_extra_cpu == pytest.approx(8.0)
    estimate = extrapolate(found, scale=10.0, tasks=40, workers=4, basis="x")
    assert estimate.cpu_hours * 3600 == pytest.approx((17.0 - 8.0) * 10 + 8.0 * 4)
    assert estimate.wall_hours * 3600 == pytest.approx(10 * 90.0 / 40 + 8.0)  # 10 waves; the first pays the load
    linear = extrapolate(replace(found, first_task_extra_cpu=0.0), scale=10.0, tasks=40, workers=4, basis="x")
    assert linear.cpu_hours > estimate.cpu_hours


def test_figures_need_every_shard_measured_and_total_adds_up():
    stats = [{"cpu_seconds": 1.5, "wall_seconds": 2.0, "peak_rss_mb": 100.0, "start_rss_mb": 80.0, "bytes_written": 10,
              "bytes_read": 7}, {"cpu_seconds": 2.5, "peak_rss_mb": 120.0, "start_rss_mb": 90.0, "bytes_written": 5}]
    found = figures("s", "map", stats)
    assert (found.tasks, found.cpu_seconds, found.wall_seconds) == (2, 4.0, 4.5)
    assert (found.peak_rss_mb, found.start_rss_mb, found.bytes_written, found.bytes_read) == (120.0, 90.0, 15, 7)
    assert figures("s", "map", [*stats, {"docs_in": 3}]) is None  # a shard recorded before TaskUsage
    steps = [extrapolate(found, 2.0, None, 1, "x"), extrapolate(_figures(), 2.0, None, 1, "x")]
    whole = total(steps)
    assert whole["cpu_hours"] == pytest.approx((8.0 + 80.0) / 3600)
    assert whole["peak_rss_mb"] == max(s.peak_rss_mb for s in steps)
    with pytest.raises(ValueError, match="scale"):
        extrapolate(found, 0.0, None, 1, "x")
    with pytest.raises(ValueError, match="workers"):
        extrapolate(found, 1.0, None, 0, "x")


def test_pick_spreads_the_sample_over_the_sorted_files():
    files = [f"f{i}" for i in range(10)]
    assert cost_planner.pick(list(reversed(files)), 3) == ["f0", "f3", "f6"]
    assert cost_planner.pick(files, 20) == files


def _wet(path: Path, pages: int, words: int) -> None:
    records = []
    for n in range(pages):
        url = f"https://example.org/{path.stem}/{n}"
        body = " ".join(f"word{(n * 7 + i) % 97}" for i in range(words)).encode()
        head = (
            f"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: {url}\r\nWARC-Date: 2026-09-01T00:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        records.append(gzip.compress(head + body + b"\r\n\r\n"))
    path.write_bytes(b"".join(records))


def _pipeline(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    _wet(data / "a.warc.wet.gz", 40, 200)
    _wet(data / "b.warc.wet.gz", 80, 200)
    _wet(data / "c.warc.wet.gz", 60, 200)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "storage": str(tmp_path / "store"), "plugins": ["toy_stage"], "plugins_from": str(PLUGINS),
        "dask": {"n_workers": 3, "threads_per_worker": 1},
        "stages": [
            {"stage": "crawl", "inputs": ["data/*.warc.wet.gz"], "extractor": "resiliparse"},
            {"stage": "wordcount", "name": "words", "input": "crawl", "min_words": 10},
        ],
    }))
    return path


def test_every_shard_records_its_cost_and_the_sample_scales_by_raw_bytes(tmp_path):
    path = _pipeline(tmp_path)
    config = load_config(path)
    sizes = {str(p): p.stat().st_size for p in (tmp_path / "data").iterdir()}
    first = min(sizes)  # a.warc.wet.gz: the first sorted, which a sample of one picks
    run = cost_planner.run_in_process(cost_planner.sample_config(config, [first], str(tmp_path / "scratch")))
    for _, _plan, results in run:
        for result in results:
            stats = result["stats"]
            assert stats["cpu_seconds"] >= 0 and stats["wall_seconds"] > 0 and stats["peak_rss_mb"] > 0
            written = [result.get("output"), result.get("rejects"), *(result.get("artifacts") or [])]
            assert stats["bytes_written"] == sum(info["bytes"] for info in written if info) > 0
    source = run[0][1]
    assert sum(r["stats"]["bytes_read"] for r in run[0][2]) == sizes[first]  # the whole first file
    assert all("bytes_read" not in r["stats"] for _, _plan, results in run[1:] for r in results)
    assert source.location.root == str(tmp_path / "scratch")

    estimate = cost_planner.from_sample(config, 1, workers=3)
    assert estimate.input_bytes == sum(sizes.values())
    assert estimate.measured_bytes == sizes[first]
    assert [(s.stage, s.step) for s in estimate.steps] == [("crawl", "extract"), ("words", "count"), ("words", "total")]
    assert estimate.missing == []
    assert all(step.cpu_hours > 0 and step.bytes_written > 0 for step in estimate.steps)
    # the sample ran into a scratch folder: the pipeline's storage holds only what planning caches (input hashes)
    assert {p.name for p in (tmp_path / "store").iterdir()} <= {"_meta"}


def test_the_cli_shows_the_estimate_and_its_basis(tmp_path):
    from fineflow.cli import app

    path = _pipeline(tmp_path)
    runner = CliRunner(env={"COLUMNS": "250"})
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        refused = runner.invoke(app, ["run", str(path), "--estimate"])
        assert refused.exit_code == 2 and "--estimate goes with --dry-run" in refused.output
        result = runner.invoke(app, ["run", str(path), "--dry-run", "--estimate", "--sample-files", "2", "--workers", "5"])
    finally:
        os.chdir(previous)
    assert result.exit_code == 0, result.output
    assert "sample run (2 of 3 files)" in result.output and "wall time on 5 task slot(s)" in result.output
    for step in ("extract", "count", "total"):
        assert any(line.split("│")[2].strip() == step for line in result.output.splitlines() if line.count("│") > 3)
    # the estimate ran nothing in the pipeline's own storage: a last-run estimate finds no figures there
    last = runner.invoke(app, ["run", str(path), "--dry-run", "--estimate", "--from-last-run"])
    assert last.exit_code == 2 and "read no raw input bytes" in last.output
