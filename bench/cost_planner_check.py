"""How far the cost planner's estimate is from a measured run (docs/scaling.md, "Cost planner").

For a preset pointed at a folder of WARC files: the estimate from a sample run on K files
(``fineflow.cost_planner.from_sample``), then the whole folder run in-process the same way
(shard by shard, no cluster), each in a fresh process, and per step the predicted against the
measured CPU seconds.

    uv run --locked python bench/cost_planner_check.py examples/demo.yaml /work/shared/corpus/web-small --sample-files 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from fineflow import cost_planner, storage
from fineflow.config import load_config


def _part(part: str, pipeline: Path, files: list[str], sample_files: int, workers: int, folder: str) -> dict:
    """One half, in a fresh process (no model or splitter loaded by the other half)."""
    config = cost_planner.sample_config(load_config(pipeline), files, storage.normalize(f"{folder}/whole"))
    load = os.getloadavg()
    started = time.perf_counter()
    if part == "estimate":
        estimate = cost_planner.from_sample(config, sample_files, workers, storage.normalize(f"{folder}/sample"))
        return {
            "load": load, "wall_s": round(time.perf_counter() - started, 1), "input_bytes": estimate.input_bytes,
            "sample_bytes": estimate.measured_bytes, "basis": estimate.basis, "steps": [asdict(s) for s in estimate.steps],
        }
    run = cost_planner.run_in_process(config)
    return {
        "load": load, "wall_s": round(time.perf_counter() - started, 1),
        "steps": [asdict(f) for f in cost_planner.measured_figures(run).values()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("folder", type=Path, help="the raw input files (*.warc.gz) the preset reads instead of its own")
    parser.add_argument("--sample-files", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--part", choices=["estimate", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    files = sorted(str(p.resolve()) for p in args.folder.glob("*.warc.gz"))
    if not files:
        sys.exit(f"no *.warc.gz in {args.folder}")
    if args.part:
        result = _part(args.part, args.pipeline, files, args.sample_files, args.workers, args.scratch)
        print(json.dumps(result))
        return
    halves = {}
    with tempfile.TemporaryDirectory(prefix="fineflow-costcheck-") as folder:
        for part in ("estimate", "measure"):
            out = subprocess.run(
                [sys.executable, __file__, str(args.pipeline), str(args.folder), "--sample-files", str(args.sample_files),
                 "--workers", str(args.workers), "--part", part, "--scratch", f"{folder}/{part}"],
                check=True, capture_output=True, text=True,
            ).stdout
            halves[part] = json.loads(out.strip().splitlines()[-1])
    estimate, measure = halves["estimate"], halves["measure"]
    measured = {(f["stage"], f["step"]): f for f in measure["steps"]}
    rows = []
    for step in estimate["steps"]:
        found = measured.get((step["stage"], step["step"]))
        rows.append({
            "step": f"{step['stage']}/{step['step']}", "predicted_cpu_s": round(step["cpu_hours"] * 3600, 2),
            "measured_cpu_s": round(found["cpu_seconds"], 2) if found else None,
            "predicted_mb": step["peak_rss_mb"], "measured_mb": found["peak_rss_mb"] if found else None,
            "predicted_bytes": step["bytes_written"], "measured_bytes": found["bytes_written"] if found else None,
        })
    predicted = sum(step["cpu_hours"] for step in estimate["steps"]) * 3600
    actual = sum(f["cpu_seconds"] for f in measure["steps"])
    result = {
        "pipeline": str(args.pipeline), "files": len(files), "input_bytes": estimate["input_bytes"],
        "sample_bytes": estimate["sample_bytes"], "basis": estimate["basis"], "cpus": os.cpu_count(),
        "load_average": {"estimate": estimate["load"], "measure": measure["load"]},
        "estimate_wall_s": estimate["wall_s"], "full_run_wall_s": measure["wall_s"],
        "predicted_cpu_s": round(predicted, 1), "measured_cpu_s": round(actual, 1),
        "ratio": round(predicted / actual, 3) if actual else None, "steps": rows,
    }
    for row in rows:
        print(f"{row['step']:28} predicted {row['predicted_cpu_s']:>9} s  measured {row['measured_cpu_s']!s:>9} s")
    print(json.dumps({key: value for key, value in result.items() if key != "steps"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
