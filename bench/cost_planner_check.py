"""How far the cost planner's estimate is from a measured run (docs/scaling.md, "Cost planner").

For a preset pointed at a folder of WARC files: the estimate from a sample run on K files
(``fineflow.cost_planner.from_sample``), then the whole folder run in this process the same way
(shard by shard, no cluster), and per step the predicted against the measured CPU seconds.

    uv run --locked python bench/cost_planner_check.py examples/demo.yaml /work/shared/corpus/web-small --sample-files 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from fineflow import cost_planner, storage
from fineflow.config import load_config
from fineflow.tasks.common.cost import total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("folder", type=Path, help="the raw input files (*.warc.gz) the preset reads instead of its own")
    parser.add_argument("--sample-files", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    files = sorted(str(p.resolve()) for p in args.folder.glob("*.warc.gz"))
    if not files:
        sys.exit(f"no *.warc.gz in {args.folder}")
    with tempfile.TemporaryDirectory(prefix="fineflow-costcheck-") as folder:
        config = cost_planner.sample_config(load_config(args.pipeline), files, storage.normalize(f"{folder}/whole"))
        load = os.getloadavg()
        started = time.perf_counter()
        estimate = cost_planner.from_sample(config, args.sample_files, args.workers, storage.normalize(f"{folder}/sample"))
        estimate_wall = time.perf_counter() - started
        started = time.perf_counter()
        run = cost_planner.run_in_process(config)
        run_wall = time.perf_counter() - started
    measured = cost_planner.measured_figures(run)
    rows = []
    for step in estimate.steps:
        found = measured.get((step.stage, step.step))
        rows.append({
            "step": f"{step.stage}/{step.step}", "predicted_cpu_s": round(step.cpu_hours * 3600, 2),
            "measured_cpu_s": round(found.cpu_seconds, 2) if found else None,
            "predicted_mb": step.peak_rss_mb, "measured_mb": found.peak_rss_mb if found else None,
            "predicted_bytes": step.bytes_written, "measured_bytes": found.bytes_written if found else None,
        })
    predicted = total(estimate.steps)["cpu_hours"] * 3600
    actual = sum(f.cpu_seconds for f in measured.values())
    result = {
        "pipeline": str(args.pipeline), "files": len(files), "input_bytes": estimate.input_bytes,
        "sample_bytes": estimate.measured_bytes, "basis": estimate.basis, "load_average_at_start": load,
        "cpus": os.cpu_count(), "estimate_wall_s": round(estimate_wall, 1), "full_run_wall_s": round(run_wall, 1),
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
