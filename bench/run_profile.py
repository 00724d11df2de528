"""Where a whole pipeline run spends its CPU and wall seconds: every process, by kind of work.

Runs ``fineflow run`` on a pipeline (the demo, or the FineWeb preset on web-small), into empty
storage and then again (the fully cached repeat), each under py-spy (``--subprocesses``: the
CLI and flow process with its Dask scheduler, the Dask workers, the extraction subprocesses).

* **Exact CPU seconds per process** come from ``bench/proctree.py`` (the tree's total is exact,
  every descendant reaped; each process's own share is polled every 0.1 s). The Prefect server,
  started before timing in a private ``FINEFLOW_HOME``, is measured on its own.
* **Within each process**, py-spy's stack samples (50 per second, idle threads excluded) split
  that process's CPU by kind of work, proportionally to the samples, by the frames on each stack:

  | kind | a sample whose stack holds |
  |---|---|
  | model and splitter loading | loading a language ID model, a word splitter, a blocklist, starting an extraction subprocess |
  | process start and imports | an ``import`` (module loading), or the interpreter's start before any frame |
  | storage reads and writes | ``fineflow.storage``, Parquet reads and writes, fsspec/s3fs |
  | step compute | a step's shard function (``fineflow.steps.run_shard``) or a step's subprocess (extraction, fastText training), less the above |
  | Prefect (client, engine, API traffic) | ``prefect`` frames: flow and task engines, API calls, artifacts, logs |
  | Dask (scheduler, worker, comms) | ``distributed``/``tornado`` frames: scheduling, heartbeats, serialization |
  | fineflow orchestration | other fineflow frames: planning, manifests, summaries, the report |

  A sample's leaf frame in a wait (``select``, ``poll``, ``wait``, ``sleep``, lock acquire) counts
  as idle and is dropped: py-spy sees a thread that wakes briefly as running.

Usage:
    .venv/bin/python bench/run_profile.py        # the demo; the demo on web-small; the FineWeb preset on web-small
    .venv/bin/python bench/run_profile.py --runs demo
    .venv/bin/python bench/run_profile.py --runs "FineWeb preset on web-small (trafilatura)"   # not in the default set

Needs py-spy on the PATH (``uv tool install py-spy``) and permission to trace child processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import yaml
from common import machine_info, save_record, table_head  # bench/ is on sys.path
from proctree import process_cpu, run_tree

ROOT = Path(__file__).resolve().parent.parent
WEB_SMALL = ROOT.parent / "shared" / "corpus" / "web-small"
RATE = 50

KINDS = (
    "model and splitter loading",
    "process start and imports",
    "storage reads and writes",
    "step compute",
    "Prefect (client, engine, API traffic)",
    "Dask (scheduler, worker, comms)",
    "fineflow orchestration",
    "other",
)
FIXED = ("model and splitter loading", "process start and imports")
ORCHESTRATION = ("Prefect (client, engine, API traffic)", "Dask (scheduler, worker, comms)", "fineflow orchestration")

# (file suffix, function names) of frames that load a model, a splitter or a list, or start a subprocess
_LOADERS = (
    ("tasks/text/langid.py", {"load_model"}),
    ("tasks/text/words.py", {"load_splitter", "build"}),
    ("tasks/filter/url_filter.py", {"_load"}),
    ("tasks/crawl/sandbox.py", {"_start"}),
)
# A step's helper run as a subprocess (``python -m fineflow.tasks...``): extraction, fastText training
_STEP_SUBPROCESS = re.compile(r"_run_module_as_main[^;]*;_run_code[^;]*;<module> \((?:[^;]*/)?(?:fineflow/)?tasks/")
_PROCESS = re.compile(r'^process (\d+):"')  # py-spy's frame naming a process (a function may be called "process")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?):\d+\)$")
_WAITS = re.compile(r"^(select|poll|epoll|_poll|wait|_wait_for_tstate_lock|sleep|acquire|Condition\.wait|Event\.wait|EpollSelector\.select"
                    r"|Queue\.get|_recv_bytes|_recv|read|readinto|accept|BaseSelector\.select|SelectSelector\.select)\b")


def classify(frames: list[str]) -> str | None:
    """The kind of work of one stack sample (root first), or None for a thread waiting."""
    leaf = frames[-1] if frames else ""
    if _WAITS.match(leaf) and "run_shard" not in " ".join(frames):
        return None
    text = ";".join(frames)
    for frame in frames:
        match = _FRAME.match(frame)
        if match and any(match["file"].endswith(path) and match["function"] in names for path, names in _LOADERS):
            return "model and splitter loading"
    if "_find_and_load" in text or "exec_module" in text:
        return "process start and imports"
    if re.search(r"fineflow/storage\.py|documents\.py.*?(write_table|read_|commit_shard)|pyarrow/parquet|fsspec/|s3fs/", text):
        return "storage reads and writes"
    if "run_shard" in text or _STEP_SUBPROCESS.search(text):
        return "step compute"
    if "prefect/" in text:
        return "Prefect (client, engine, API traffic)"
    if re.search(r"distributed/|tornado/|dask/", text):
        return "Dask (scheduler, worker, comms)"
    if "fineflow/" in text or "/flows/" in text or "/tasks/" in text:
        return "fineflow orchestration"
    return "other"


def read_samples(path: Path) -> dict[int, Counter]:
    """py-spy's raw output: samples per process id, by kind of work."""
    kinds: dict[int, Counter] = defaultdict(Counter)
    if not path.exists():
        return kinds
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        processes = [i for i, frame in enumerate(frames) if _PROCESS.match(frame)]
        if not processes:
            continue
        pid = int(_PROCESS.match(frames[processes[-1]])[1])
        body = [frame for frame in frames[processes[-1] + 1 :] if not frame.startswith("thread ")]
        kind = classify(body)
        if kind is not None:
            kinds[pid][kind] += int(count)
    return kinds


def role_of(command: str) -> str:
    if "py-spy" in command:
        return "py-spy"
    if "extract_worker" in command:
        return "extraction subprocesses"
    if "-m fineflow.tasks." in command:  # e.g. fastText training, run apart from its worker
        return "other step subprocesses"
    if "resource_tracker" in command:
        return "other"
    if "spawn_main" in command or "forkserver" in command:  # (fineflow's LocalCluster forks its workers)
        return "Dask workers"
    return "CLI, flow and Dask scheduler"


def profile_run(pipeline: Path, command: list[str], env: dict[str, str], work: Path, label: str, server_pid: int) -> dict:
    spy = work / f"{label}.spy"
    server_before = process_cpu(server_pid)
    py_spy = shutil.which("py-spy") or str(Path.home() / ".local" / "bin" / "py-spy")
    with open(work / f"{label}.log", "w") as log:
        tree = run_tree(
            [py_spy, "record", "--subprocesses", "--nonblocking", "-r", str(RATE), "-f", "raw", "-o", str(spy), "--", *command],
            env=env, role=role_of, stdout=log, stderr=subprocess.STDOUT,
        )
    if tree.returncode != 0:
        raise RuntimeError(f"{label} failed ({tree.returncode}):\n" + (work / f"{label}.log").read_text()[-3000:])
    server = process_cpu(server_pid) - server_before
    samples = read_samples(spy)
    by_role: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    unsampled: list[dict] = []  # processes with CPU time that py-spy never sampled
    for pid, process in tree.processes.items():
        if process["role"] in ("py-spy", "other"):
            continue
        counts = samples.get(pid)
        total = sum(counts.values()) if counts else 0
        if not total:  # too short-lived to be sampled: all of it is starting up
            by_role[process["role"]]["process start and imports"] += process["cpu_s"]
            if process["cpu_s"] >= 0.5:
                unsampled.append({"command": process["cmd"][:200], "cpu_s": round(process["cpu_s"], 2)})
            continue
        for kind, count in counts.items():
            by_role[process["role"]][kind] += process["cpu_s"] * count / total
    spy_cpu = sum(p["cpu_s"] for p in tree.processes.values() if p["role"] == "py-spy")
    measured = tree.cpu_s - spy_cpu  # the run's own tree, without the sampler
    kinds = {kind: round(sum(role.get(kind, 0.0) for role in by_role.values()), 2) for kind in KINDS}
    attributed = sum(kinds.values())
    kinds["other"] = round(kinds["other"] + max(measured - attributed, 0.0), 2)  # unseen short-lived processes
    summary = json.loads((work / f"{label}.summary.json").read_text())
    tasks = prefect_tasks(summary, pipeline)
    return {
        "wall_s": tree.wall_s,
        "cpu_s": round(measured, 2),
        "sampler_cpu_s": round(spy_cpu, 2),
        "prefect_server_cpu_s": round(server, 2),
        "prefect_tasks": tasks,
        "by_kind": kinds,
        "by_role": {role: {k: round(v, 2) for k, v in kinds_.items()} for role, kinds_ in by_role.items()},
        "unsampled_processes": unsampled,
        "fixed_and_orchestration_share": round(sum(kinds[k] for k in (*FIXED, *ORCHESTRATION)) / max(measured, 1e-9), 4),
    }


def prefect_tasks(summary: dict, pipeline: Path) -> int:
    """Prefect task runs the run created: one per batch of shards that had work (``flows/engine.py``'s
    ``batches``, with the pipeline's ``dask`` settings)."""
    dask = {"tasks_per_step": 256, "shards_per_task": 4, **(yaml.safe_load(pipeline.read_text()).get("dask") or {})}
    pending = [step["shards"] - step["cached_shards"] for stage in summary["stages"] for step in stage["steps"]]
    return sum(min(n, dask["tasks_per_step"], max(1, n // dask["shards_per_task"])) for n in pending if n > 0)


def _on_web_small(example: str, work: Path, **crawl_settings: object) -> Path:
    """An example pipeline with its crawl reading web-small (its paths made absolute)."""
    config = yaml.safe_load((ROOT / "examples" / example).read_text())
    crawl = next(stage for stage in config["stages"] if stage["stage"] == "crawl")
    crawl.update(inputs=[f"{WEB_SMALL}/*.warc.gz"], **crawl_settings)
    # The demo's one Prefect task per shard (to show each in the UI) gives way to the default batching
    config.get("dask", {}).pop("shards_per_task", None)
    for stage in config["stages"]:  # e.g. the quality stage's reference pages, relative to examples/
        for key, value in stage.items():
            if isinstance(value, str) and value.startswith(("data/", "lists/", "prompts/")):
                stage[key] = str(ROOT / "examples" / value)
    path = work / f"{Path(example).stem}-web-small.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def pipelines(work: Path) -> dict[str, Path]:
    return {
        "demo": ROOT / "examples" / "demo.yaml",
        "demo on web-small": _on_web_small("demo.yaml", work, shard_bytes=8_000_000),
        "FineWeb preset on web-small (resiliparse)": _on_web_small("fineweb.yaml", work, extractor="resiliparse"),
        "FineWeb preset on web-small (trafilatura)": _on_web_small("fineweb.yaml", work, extractor="trafilatura"),
    }


def markdown(results: dict) -> str:
    lines = table_head("run", "wall", "CPU s", *KINDS, "fixed + orchestration", "Prefect tasks", "Prefect server CPU s")
    for name, run in results.items():
        cells = " | ".join(f"{run['by_kind'][kind]:.1f}" for kind in KINDS)
        lines.append(
            f"| {name} | {run['wall_s']:.1f} s | {run['cpu_s']:.1f} | {cells} | {run['fixed_and_orchestration_share']:.0%} | "
            f"{run['prefect_tasks']} | {run['prefect_server_cpu_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["demo", "demo on web-small", "FineWeb preset on web-small (resiliparse)"])
    parser.add_argument("--keep", type=Path, help="copy each run's py-spy samples (raw format) and log into this folder")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from crawl_bench import bench_environment, fineflow_cli

    record: dict = {"machine": machine_info(("fineflow", "prefect", "distributed")), "results": {}}
    fineflow = str(Path(sys.executable).with_name("fineflow"))
    with tempfile.TemporaryDirectory(prefix="run-profile-") as tmp:
        work = Path(tmp)
        env = bench_environment(dict(os.environ), work / "fineflow-home")
        fineflow_cli(["server", "start"], env)
        server = json.loads((work / "fineflow-home" / "prefect" / "server.json").read_text())["pid"]
        try:
            for name, pipeline in pipelines(work).items():
                if name not in args.runs:
                    continue
                storage = work / f"storage-{name}"
                for attempt in ("cold", "cached repeat"):
                    label = re.sub(r"[^a-z0-9]+", "-", f"{name}-{attempt}".lower())
                    print(f"[{name}] {attempt} ...", file=sys.stderr, flush=True)
                    command = [fineflow, "run", str(pipeline), "--storage", str(storage), "--summary-json", str(work / f"{label}.summary.json")]
                    record["results"][f"{name}, {attempt}"] = profile_run(pipeline, command, env, work, label, server)
                    if args.keep:
                        args.keep.mkdir(parents=True, exist_ok=True)
                        for suffix in (".spy", ".log"):
                            if (work / f"{label}{suffix}").exists():
                                shutil.copy(work / f"{label}{suffix}", args.keep / f"{label}{suffix}")
        finally:
            fineflow_cli(["server", "stop"], env)
    record["table"] = markdown(record["results"])
    save_record(record, "run-profile")

if __name__ == "__main__":
    main()
