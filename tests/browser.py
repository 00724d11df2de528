"""Headless Chromium for the report tests: the DOM of a page after its scripts ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("FINEFLOW_REQUIRE_CHROMIUM"):  # set by .ci/run, which installs it
            raise AssertionError("chromium is required here but not installed")
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    return found


def rendered_dom(page: Path) -> str:
    """Load ``page`` offline and return the DOM once its scripts have drawn it."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def drawn_charts(dom: str) -> dict[str, int]:
    """For each plotly chart div (``chart-<name>``): how many data marks (bars, funnel segments) were drawn."""
    charts = {}
    for piece in dom.split('id="chart-')[1:]:
        name = piece.split('"', 1)[0]
        body = piece.split('<section class="chart">', 1)[0]
        charts[name] = body.count('class="point"') if 'class="main-svg"' in body else 0
    return charts
