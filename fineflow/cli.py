"""The ``fineflow`` command line (typer + rich).

Prefect is imported only after the API address is settled, because Prefect reads its settings
when it is first imported.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from fineflow.config import ConfigError, load_config

app = typer.Typer(help="fineflow: turn web crawls into pretraining corpora.", no_args_is_help=True, add_completion=False)
server_app = typer.Typer(help="The local Prefect server fineflow starts when no PREFECT_API_URL is set.", no_args_is_help=True)
app.add_typer(server_app, name="server")
stack_app = typer.Typer(
    help="The local stack: Prefect server, SeaweedFS S3, Dask scheduler and workers, Prefect worker.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
cache_app = typer.Typer(
    help="Response caches under <storage>/_cache/ (LLM answers, translations): list and drop namespaces.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


def _console(stderr: bool = False) -> Console:
    """A console as wide as its terminal, or 200 columns when output goes to a file or a pipe
    (rich's 80 would wrap the tables' paths) unless COLUMNS says otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=200 if piped else None)


console = _console()
err = _console(stderr=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` literally (paths may hold ``[...]``) in red, and exit."""
    err.print(Text(str(message), style="red"), soft_wrap=True)
    raise typer.Exit(code)


def _warn(message: str) -> None:
    err.print(Text(str(message), style="yellow"), soft_wrap=True)


def _load(pipeline: Path, storage: str | None, dask_address: str | None, credentials_block: str | None):
    try:
        return load_config(
            pipeline, storage_override=storage, dask_address=dask_address, credentials_block=credentials_block
        )
    except ConfigError as error:
        _fail(str(error))


def _connect_api() -> tuple[str, bool]:
    """The Prefect API to use (started if needed), exported before Prefect is imported."""
    from fineflow.server import ensure_api

    api_url, started = ensure_api()
    os.environ["PREFECT_API_URL"] = api_url
    _show_dead_runs(api_url)  # a just-started server still holds the runs of its last life
    return api_url, started


def _show_dead_runs(api_url: str) -> None:
    """Runs of this API whose fineflow process died are marked Crashed (fineflow.flows.liveness)."""
    from fineflow.flows.liveness import mark_dead_runs, registry

    if not any(registry().glob("*.json")):
        return  # nothing registered: no need to ask the API
    try:
        marked = mark_dead_runs(api_url)
    except Exception as error:  # noqa: BLE001 (never block a command on this housekeeping)
        _warn(f"could not check for runs whose process died: {error}")
        return
    for run_id in marked:
        _warn(f"flow run {run_id} was still Running although its fineflow process is gone: marked Crashed")


# S3 keys from a Prefect block for the commands that read storage themselves
CredentialsBlock = Annotated[Optional[str], typer.Option(help="prefect-aws AwsCredentials block for s3://")]


def _storage_credentials(block: str | None) -> None:
    """Load the block from the Prefect API (started if needed) and use it for s3:// access."""
    if block:
        _connect_api()
        _use_credentials(block)


def _use_credentials(block: str | None) -> None:
    if block:
        from fineflow.flows.credentials import apply_credentials

        apply_credentials(block)


def _dry_run(config, from_stage: str | None = None) -> None:
    from fineflow.dag import descendants
    from fineflow.planning import plan_pipeline
    from fineflow.steps import explain

    table = Table(title=Text(f"{config.name}: dry run against {config.storage}"))
    for column in ("stage", "step", "fingerprint", "tasks", "cached", "recompute", "why"):
        table.add_column(column, no_wrap=column == "fingerprint")
    try:
        planned = plan_pipeline(config)
        infos = {node.name: [explain(plan) for plan in plans] for node, plans in planned}
    except (ValueError, OSError) as error:  # e.g. a language config folder without configs
        _fail(f"cannot plan {config.name}: {error}")
    forced = descendants([node for node, _ in planned], from_stage) if from_stage else set()
    dag = Table(title=Text(f"{config.name}: stages (DAG order)"))
    for column in ("stage", "kind", "reads", "state", "why"):
        dag.add_column(column, overflow="fold")
    for node, _ in planned:
        steps = infos[node.name]
        pending = [info for info in steps if info["recompute"]]
        if node.name in forced:
            state, why = "recompute", f"--from-stage {from_stage}"
        elif pending:
            state, why = pending[0]["reason"].split(":", 1)[0], f"{pending[0]['step']}: {pending[0]['reason']}"
        else:
            state, why = "cached", "every step committed with its fingerprint"
        reads = ", ".join([str(ref) for ref in node.inputs] + [f"{ref} (by name)" for ref in node.references]) or "(its input files)"
        dag.add_row(Text(node.name), Text(node.config.stage), Text(reads), Text(state), Text(why))
        for info in steps:
            table.add_row(*(Text(str(info[key])) for key in ("stage", "step", "fingerprint", "tasks", "cached", "recompute", "reason")))
    console.print(dag)
    console.print(table)
    for node, plans in planned:
        _estimate_table(node, plans)
    for _, plans in planned:
        for plan in plans:
            for warning in plan.warnings:
                _warn(f"warning: {plan.name}: {warning}")


def _estimate_table(node, plans) -> None:  # noqa: ANN001
    """A stage kind's own estimate of the work a run would do (registry ``estimate``)."""
    from fineflow import registry

    kind = registry.get(node.config.stage)
    if kind.estimate is None:
        return
    try:
        rows = kind.call("estimate", node.config, plans)
    except (ValueError, OSError) as error:
        _warn(f"warning: {node.name}: cannot estimate its work: {error}")
        return
    if not rows:
        return
    table = Table(title=Text(f"{node.name}: estimated work"))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*(Text(f"{row[c]:,}" if isinstance(row.get(c), int) else str(row.get(c, ""))) for c in columns))
    console.print(table)


def _cost_table(config, sample_files: int, from_last_run: bool, workers: int) -> None:  # noqa: ANN001
    """The cost planner's estimate for the whole input (fineflow.cost_planner)."""
    from fineflow import cost_planner
    from fineflow.tasks.common.cost import total

    try:
        if from_last_run:
            found = cost_planner.from_last_run(config, workers)
        else:
            err.print(Text(f"estimate: running {config.name} on {sample_files} input file(s) here, into a scratch folder"))
            found = cost_planner.from_sample(config, sample_files, workers)
    except (ValueError, OSError) as error:
        _fail(f"cannot estimate {config.name}: {error}")
    scale = found.input_bytes / found.measured_bytes
    table = Table(title=Text(
        f"{config.name}: estimated cost of the whole input ({found.input_bytes / 1e9:,.3f} GB raw; {found.basis}: "
        f"{found.measured_bytes / 1e9:,.3f} GB, x{scale:,.1f}; wall time on {workers} task slot(s))"
    ))
    for column in ("stage", "step", "tasks", "CPU-hours", "wall hours", "peak MB per task", "GB written", "basis"):
        table.add_column(column, overflow="fold", justify="left" if column in ("stage", "step", "basis") else "right")
    for step in found.steps:
        table.add_row(Text(step.stage), Text(step.step), f"{step.tasks:,}", f"{step.cpu_hours:,.4g}", f"{step.wall_hours:,.4g}",
                      f"{step.peak_rss_mb:,.0f}", f"{step.bytes_written / 1e9:,.4g}", Text(step.basis))
    whole = total(found.steps)
    table.add_row(Text("total"), Text(""), "", f"{whole['cpu_hours']:,.4g}", f"{whole['wall_hours']:,.4g}",
                  f"{whole['peak_rss_mb']:,.0f}", f"{whole['bytes_written'] / 1e9:,.4g}",
                  Text("sum of steps (wall: one after another); memory: the largest task"))
    console.print(table)
    if found.missing:
        _warn(f"warning: no figures for {', '.join(found.missing)} (not in the {found.basis}): not in the total")


def _summary_table(result: dict[str, Any]) -> Table:
    table = Table(title=Text(f"run {result['run_id']} ({result['seconds']} s)"))
    for column in ("stage", "docs in", "docs out", "tasks", "cached", "seconds", "output"):
        table.add_column(column, overflow="fold")
    for s in result["stages"]:
        table.add_row(*(Text(str(s[key])) for key in ("name", "docs_in", "docs_out", "shards", "cached_shards", "seconds", "output")))
    return table


def _drop_table(stage: dict[str, Any]) -> Table:
    table = Table(title=Text(f"{stage['name']}: dropped documents by reason (rejects: {stage.get('rejects')})"))
    table.add_column("reason")
    table.add_column("documents", justify="right")
    for reason, count in sorted(stage["drop_reasons"].items(), key=lambda item: -item[1]):
        table.add_row(Text(reason), str(count))
    return table


def _classifier_table(stage: dict[str, Any]) -> Table:
    """Each classifier a stage trained: its held-out agreement with its labels."""
    table = Table(title=Text(f"{stage['name']}: classifiers trained in the run (held-out agreement with their labels)"))
    columns = ("trained_on", "held_out", "precision", "recall", "f1", "spearman")
    table.add_column("classifier")
    table.add_column("model")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for name, evaluation in stage["classifiers"].items():
        values = [evaluation.get(column) for column in columns]
        table.add_row(Text(name), Text(str(evaluation.get("model"))), *("-" if v is None else f"{v:g}" for v in values))
    return table


def _mix_table(stage: dict[str, Any]) -> Table:
    """A rebalance stage's cells: target vs achieved tokens, documents and epochs."""
    table = Table(title=Text(f"{stage['name']}: tokens per cell ({stage.get('token_column')}), target vs achieved"))
    columns = ("target", "achieved", "shortfall", "documents", "epochs", "max_repeats")
    table.add_column("cell")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("infeasible")
    for cell in stage["mix"]:
        table.add_row(Text(cell["cell"]), *(f"{cell.get(c):,}" if isinstance(cell.get(c), int) else f"{cell.get(c):g}"
                                            for c in columns), Text(cell.get("infeasible") or ""))
    return table


def _token_table(stage: dict[str, Any]) -> Table:
    """Tokens per language for each tokenizer a stage counted with, and UTF-8 bytes per token."""
    by_language: dict[str, dict[str, int]] = stage["tokens_by_language"]
    table = Table(title=Text(f"{stage['name']}: tokens per language (bytes per token)"))
    table.add_column("language")
    for tokenizer in by_language:
        table.add_column(tokenizer, justify="right")
    ratios = stage.get("fertility", {})
    languages = sorted({lang for counts in by_language.values() for lang in counts},
                       key=lambda lang: -max(counts.get(lang, 0) for counts in by_language.values()))
    for language in [*languages, None]:
        cells = []
        for tokenizer, counts in by_language.items():
            if language is None:
                cells.append(f"{sum(counts.values()):,}")
                continue
            ratio = ratios.get(tokenizer, {}).get(language, {}).get("bytes_per_token")
            cells.append(f"{counts.get(language, 0):,}" + (f" ({ratio:.2f})" if ratio else ""))
        table.add_row(Text(language or "total"), *cells)
    return table


def _complete_bars(bar: Progress, stage: str) -> None:
    """A finished stage's bars read N/N with their clocks stopped (a fully cached step starts at N/N but its
    clock would run on until the end of the run)."""
    for task in bar.tasks:
        if task.description.startswith(f"{stage}/") and task.total is not None:
            bar.update(task.id, completed=task.total)


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="pipeline YAML")],
    storage: Annotated[Optional[str], typer.Option(help="storage root URL (local path or s3://bucket/prefix)")] = None,
    dask_address: Annotated[
        Optional[str], typer.Option(help="existing Dask scheduler, e.g. tcp://host:8786", envvar="FINEFLOW_DASK_ADDRESS")
    ] = None,
    summary_json: Annotated[Optional[Path], typer.Option(help="write the run summary here")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be cached or recomputed, and why")] = False,
    from_stage: Annotated[Optional[str], typer.Option(help="recompute this stage (by name) and the stages that read it")] = None,
    credentials_block: Annotated[
        Optional[str], typer.Option(help="prefect-aws AwsCredentials block for s3:// (default: AWS_* environment)")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="treat warnings (empty input files, globs matching nothing, ...) as errors")
    ] = False,
    estimate: Annotated[
        bool, typer.Option("--estimate", help="with --dry-run: CPU-hours, wall time, memory and bytes per step (docs/scaling.md)")
    ] = False,
    sample_files: Annotated[
        Optional[int], typer.Option(help="--estimate from a sample run on this many input files (default 1)", min=1, max=10_000)
    ] = None,
    from_last_run: Annotated[
        bool, typer.Option("--from-last-run", help="--estimate from what the last run of each step in this storage recorded")
    ] = False,
    workers: Annotated[
        Optional[int], typer.Option(help="--estimate's wall time on this many task slots (default: the pipeline's dask)",
                                    min=1, max=10_000_000)
    ] = None,
) -> None:
    """Run a pipeline end to end on Prefect + Dask."""
    config = _load(pipeline, storage, dask_address, credentials_block)
    config.strict = config.strict or strict
    if from_stage and from_stage not in [s.label for s in config.stages]:
        _fail(f"--from-stage {from_stage!r} is not a stage of {pipeline} (stages: {', '.join(s.label for s in config.stages)})")
    if summary_json and not summary_json.resolve().parent.is_dir():
        _fail(f"--summary-json: the folder {summary_json.resolve().parent} does not exist")
    if config.storage_credentials:  # the block's keys are needed to check the storage
        api_url, started = _connect_api()
        _use_credentials(config.storage_credentials)
    if (sample_files is not None or from_last_run or workers is not None) and not estimate:
        _fail("--sample-files, --from-last-run and --workers go with --estimate")
    if estimate and not dry_run:
        _fail("--estimate goes with --dry-run")
    if sample_files is not None and from_last_run:
        _fail("--sample-files and --from-last-run are two bases for --estimate: give one")
    _preflight(config)
    if dry_run:
        _dry_run(config, from_stage)  # needs no Prefect API
        if estimate:
            slots = workers or config.dask.n_workers * config.dask.threads_per_worker
            _cost_table(config, sample_files or 1, from_last_run, slots)
        return
    _check_cluster(config)
    if not config.storage_credentials:
        api_url, started = _connect_api()
    ui = api_url.removesuffix("/api")
    err.print(Text.assemble(f"Prefect API {api_url} ({'started now' if started else 'running'}); UI: ", (ui, "bold")))

    from fineflow.flows import progress
    from fineflow.flows.pipeline import pipeline_flow

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the in-process scheduler is chatty

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
        refresh_per_second=2,  # (rich's 10 redraws a second cost the run CPU for nothing a person sees)
    ) as bar:
        bars: dict[tuple[str, str], Any] = {}
        outcomes: dict[str, dict] = {}  # each stage's status as the run reports it (for --summary-json)

        def on_event(event: str, data: dict) -> None:
            if event == "step_started":
                bars[(data["stage"], data["step"])] = bar.add_task(
                    f"{data['stage']}/{data['step']}", total=data["total"], completed=data.get("cached", 0)
                )
            elif event == "shard_done":
                bar.update(bars[(data["stage"], data["step"])], completed=data["done"])
            elif event == "cluster" and data.get("dashboard"):
                bar.console.print(Text(f"Dask dashboard: {data['dashboard']}"))
            elif event == "cluster_note":
                bar.console.print(Text(data["message"], style="yellow" if data["level"] == "WARNING" else ""))
            elif event == "stage_done":
                outcomes[data["summary"]["name"]] = _stage_record(data["summary"])
                _complete_bars(bar, data["summary"]["name"])
            elif event in ("stage_failed", "stage_not_run"):
                status = {"status": "failed", "error": data["error"]} if event == "stage_failed" else {"status": "not run"}
                outcomes[data["name"]] = {"name": data["name"], "kind": data["kind"], **status}

        unsubscribe = progress.subscribe(on_event)
        try:
            state = pipeline_flow(config=config.model_dump(mode="json"), from_stage=from_stage, return_state=True)
        finally:
            unsubscribe()
    if not state.is_completed():
        err.print(Text(f"run failed: {state.message}", style="red"))
        err.print(Text(f"see the flow run in the Prefect UI: {ui}/runs"))
        if summary_json:  # what did commit, and why the rest did not
            stages = [outcomes.get(stage.label) or {"name": stage.label, "kind": stage.stage, "status": "not run"} for stage in config.stages]
            _write_summary_json(summary_json, {
                "run_id": str(state.state_details.flow_run_id), "status": "failed", "error": state.message,
                "warnings": [f"{s['name']}: {w}" for s in stages for w in s.get("warnings", [])], "stages": stages,
            })
        raise typer.Exit(1)
    result = state.result()
    console.print(_summary_table(result))
    for stage in result["stages"]:
        if stage.get("drop_reasons"):
            console.print(_drop_table(stage))
        if stage.get("classifiers"):
            console.print(_classifier_table(stage))
        if stage.get("tokens_by_language"):
            console.print(_token_table(stage))
        if stage.get("mix"):
            console.print(_mix_table(stage))
    for warning in result.get("warnings", []):
        _warn(f"warning: {warning}")
    from fineflow.report import cautions

    for caution in cautions(result):
        console.print(Text(f"read with care: {caution}", style="yellow"), soft_wrap=True)
    for line in _where(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if summary_json:
        _write_summary_json(summary_json, {
            "run_id": result["run_id"],
            "status": "done",
            "report": result.get("report"),
            **({"export": result["export"]} if result.get("export") else {}),
            "warnings": result.get("warnings", []),
            "lost_workers": result.get("lost_workers", 0),
            "stages": [_stage_record(s) for s in result["stages"]],
        })


def _where(result: dict[str, Any]) -> list[str]:
    """Where a run's results are: token files, an export, the HTML report."""
    lines = []
    for stage in result["stages"]:
        files = stage.get("token_files")
        if files and files.get("folder"):
            lines.append(f"{stage['name']}: token files ({files.get('files', 0)} files, {files.get('tokens', 0):,} tokens): "
                         f"{files['folder']}" + (f" (data_args: {files['data_args']})" if files.get("data_args") else ""))
    export = result.get("export")
    if export:
        where = export.get("to") or export.get("folder") if isinstance(export, dict) else export
        lines.append(f"release folder (Hugging Face dataset, card README.md): {where}")
    if result.get("report"):
        lines.append(f"HTML report (charts, opens offline): {result['report']}")
    return lines


def _stage_record(stage: dict[str, Any]) -> dict[str, Any]:
    """A committed stage in the --summary-json file: its summary, each step in brief."""
    steps = [{k: step[k] for k in ("step", "fingerprint", "output", "shards", "cached_shards", "docs_in", "docs_out")} for step in stage["steps"]]
    return {k: v for k, v in stage.items() if k != "steps"} | {"status": "done", "steps": steps}


def _write_summary_json(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2))
    err.print(Text(f"summary written to {path}"))


def _preflight(config) -> None:
    """Storage, inputs and models checked before anything starts (fineflow.preflight)."""
    from fineflow.preflight import PreflightError, preflight

    try:
        preflight(config)
    except PreflightError as error:
        _fail(str(error))


def _check_cluster(config) -> None:
    """An existing Dask cluster: reachable, same code, sees every local path the run names."""
    from fineflow.flows.cluster_checks import check_cluster
    from fineflow.preflight import PreflightError

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its own connection errors: we say it in one line
    try:
        check_cluster(config.dask, config.storage, config.stages)
    except PreflightError as error:
        _fail(str(error))


_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|>=|<=|>|<)\s*(.+?)\s*$")


def _filter_where(frame, clause: str):
    """``frame`` filtered by ``COLUMN OP VALUE``; a wrong column or type is a one-line error."""
    import polars as pl

    match = _WHERE.match(clause)
    if not match:
        _fail(f"--where {clause!r}: expected COLUMN OP VALUE, e.g. language_score>=0.9")
    column, op, raw = match.groups()
    if column not in frame.columns:
        _fail(f"--where {clause!r}: no column {column!r}; the columns are {', '.join(frame.columns)}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw.strip("'\"")
    col = pl.col(column)
    expression = {"==": col == value, "!=": col != value, ">=": col >= value, "<=": col <= value, ">": col > value, "<": col < value}[op]
    try:
        return frame.filter(expression)
    except pl.exceptions.PolarsError:
        _fail(f"--where {clause!r}: cannot compare column {column!r} ({frame.schema[column]}) with {value!r}")


@app.command()
def inspect(
    url: Annotated[str, typer.Argument(help="a step output folder (with _manifest.json), its rejects/ folder, or parquet files")],
    n: Annotated[int, typer.Option("-n", help="documents to show")] = 5,
    language: Annotated[Optional[str], typer.Option(help="only this language")] = None,
    where: Annotated[Optional[list[str]], typer.Option(help="COLUMN OP VALUE, e.g. 'language_score>=0.9' (repeatable)")] = None,
    rejects: Annotated[bool, typer.Option("--rejects", help="show the folder's rejected documents")] = False,
    uncommitted: Annotated[
        bool, typer.Option("--uncommitted", help="look into a step folder that has no manifest (a failed or running step)")
    ] = False,
    credentials_block: CredentialsBlock = None,
) -> None:
    """Print a few documents and column statistics of a stage output."""
    import polars as pl

    _storage_credentials(credentials_block)

    from fineflow.manifest import DamagedFile
    from fineflow.readers import NotReadable, files_to_read

    try:
        files, notes = files_to_read(url, rejects=rejects, uncommitted=uncommitted)
    except (NotReadable, OSError) as error:
        _fail(str(error), 1)
    for note in notes:
        _warn(note)
    _show_artifacts(url)
    if not files:
        _fail(f"{url}: no committed {'rejects' if rejects else 'documents'}", 1)
    frames = []
    for entry in files:
        try:
            frames.append(pl.read_parquet(io.BytesIO(entry.read())))
        except DamagedFile as error:
            _fail(str(error), 1)
        except (pl.exceptions.PolarsError, OSError) as error:
            _fail(f"{entry.url} is not readable Parquet: {str(error).splitlines()[0] if str(error) else type(error).__name__}", 1)
    frame = pl.concat(frames, how="diagonal_relaxed")
    if language:
        frame = _filter_where(frame, f"language=={json.dumps(language)}")
    for clause in where or []:
        frame = _filter_where(frame, clause)
    console.print(Text.assemble((str(frame.height), "bold"), f" documents in {len(files)} file(s)"))
    if "language" in frame.columns and frame.height:
        counts = frame["language"].value_counts().sort("count", descending=True)
        console.print(Text("languages: " + ", ".join(f"{r['language']}={r['count']}" for r in counts.head(20).to_dicts())))
    if "drop_reason" in frame.columns and frame.height:
        counts = frame["drop_reason"].value_counts().sort("count", descending=True)
        console.print(Text("drop reasons: " + ", ".join(f"{r['drop_reason']}={r['count']}" for r in counts.to_dicts())))
    numeric = [c for c, t in frame.schema.items() if t.is_numeric()]
    if "text" in frame.columns:
        frame = frame.with_columns(pl.col("text").str.len_chars().alias("text_chars"))
        numeric.append("text_chars")
    if numeric and frame.height:
        stats = Table(title="column statistics")
        for column in ("column", "min", "mean", "max", "nulls"):
            stats.add_column(column)
        for column in numeric:
            series = frame[column]
            figures = (series.min(), series.mean(), series.max())  # None where every value is null
            stats.add_row(Text(column), *("-" if v is None else f"{v:.4g}" for v in figures), str(series.null_count()))
        console.print(stats)
    for row in frame.head(n).to_dicts():
        text = (row.get("text") or "").replace("\n", " ")
        console.rule(Text(f"{row.get('id')} [{row.get('language')} {row.get('language_score') or 0:.2f}]"))
        console.print(Text(f"{row.get('url')}  {row.get('drop_reason') or ''}"))
        console.print(text[:400] + ("…" if len(text) > 400 else ""), markup=False)


def _show_artifacts(url: str) -> None:
    """The artifacts a committed step lists (tokenizers, models, reports ...), with size and hash."""
    from fineflow.manifest import committed_artifacts, read_manifest

    try:
        if read_manifest(url) is None:
            return
        artifacts = committed_artifacts(url)
    except (OSError, ValueError):
        return  # not a step folder: nothing to list
    if not artifacts:
        return
    folder = artifacts[0].url.rsplit("/", 1)[0]
    table = Table(title=Text(f"{len(artifacts)} artifact(s) in {folder}"))
    for column in ("file", "bytes", "sha256 (manifest)", "stored file"):
        table.add_column(column, overflow="fold")
    damaged = []
    for entry in artifacts:
        difference = entry.difference()  # the manifest's figures alone would vouch for a damaged file
        name = entry.url.rsplit("/", 1)[1]
        if difference:
            damaged.append(name)
        check = Text(f"DIFFERS: {difference}", style="bold red") if difference else Text("matches")
        table.add_row(Text(name), f"{entry.bytes:,}", Text((entry.sha256 or "")[:16]), check)
    console.print(table)
    if damaged:
        _warn(f"{len(damaged)} artifact(s) differ from the manifest ({', '.join(damaged)}): "
              "a re-run of the pipeline recomputes them; `fineflow verify` checks every file")


@app.command()
def gc(
    storage: Annotated[str, typer.Option(help="storage root to clean")] = "./fineflow-data",
    keep_last: Annotated[int, typer.Option(help="keep what the last N runs (by start time) use", min=0)] = 3,
    keep_run: Annotated[Optional[list[str]], typer.Option(help="also keep what this run uses (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be removed and its bytes per stage")] = False,
    cache_older_than_days: Annotated[Optional[float], typer.Option(
        help="also remove response-cache namespaces (_cache/) not written for this many days (default: the cache is "
        "left alone; `fineflow cache` lists and drops namespaces)", min=0)] = None,
    credentials_block: CredentialsBlock = None,
) -> None:
    """Remove step outputs no kept run uses, with their Prefect cache records, and old run records."""
    _storage_credentials(credentials_block)
    from fineflow import cache_admin
    from fineflow import gc as collector

    if keep_last == 0 and not keep_run:
        _fail("--keep-last 0 without --keep-run would remove everything; name a run to keep")
    _check_root(storage)
    try:
        plan = collector.plan_gc(storage, keep_last=keep_last, keep_runs=tuple(keep_run or ()))
    except ValueError as error:
        _fail(str(error))
    for note in plan.notes:
        _warn(note)
    table = Table(title=Text(f"gc of {plan.root}: {'would remove' if dry_run else 'removing'}"))
    for column in ("stage", "step folders", "bytes"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    counts: dict[str, int] = {}
    for step in plan.removed_steps:
        counts[step.stage] = counts.get(step.stage, 0) + 1
    for stage, size in plan.bytes_by_stage.items():
        table.add_row(Text(stage), str(counts.get(stage, "-")), f"{size:,}")
    table.add_row("total", str(len(plan.removed_steps)), f"{sum(plan.bytes_by_stage.values()):,}")
    console.print(table)
    console.print(Text(
        f"runs kept: {', '.join(r.run_id for r in plan.kept_runs) or 'none'}; "
        f"runs removed: {len(plan.removed_runs)}; step folders kept: {len(plan.kept_steps)}"
    ))
    stale = ([] if cache_older_than_days is None else
             cache_admin.select(cache_admin.list_namespaces(storage), older_than_days=cache_older_than_days))
    if stale:
        console.print(Text(f"cache namespaces not written for {cache_older_than_days:g} days: {len(stale)}, "
                           f"{sum(s.bytes for s in stale):,} bytes"))
    if dry_run:
        for step in plan.removed_steps:
            console.print(f"  would remove {step.url}", markup=False)
        for space in stale:
            console.print(f"  would remove {space.url}", markup=False)
        return
    try:
        collector.execute(plan)
    except collector.RunStarted as error:
        _fail(str(error), 1)
    for space in stale:
        cache_admin.drop(space)
    console.print(f"removed {len(plan.removed_steps)} step folder(s), {len(plan.removed_runs)} run record(s) and "
                  f"{len(stale)} cache namespace(s)")


@cache_app.command("list")
def cache_list(
    storage: Annotated[str, typer.Option(help="storage root")] = "./fineflow-data",
    credentials_block: CredentialsBlock = None,
) -> None:
    """The cache namespaces, newest first: model, server, answers, bytes, age."""
    _storage_credentials(credentials_block)
    from fineflow import cache_admin

    _check_root(storage)
    spaces = cache_admin.list_namespaces(storage)
    table = Table(title=Text(f"{len(spaces)} cache namespace(s) in {storage}"))
    for column in ("family", "namespace", "model", "server", "answers", "bytes", "days"):
        table.add_column(column, overflow="fold", justify="right" if column in ("answers", "bytes", "days") else "left")
    for space in spaces:
        row = cache_admin.describe(space)
        table.add_row(*(Text(str(row[k])) for k in ("family", "namespace", "model", "server")),
                      f"{row['answers']:,}", f"{row['bytes']:,}", str(row["last_written_days_ago"]))
    console.print(table)


@cache_app.command("drop")
def cache_drop(
    namespace: Annotated[Optional[list[str]], typer.Argument(help="namespace names (or their first 6+ characters)")] = None,
    storage: Annotated[str, typer.Option(help="storage root")] = "./fineflow-data",
    model: Annotated[Optional[str], typer.Option(help="namespaces of this model name")] = None,
    server: Annotated[Optional[str], typer.Option(help="namespaces whose server identity contains this")] = None,
    older_than_days: Annotated[Optional[float], typer.Option(help="namespaces not written for this many days", min=0)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be removed")] = False,
    credentials_block: CredentialsBlock = None,
) -> None:
    """Remove cache namespaces (every criterion given must match); later runs ask those questions again."""
    _storage_credentials(credentials_block)
    from fineflow import cache_admin

    _check_root(storage)
    try:
        chosen = cache_admin.select(cache_admin.list_namespaces(storage), tuple(namespace or ()), model, server,
                                    older_than_days)
    except ValueError as error:
        _fail(str(error))
    if not chosen:
        _fail("no cache namespace matches", 1)
    for space in chosen:
        console.print(Text(f"{'would drop' if dry_run else 'dropping'} {space.family}/{space.name} "
                           f"({space.model} @ {space.server}: {space.answers:,} answers, {space.bytes:,} bytes)"))
        if not dry_run:
            cache_admin.drop(space)
    if not dry_run:
        console.print(f"dropped {len(chosen)} namespace(s)")


def _check_root(root: str) -> None:
    """A storage root that exists (a typo must not read as an empty store)."""
    from fineflow import storage as store
    from fineflow.preflight import PreflightError, check_storage_url

    try:
        check_storage_url(root, "--storage")
        exists = store.exists(root)
    except (PreflightError, OSError, ValueError) as error:
        _fail(str(error))
    if not exists:
        _fail(f"--storage: {store.normalize(root)} does not exist")


@app.command()
def verify(
    run: Annotated[Optional[str], typer.Argument(help="a run id (default: the newest run in the storage)")] = None,
    storage: Annotated[str, typer.Option(help="storage root the run wrote to")] = "./fineflow-data",
    credentials_block: CredentialsBlock = None,
) -> None:
    """Check every committed file of a run against its manifest's sha256; exit 1 if any is damaged."""
    _storage_credentials(credentials_block)
    _check_root(storage)
    from fineflow import gc as collector
    from fineflow import storage as store
    from fineflow.manifest import verify_folder

    root = store.normalize(storage)
    runs = collector.list_runs(root)
    chosen = [r for r in runs if r.run_id == run] if run else runs[:1]
    if not chosen:
        _fail(f"no run {run} in {root}" if run else f"no runs recorded in {root}", 1)
    target = chosen[0]
    try:
        folders = sorted(store.join(root, *key) for key in collector.used_by(target))
    except (ValueError, OSError) as error:  # an unfinished run is re-planned: its inputs may be gone
        _fail(f"cannot list what run {target.run_id} uses: {error}", 1)
    table = Table(title=Text(f"verify run {target.run_id} in {root}"))
    for column in ("step folder", "files", "damaged"):
        table.add_column(column, overflow="fold")
    problems: list[str] = []
    for folder in folders:
        try:
            checked, found = verify_folder(folder)
        except (OSError, ValueError) as error:
            checked, found = 0, [f"{folder}: {error}"]
        problems += found
        table.add_row(Text(folder), str(checked), str(len(found)))
    console.print(table)
    for problem in problems:
        err.print(Text(problem, style="red"))
    if problems:
        _fail(f"{len(problems)} damaged or missing file(s); a re-run of the pipeline recomputes them", 1)
    console.print(f"all {len(folders)} step folder(s) match their manifests")


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="a run id (with --storage), or a run folder <storage>/_runs/<id>")],
    storage: Annotated[str, typer.Option(help="storage root the run wrote to")] = "./fineflow-data",
    out: Annotated[Optional[Path], typer.Option(help="also write a copy here")] = None,
    credentials_block: CredentialsBlock = None,
) -> None:
    """Write a run's HTML report (charts inlined, opens offline) next to its artifacts."""
    _storage_credentials(credentials_block)
    from fineflow import storage as store
    from fineflow.report import run_folder, write_report

    folder = run if "/" in run else run_folder(store.normalize(storage), run)
    try:
        url = write_report(folder)
    except FileNotFoundError as error:
        _fail(str(error), 1)
    console.print(Text(f"report written to {url}"))
    if out:
        out.write_bytes(store.read_bytes(url))
        console.print(Text(f"copy written to {out}"))


@app.command()
def export(
    run_or_stage: Annotated[str, typer.Argument(
        help="a run id, a run folder (<storage>/_runs/<id>), a stage name of the newest run, or a step folder")],
    to: Annotated[str, typer.Option("--to", help="the release folder to write (local path or s3://); re-exports replace it")],
    storage: Annotated[str, typer.Option(help="storage root the run wrote to")] = "./fineflow-data",
    stage: Annotated[Optional[str], typer.Option(help="the run's stage to export (default: its last)")] = None,
    config_by: Annotated[str, typer.Option(help="a column (text, integer, boolean), or several comma-separated: one dataset config per value or combination ('none': one 'default' config)")] = "language",
    license: Annotated[str, typer.Option("--license", help="the card's licence, a Hub identifier (odc-by, cc-by-4.0, other ...)")] = "unknown",
    columns: Annotated[Optional[str], typer.Option(
        help="comma-separated columns to write (default: FineWeb's, then fineflow's provenance columns)")] = None,
    shard_bytes: Annotated[int, typer.Option(help="target bytes of a Parquet shard")] = 512 * 1024**2,
    shard_rows: Annotated[Optional[int], typer.Option(help="at most this many documents per shard")] = None,
    pretty_name: Annotated[Optional[str], typer.Option(help="the card's title (default: the pipeline's name)")] = None,
    credentials_block: CredentialsBlock = None,
) -> None:
    """Write a run's documents as a Hugging Face dataset folder: data/<config>/ shards and a README.md card."""
    from pydantic import ValidationError

    from fineflow.export.options import ExportOptions
    from fineflow.export.release import export_release
    from fineflow.export.source import ExportError

    try:
        options = ExportOptions(
            to=to, stage=stage, config_by=config_by, license=license, shard_bytes=shard_bytes, shard_rows=shard_rows,
            columns=[c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None,
            pretty_name=pretty_name,
        )
    except ValidationError as error:
        problem = error.errors()[0]
        _fail(f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}")
    _storage_credentials(credentials_block)
    if "/" not in run_or_stage:
        _check_root(storage)
    try:
        release = export_release(run_or_stage, options, storage)
    except (ExportError, OSError) as error:
        _fail(str(error), 1)
    _show_release(release)


def _show_release(release) -> None:  # noqa: ANN001
    table = Table(title=Text(f"release {release.url}" + (" (already up to date)" if release.up_to_date else "")))
    for column in ("config", "documents", "shards"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for plan in release.configs:
        table.add_row(Text(plan.name), f"{plan.rows:,}", str(plan.shards))
    console.print(table)
    first = release.configs[0].name
    console.print(Text(f"release folder (Hugging Face dataset, card README.md): {release.url}"))
    console.print(Text(f'load a config: datasets.load_dataset("{release.url}", "{first}", split="train")'), soft_wrap=True)


@app.command("data-args")
def data_args(
    url: Annotated[str, typer.Argument(help="a data_args.txt (path or URL): '<weight> <prefix>' lines, prefixes relative to it")],
    root: Annotated[str, typer.Option(help="where the token files beside it are mounted for training")],
    out: Annotated[Optional[Path], typer.Option(help="write the rewritten file here (default: print it)")] = None,
    credentials_block: CredentialsBlock = None,
) -> None:
    """Rewrite a Megatron data_args.txt with its relative prefixes under --root (absolute ones kept)."""
    _storage_credentials(credentials_block)
    from fineflow import storage as store

    try:
        text = store.read_bytes(url).decode("utf-8")
    except FileNotFoundError:
        _fail(f"{url} does not exist", 1)
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            _fail(f"{url} line {number}: expected '<weight> <prefix>', got {line[:80]!r}")
        weight, prefix = parts
        absolute = prefix.startswith("/") or "://" in prefix
        lines.append(f"{weight} {prefix if absolute else root.rstrip('/') + '/' + prefix}\n")
    if out:
        out.write_text("".join(lines))
        console.print(Text(f"{len(lines)} line(s) written to {out}"))
    else:
        print("".join(lines), end="")


@server_app.command("start")
def server_start() -> None:
    """Start (or find) the local Prefect server and print its address."""
    from fineflow.server import start_server

    info = start_server()
    console.print(Text(f"Prefect UI {info.url}  (export PREFECT_API_URL={info.api_url})"))


@server_app.command("status")
def server_status() -> None:
    from fineflow.server import running_server, state_dir

    info = running_server()
    if info is None:
        console.print(Text(f"no fineflow Prefect server running (state folder {state_dir()})"))
        raise typer.Exit(1)
    console.print(Text(f"Prefect UI {info.url}  pid {info.pid}  state folder {state_dir()}"))
    os.environ["PREFECT_API_URL"] = info.api_url
    _show_dead_runs(info.api_url)


@server_app.command("stop")
def server_stop() -> None:
    from fineflow.server import stop_server

    console.print("stopped" if stop_server() else "no server was running")


def _stack_table(report: dict[str, dict]) -> Table:
    table = Table(title="fineflow stack")
    for column in ("component", "state", "address"):
        table.add_column(column)
    labels = {"prefect": "Prefect server (UI)", "s3": "SeaweedFS S3", "dask": "Dask scheduler (dashboard)", "worker": "Prefect worker"}
    for name, info in report.items():
        address = info.get("url") or ""
        if name == "dask" and info.get("scheduler"):
            address = f"{info['scheduler']}  {address}"
        if name == "worker":
            address = f"pool {info['pool']}"
        if name == "s3" and address:
            address = f"{address}  bucket {info['bucket']}"
        table.add_row(labels[name], "[green]running[/green]" if info["running"] else "[red]stopped[/red]", address)
    return table


@stack_app.command("up")
def stack_up(
    dask_workers: Annotated[int, typer.Option(help="Dask worker processes")] = 2,
    threads_per_worker: Annotated[int, typer.Option(help="threads per Dask worker")] = 1,
    memory_limit: Annotated[str, typer.Option(help="memory limit per Dask worker, e.g. 4GiB")] = "auto",
) -> None:
    """Start every component that is not running (idempotent) and print their addresses."""
    from fineflow.stack import Stack, stack_dir

    stack = Stack(stack_dir())
    with err.status("starting the stack (the first start of the Prefect server takes ~20 s) ..."):
        try:
            report = stack.up(dask_workers, threads_per_worker, memory_limit)
        except (RuntimeError, FileNotFoundError) as error:
            _fail(str(error), 1)
    console.print(_stack_table(report))
    console.print(Text.assemble(f"state folder {stack.folder}; use it from a shell with: ", ('eval "$(fineflow stack env)"', "bold")))


@stack_app.command("status")
def stack_status() -> None:
    """Show each component's state and address; exit 1 if any is stopped."""
    from fineflow.stack import Stack, stack_dir

    report = Stack(stack_dir()).status()
    console.print(_stack_table(report))
    if not all(info["running"] for info in report.values()):
        raise typer.Exit(1)


@stack_app.command("down")
def stack_down(
    keep_prefect: Annotated[bool, typer.Option("--keep-prefect", help="leave the Prefect server running")] = False,
) -> None:
    """Stop every component; data (S3 objects, Prefect database) stays in the state folder."""
    from fineflow.stack import Stack, stack_dir

    stopped = Stack(stack_dir()).down(prefect=not keep_prefect)
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack_app.command("env")
def stack_env() -> None:
    """Print the stack's environment as shell export lines (PREFECT_API_URL, AWS_*, FINEFLOW_DASK_ADDRESS)."""
    from fineflow.stack import Stack, export_lines, stack_dir

    environment = Stack(stack_dir()).environment()
    if not environment:
        _fail("the stack is not running: fineflow stack up", 1)
    typer.echo(export_lines(environment))


if __name__ == "__main__":
    app()
