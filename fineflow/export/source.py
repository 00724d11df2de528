"""What an export reads: a finished run's stage (by run id, run folder or stage name) or a step folder.

A run gives the card its pipeline, funnel and drop reasons (its ``summary.json``), the pipeline
YAML and the HTML report; a bare step folder gives only its documents and fingerprint.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fineflow import storage
from fineflow.manifest import CommittedFile, DamagedFile, OldLayout, committed_entries, read_manifest, step_folder_of
from fineflow.report import load_summary


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says why, in one line."""


@dataclass
class Source:
    data_folder: str  # the step's data/ folder
    stage: str  # the stage's name in its run (or the step's kind for a bare step folder)
    files: list[CommittedFile]
    schema: pa.Schema
    fingerprint: str
    summary: dict[str, Any] | None = None  # the run's summary.json
    run_folder: str | None = None

    @property
    def stage_summary(self) -> dict[str, Any] | None:
        if self.summary is None:
            return None
        return next(s for s in self.summary["stages"] if s["name"] == self.stage)


def _runs_folder(root: str) -> str:
    return storage.join(root, "_runs")


def _newest_run(root: str) -> str | None:
    """The newest finished run's folder in ``root`` (by its summary's time)."""
    runs = storage.list_names(_runs_folder(root))
    finished = []
    for run_id in runs:
        folder = storage.join(_runs_folder(root), run_id)
        files = storage.list_files(folder)
        if "summary.json" in files:
            finished.append((files["summary.json"], folder))
    return max(finished)[1] if finished else None


def _final_stage(summary: dict, run: str) -> str:
    """The stage no other stage reads (a DAG's one sink); several sinks need ``--stage``."""
    read = {source["stage"] for stage in summary["stages"] for source in stage.get("input") or []}
    sinks = [stage["name"] for stage in summary["stages"] if stage["name"] not in read]
    if len(sinks) != 1:
        raise ExportError(f"run {run} ends in several stages ({', '.join(sinks)}): pick one with --stage")
    return sinks[0]


def resolve(target: str, root: str, stage: str | None = None) -> Source:
    """``target``: a run id (in ``root``), a run folder, a stage name of the newest run, or a step folder."""
    if "/" in target or "://" in target:
        folder = storage.normalize(target)
        if storage.exists(storage.join(folder, "summary.json")):
            return _from_run(folder, stage)
        if stage:
            raise ExportError(f"--stage {stage}: {target} is not a run folder (no summary.json)")
        return _from_step(folder, stage=None)
    run_folder = storage.join(_runs_folder(root), target)
    if storage.exists(storage.join(run_folder, "summary.json")):
        return _from_run(run_folder, stage)
    if storage.exists(storage.join(run_folder, "config.yaml")):
        raise ExportError(f"run {target} in {root} has not finished (no summary.json): nothing committed to export")
    newest = _newest_run(root)
    if newest is None:
        raise ExportError(f"no run {target!r} in {root}, and no finished run there whose stage it could be")
    names = [s["name"] for s in load_summary(newest)["stages"]]
    if target in names and not stage:
        return _from_run(newest, target)
    raise ExportError(
        f"{target!r} is neither a run in {root} nor a stage of its newest run {newest.rsplit('/', 1)[-1]} "
        f"(stages: {', '.join(names)})"
    )


def _from_run(folder: str, stage: str | None) -> Source:
    try:
        summary = load_summary(folder)
    except FileNotFoundError as error:
        raise ExportError(str(error)) from None
    run = summary.get("run_id", folder)
    names = [s["name"] for s in summary["stages"]]
    name = stage or _final_stage(summary, run)
    if name not in names:
        raise ExportError(f"run {run} has no stage {name!r} (stages: {', '.join(names)})")
    record = next(s for s in summary["stages"] if s["name"] == name)
    if not record.get("output"):
        raise ExportError(f"stage {name} of run {run} has no document output")
    source = _from_step(record["output"], name)
    source.summary, source.run_folder = summary, folder
    return source


def _from_step(folder: str, stage: str | None) -> Source:
    step = step_folder_of(folder)
    try:
        manifest = read_manifest(step)
    except OldLayout as error:
        raise ExportError(str(error)) from None
    if manifest is None:
        raise ExportError(f"{folder} is neither a finished run's folder (summary.json) nor a committed step (_manifest.json)")
    entries = committed_entries(step)
    what = f"stage {stage}" if stage else f"step {manifest['stage']}/{manifest['step']}"
    schema = _schema(entries[0]) if entries else None
    if schema is None or "text" not in schema.names:
        raise ExportError(f"{what} ({step}) has no document output: no committed file with a text column")
    files = [entry for entry in entries if entry.rows]
    if not files:
        raise ExportError(f"{what} ({step}) kept no documents: nothing to export")
    return Source(storage.join(step, "data"), stage or manifest["stage"], files, schema, manifest["fingerprint"])


def _schema(entry: CommittedFile) -> pa.Schema:
    """A committed shard's columns, from its footer alone (ranged reads on object storage)."""
    with storage.open_input(entry.url, block_size=256 * 1024) as handle:
        return pq.ParquetFile(handle).schema_arrow


def run_file(source: Source, name: str) -> bytes | None:
    """A file of the source's run folder (config.yaml, report.html), or None."""
    if source.run_folder is None:
        return None
    try:
        return storage.read_bytes(storage.join(source.run_folder, name))
    except FileNotFoundError:
        return None


def read_documents(entry: CommittedFile) -> pa.Table:
    """A committed shard, checked against its manifest's sha256 (a damaged file is never released)."""
    try:
        return pq.read_table(io.BytesIO(entry.read()))
    except DamagedFile as error:
        raise ExportError(str(error).split(";")[0] + "; `fineflow verify` lists every damaged file") from None
