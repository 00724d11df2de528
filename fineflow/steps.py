"""The stage contract: a stage is a small DAG of steps, each step a set of shard tasks.

A ``StepPlan`` is everything needed to run (or explain) one step without running it: its
fingerprint and output location, the import path of the pure shard function, its parameters
and the list of shard inputs. Orchestration (``fineflow.flows``) turns each shard into a
Prefect task on Dask whose cache key is ``<stage>/<step>/<fingerprint>/<shard>``.

Step kinds: ``map`` steps (one task per input shard, e.g. crawl's extract or filter's signals)
are what exists today; shuffles by key (one task per partition reading every upstream shard)
and reductions (one task over all shards) plan their shard lists the same way.
"""

from __future__ import annotations

import importlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import psutil

from fineflow import faults, storage
from fineflow.fingerprint import Fingerprint, step_fingerprint
from fineflow.manifest import StepLocation, read_latest, read_manifest, shard_name


@dataclass(frozen=True)
class StepPlan:
    stage: str
    step: str
    function: str  # "package.module:function(shard, params, output_url, rejects_url) -> dict"
    params: dict[str, Any]
    shards: list[dict[str, Any]]  # JSON-able task inputs, each with an int "shard"
    fingerprint: Fingerprint
    location: StepLocation = field(init=False)
    root: str = ""
    warnings: tuple[str, ...] = ()  # found while planning (e.g. an input glob that matches nothing)
    inputs: dict[str, Any] | None = None  # what the step reads, for the summary (e.g. files by format)
    checks: str | None = None  # "package.module:function(totals) -> [warning]", run on the step's totals
    name: str = ""  # the pipeline stage's name (default: the kind); storage and cache keys use the kind
    secrets: tuple[str, ...] = ()  # Prefect Secret block names its tasks load (fineflow.secrets); never values
    # ("package.module:function", argument) calls that load what its shards may need (a word
    # splitter, a model): made once, before a LocalCluster forks its workers, so they share the result
    warm: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "location", StepLocation(self.root, self.stage, self.step, self.fingerprint.value))
        if not self.name:
            object.__setattr__(self, "name", self.stage)

    def cache_key(self, shard: int) -> str:
        return f"{self.stage}/{self.step}/{self.fingerprint.value}/{shard:05d}"

    def task_name(self, shard: int) -> str:
        return f"{self.name}-{self.step}-{shard:05d}"


@dataclass(frozen=True)
class Source:
    """One document input of a stage: the documents (or rejects) of another stage's document step,
    known at planning time (fingerprint, folder, shard count) before anything runs."""

    stage: str  # the producing stage's name (summary, report), or a folder given to a deployment
    fingerprint: str
    folder: str  # its data/ or rejects/ folder
    shards: int
    rejects: bool = False
    reference: bool = False  # read besides the stage's inputs (StageConfig.references), not one of them

    @property
    def key(self) -> str:
        """What a reading step's fingerprint chains on."""
        return f"{self.fingerprint}:rejects" if self.rejects else self.fingerprint

    def shard_urls(self) -> list[str]:
        return [storage.join(self.folder, shard_name(n)) for n in range(self.shards)]


def _ref_name(source: Source) -> str:
    return source.stage + (".rejects" if source.rejects else "")


@dataclass(frozen=True)
class StageInputs:
    """What a document-reading stage reads: one source, or the union of several (a fan-in); and the
    documents of stages it names besides (``references``, by stage name), e.g. training examples."""

    sources: tuple[Source, ...]
    references: tuple[Source, ...] = ()

    def reference(self, name: str) -> Source:
        found = next((source for source in self.references if _ref_name(source) == name), None)
        if found is None:
            raise KeyError(f"stage {name} is not among the stages this stage references")
        return found

    @property
    def fingerprint(self) -> str | list[str]:
        keys = [source.key for source in self.sources]
        return keys[0] if len(keys) == 1 else keys

    def shards(self) -> list[dict[str, Any]]:
        """One task input per upstream shard, numbered across the sources in their order; in a
        fan-in each names one shard of every non-empty source, to conform it to their union."""
        union = [source.shard_urls()[0] for source in self.sources if source.shards] if len(self.sources) > 1 else []
        urls = [url for source in self.sources for url in source.shard_urls()]
        return [{"shard": n, "input": url, **({"union": union} if union else {})} for n, url in enumerate(urls)]

    def describe(self) -> list[dict[str, Any]]:
        """For the summary and the report: which stages' outputs were read."""
        return [{"stage": s.stage, "rejects": s.rejects, "folder": s.folder, "shards": s.shards} for s in self.sources]


# A stage that rewrites ``text`` (fineflow.registry.StageKind.rewrites_text) reads its inputs without
# the columns other stages derived from the text: its shards name their patterns under this key
# (fineflow.documents.read_input drops them).
STALE_KEY = "drop_columns"


@dataclass(frozen=True)
class PlanContext:
    """What a stage's planner gets besides its config: where it writes, its name, what it reads."""

    root: str
    name: str
    kind: str
    inputs: StageInputs | None = None
    # Text-derived column patterns its steps drop from what they read: the stage rewrites ``text``
    # (fineflow.registry.StageKind.rewrites_text; fineflow.documents.read_input drops them)
    stale_columns: tuple[str, ...] = ()

    def step(
        self,
        module: ModuleType,
        function: str,
        *,
        step: str,
        params: dict[str, Any],
        chained: dict[str, Any],
        shards: list[dict[str, Any]],
        resources: dict[str, str] | None = None,
        fingerprint_params: dict[str, Any] | None = None,
        **extra: Any,
    ) -> StepPlan:
        """A step of this stage: its fingerprint from the module's ``STEP_VERSION`` and
        ``LIBRARIES``, the parameters (or ``fingerprint_params`` where ``params`` hold storage
        URLs, which must not enter a fingerprint), what it chains on (``chained``: upstream
        fingerprints) and resource hashes; its function ``module:function``. In a stage that
        rewrites the text, every shard reading documents (``input``) names the stale columns."""
        if self.stale_columns and any("input" in shard for shard in shards):  # steps reading no documents: unchanged
            chained = {**chained, "stale_columns": list(self.stale_columns)}
            shards = [{**shard, STALE_KEY: list(self.stale_columns)} if "input" in shard else shard for shard in shards]
        fingerprint = step_fingerprint(
            stage=self.kind,
            step=step,
            step_version=module.STEP_VERSION,
            params=params if fingerprint_params is None else fingerprint_params,
            inputs=chained,
            libraries=tuple(getattr(module, "LIBRARIES", ())),
            resources=resources,
        )
        return StepPlan(
            stage=self.kind, step=step, function=f"{module.__name__}:{function}", params=params, shards=shards,
            fingerprint=fingerprint, root=self.root, name=self.name, **extra,
        )


def resolve_function(spec: str) -> Callable[..., dict]:
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def run_shard(function: str, shard: dict, params: dict, location: StepLocation) -> dict:
    """Run a step's pure shard function; the single entry point for every shard task. Its stats
    get what the task cost (``TaskUsage``): what the cost planner (``fineflow.cost_planner``) fits."""
    faults.maybe_fire(f"{location.stage}-{location.step}-{shard['shard']:05d}")
    usage = TaskUsage()
    result = resolve_function(function)(
        shard, params, location.shard_url(shard["shard"]), location.rejects_url(shard["shard"])
    )
    result["shard"] = shard["shard"]
    result["stats"] = {**(result.get("stats") or {}), **usage.finish(shard, result)}
    location.write_receipt(result)  # after its files: the shard is committed
    return result


def _status_mb(field: str, pid: int | str = "self") -> float | None:
    """A memory figure of /proc/PID/status (Linux: VmRSS, VmHWM) in MB; None elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Start this process's peak-RSS mark (VmHWM) afresh (Linux >= 4.0), so that it measures one task."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _children() -> dict[int, psutil.Process]:
    try:
        return {child.pid: child for child in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return {}


def _cpu_of(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


class TaskUsage:
    """What one shard task cost, recorded in its stats by ``run_shard``:

    - ``cpu_seconds``: CPU time (user + system, not wall) of the worker process and of its child
      processes (e.g. crawl's extraction subprocess), over the task. The process's CPU: where a
      worker runs several tasks at once in threads, each is charged the others' CPU too.
    - ``wall_seconds``: the task's wall-clock time.
    - ``peak_rss_mb``: peak resident memory while it ran: the process's (its mark restarted at
      the task's start, where Linux allows), plus its child processes' peaks.
    - ``start_rss_mb``: the process's resident memory when it started (what the task itself
      added is the difference: a reduction's growth with its input).
    - ``bytes_written``: its committed files (documents, rejects, artifacts).
    - ``bytes_read``: the raw bytes of a byte-range shard (``start``/``end``: a crawl file's part);
      a cost planner scales a whole run by these.
    """

    def __init__(self) -> None:
        self.children = {pid: _cpu_of(child) for pid, child in _children().items()}
        self.reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = time.process_time()
        self.wall = time.perf_counter()
        self.start_rss = _status_mb("VmRSS") or 0.0
        self.fresh_peak = _reset_peak_rss()

    def finish(self, shard: dict, result: dict) -> dict[str, Any]:
        cpu = time.process_time() - self.cpu
        live = _children()
        cpu += sum(_cpu_of(child) - self.children.get(pid, 0.0) for pid, child in live.items())
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        # children that ended (and were waited for) during the task, less what they had used before it
        cpu += (reaped.ru_utime + reaped.ru_stime) - (self.reaped.ru_utime + self.reaped.ru_stime)
        cpu -= sum(used for pid, used in self.children.items() if pid not in live)
        own_peak = _status_mb("VmHWM") if self.fresh_peak else None
        if own_peak is None:  # no per-task mark: the process's peak so far (an upper bound)
            own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak = own_peak + sum(_status_mb("VmHWM", pid) or 0.0 for pid in live)
        files = [result.get("output"), result.get("rejects"), *(result.get("artifacts") or [])]
        usage = {
            "cpu_seconds": round(max(cpu, 0.0), 3),
            "wall_seconds": round(time.perf_counter() - self.wall, 3),
            "peak_rss_mb": round(peak, 1),
            "start_rss_mb": round(self.start_rss, 1),
            "bytes_written": sum(int(info.get("bytes") or 0) for info in files if info),
        }
        if isinstance(shard.get("start"), int) and isinstance(shard.get("end"), int):
            usage["bytes_read"] = shard["end"] - shard["start"]
        return usage


def explain(plan: StepPlan) -> dict[str, Any]:
    """What a run would do for this step, and why (used by ``fineflow run --dry-run``)."""
    committed = plan.location.intact_shards()
    shard_ids = [s["shard"] for s in plan.shards]
    done = [s for s in shard_ids if s in committed]
    manifest = read_manifest(plan.location.folder)
    if manifest is not None and len(done) == len(shard_ids):
        reason = "cached: committed output with this fingerprint exists"
    elif manifest is not None:
        reason = f"repair: {len(shard_ids) - len(done)} committed shard(s) are missing or no longer match the manifest"
    else:
        latest = read_latest(plan.location, plan.name)
        if latest is None:
            reason = "recompute: this step never ran in this storage"
        elif latest["fingerprint"] == plan.fingerprint.value:
            reason = "resume: the step started with this fingerprint but did not finish"
        else:
            changed = plan.fingerprint.changed_components(latest["components"])
            reason = "recompute: changed " + ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
    return {
        "stage": plan.name,
        "kind": plan.stage,
        "step": plan.step,
        "fingerprint": plan.fingerprint.value,
        "tasks": len(shard_ids),
        "cached": len(done),
        "recompute": len(shard_ids) - len(done),
        "reason": reason,
        "output": plan.location.data_folder,
    }
