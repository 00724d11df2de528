"""bench/scale_sim.py's smoke run: every reduction and the listing's planning run in their own
processes and the last line is the one JSON object the docs' table is made from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_ends_with_one_json_line_of_every_reduction(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "scale_sim.py"), "--quick", "--listing-files", "300",
                           "--folder", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"dedup_cluster", "quality_calibrate"} <= set(result)
    for name in ("dedup_cluster", "quality_calibrate"):
        assert list(result[name]) == ["100000"]
        figures = result[name]["100000"]
        assert set(figures) == {"peak_rss_mb", "seconds"}
        assert 0 < figures["peak_rss_mb"] < 1024 and figures["seconds"] > 0
    planning = result["planning"]
    assert planning["files"] == 300 and planning["shards"] >= 300  # a crawl shard per listed file, and more steps'
    assert planning["plan_json_mb"] > 0 and planning["peak_rss_mb"] >= planning["rss_before_planning_mb"]
    assert list(tmp_path.iterdir()) == []  # the scratch folder removed
    assert "100,000 documents" in done.stdout  # the readable lines before the JSON one
