"""A release folder from a run: shards, card, pipeline and report, written through fineflow.storage.

Order of writes: the marker ``fineflow-export.json`` first (the folder is an export from then on,
even if this one is interrupted), then the shards, ``pipeline.yaml``, ``report.html``, the card,
the marker again with every file's size and hash, and last the removal of what a previous export
left that this one did not write (a shard of an export that had more of them, a config that is
gone). A folder that holds anything but no marker is not ours, and is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import fineflow
from fineflow import storage
from fineflow.export import card
from fineflow.export.columns import TOKEN_PREFIX, Column, project, release_schema, select, token_column
from fineflow.export.options import NO_CONFIGS, ExportOptions
from fineflow.export.shards import ConfigPlan, WrittenFile, config_counts, plan_configs, write_shards
from fineflow.export.source import ExportError, Source, resolve, run_file

MARKER = "fineflow-export.json"
CARD = "README.md"
PIPELINE = "pipeline.yaml"
REPORT = "report.html"
DATA = "data"


@dataclass
class Release:
    url: str
    source: Source
    configs: list[ConfigPlan]
    files: list[WrittenFile]
    up_to_date: bool = False  # the folder already held this export: nothing was written

    @property
    def rows(self) -> int:
        return sum(plan.rows for plan in self.configs)


def release_url(options: ExportOptions, root: str) -> str:
    """A pipeline's ``export.to``: a relative path is inside its storage root."""
    to = options.to
    if "://" in to or to.startswith(("/", "~")):
        return storage.normalize(to)
    return storage.join(root, *[part for part in to.split("/") if part not in ("", ".")])


def check_folder(folder: str) -> None:
    """Raise ``ExportError`` if ``folder`` holds anything but an earlier export."""
    _previous(folder)


def export_after_run(options: ExportOptions, run_folder: str, root: str) -> Release:
    """A pipeline's ``export:`` block, once its run has finished (the run folder has its summary)."""
    return export_release(run_folder, options.model_copy(update={"to": release_url(options, root)}), root)


def _previous(folder: str) -> dict | None:
    """The marker of an earlier export to ``folder``; an occupied folder without one is refused."""
    names = storage.list_names(folder)
    if not names:
        return None
    if MARKER not in names:
        shown = ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else "")
        raise ExportError(f"{folder} holds files that no fineflow export wrote ({shown}): export to a new or empty folder")
    try:
        return json.loads(storage.read_bytes(storage.join(folder, MARKER)))
    except ValueError:
        raise ExportError(f"{storage.join(folder, MARKER)} is damaged (not JSON): remove the folder, then export again") from None


def _identity(source: Source, options: ExportOptions, columns: list[Column]) -> dict:
    """What decides an export's documents: the same identity, the same files (a cached re-run of
    the pipeline is another run with the same documents: its export is left as it is)."""
    return {
        "fineflow": fineflow.__version__,
        "source": source.data_folder,
        "fingerprint": source.fingerprint,
        "files": [entry.sha256 for entry in source.files],
        "columns": [column.name for column in columns],
        "options": options.model_dump(mode="json", exclude={"to"}),
    }


def _still_there(folder: str, marker: dict) -> bool:
    """Every file the marker lists, at its size (one listing per folder)."""
    listings: dict[str, dict] = {}
    for entry in marker.get("files") or []:
        parent, _, name = entry["path"].rpartition("/")
        if parent not in listings:
            listings[parent] = storage.list_entries(storage.join(folder, *parent.split("/")) if parent else folder)
        if (listings[parent].get(name) or {}).get("size") != entry["bytes"]:
            return False
    return bool(marker.get("files"))


def _write(folder: str, path: str, data: bytes) -> WrittenFile:
    storage.write_bytes(storage.join(folder, *path.split("/")), data)
    return WrittenFile(path, 0, len(data), hashlib.sha256(data).hexdigest())


def _remove_stale(folder: str, kept: set[str]) -> list[str]:
    """Remove the files under data/ that this export did not write (an earlier export's)."""
    removed = []
    data = storage.join(folder, DATA)
    for config in sorted(storage.list_names(data)):
        names = storage.list_names(storage.join(data, config))
        for name in sorted(names):
            path = f"{DATA}/{config}/{name}"
            if path not in kept:
                storage.remove(storage.join(data, config, name), recursive=True)
                removed.append(path)
        if names and all(f"{DATA}/{config}/{name}" not in kept for name in names):
            storage.remove(storage.join(data, config), recursive=True)  # (a local folder stays behind otherwise)
    return removed


def _languages(source: Source, plans: list[ConfigPlan], config_by: str | None) -> list[str]:
    if config_by == "language":
        return [plan.name for plan in plans]
    return sorted((source.stage_summary or {}).get("languages") or {})


def export_release(target: str, options: ExportOptions, root: str) -> Release:
    """Export ``target`` (a run id, run folder, stage name or step folder; see ``source.resolve``) to ``options.to``."""
    folder = storage.normalize(options.to)
    source = resolve(target, storage.normalize(root), options.stage)
    previous = _previous(folder)
    try:
        columns = select(source.schema, options.columns)
    except ValueError as error:
        raise ExportError(str(error)) from None
    identity = _identity(source, options, columns)
    config_by = None if options.config_by == NO_CONFIGS else options.config_by
    if previous and previous.get("identity") == identity and previous.get("complete") and _still_there(folder, previous):
        plans = [ConfigPlan(**plan) for plan in previous["configs"]]
        return Release(folder, source, plans, [WrittenFile(**entry) for entry in previous["files"]], up_to_date=True)

    values = config_counts(source, config_by)
    plans = plan_configs(source, values, options.shard_bytes, options.shard_rows)
    schema = release_schema(columns)
    marker = {"fineflow_export": 1, "identity": identity, "complete": False, "files": (previous or {}).get("files", [])}
    _write(folder, MARKER, json.dumps(marker, indent=1).encode())

    tokens = token_column(source.schema) if "token_count" in schema.names else None
    files, token_sums = write_shards(source, config_by, plans, schema, lambda table: project(table, columns, schema), folder,
                                     count="token_count" if tokens else None)
    pipeline = run_file(source, "config.yaml")
    if pipeline is not None:
        files.append(_write(folder, PIPELINE, pipeline))
    report = run_file(source, REPORT)
    if report is None and source.summary is not None:
        from fineflow.report import build_report

        report = build_report(source.summary).encode()
    if report is not None:
        files.append(_write(folder, REPORT, report))
    text = card.render(
        source, plans, files, columns, languages=_languages(source, plans, config_by), license=options.license,
        pretty_name=options.pretty_name or (source.summary or {}).get("pipeline") or source.stage, config_by=config_by,
        tokens=token_sums, token_label=tokens[len(TOKEN_PREFIX):] if tokens else None, url=folder,
    )
    files.append(_write(folder, CARD, text.encode()))
    marker = {
        "fineflow_export": 1, "identity": identity, "complete": True,
        "configs": [vars(plan) for plan in plans], "files": [vars(file) for file in files],
    }
    _write(folder, MARKER, json.dumps(marker, indent=1).encode())
    written = {file.path for file in files}
    _remove_stale(folder, written)
    for entry in (previous or {}).get("files") or []:  # e.g. a report.html the new source has not
        if entry["path"] not in written and "/" not in entry["path"]:
            storage.remove(storage.join(folder, entry["path"]))
    return Release(folder, source, plans, files)

