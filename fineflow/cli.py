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
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fineflow.config import ConfigError, load_config

app = typer.Typer(help="fineflow: turn web crawls into pretraining corpora.", no_args_is_help=True, add_completion=False)
server_app = typer.Typer(help="The local Prefect server fineflow starts when no PREFECT_API_URL is set.", no_args_is_help=True)
app.add_typer(server_app, name="server")
stack_app = typer.Typer(
    help="The local stack: Prefect server, SeaweedFS S3, Dask scheduler and workers, Prefect worker.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
console = Console()
err = Console(stderr=True)


def _load(pipeline: Path, storage: str | None, dask_address: str | None, credentials_block: str | None):
    try:
        return load_config(
            pipeline, storage_override=storage, dask_address=dask_address, credentials_block=credentials_block
        )
    except ConfigError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


def _connect_api() -> tuple[str, bool]:
    """The Prefect API to use (started if needed), exported before Prefect is imported."""
    from fineflow.server import ensure_api

    api_url, started = ensure_api()
    os.environ["PREFECT_API_URL"] = api_url
    return api_url, started


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


def _dry_run(config) -> None:
    from fineflow.planning import plan_pipeline
    from fineflow.steps import explain

    table = Table(title=f"{config.name}: dry run against {config.storage}")
    for column in ("stage", "step", "fingerprint", "tasks", "cached", "recompute", "why"):
        table.add_column(column, no_wrap=column == "fingerprint")
    try:
        plans = plan_pipeline(config)
    except (ValueError, FileNotFoundError) as error:  # e.g. a language config folder without configs
        err.print(f"[red]cannot plan {config.name}: {error}[/red]")
        raise typer.Exit(2) from None
    for plan in plans:
        info = explain(plan)
        table.add_row(
            info["stage"], info["step"], info["fingerprint"], str(info["tasks"]), str(info["cached"]),
            str(info["recompute"]), info["reason"],
        )
    console.print(table)


def _summary_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"run {result['run_id']} ({result['seconds']} s)")
    for column in ("stage", "docs in", "docs out", "tasks", "cached", "seconds", "output"):
        table.add_column(column, overflow="fold")
    for s in result["stages"]:
        table.add_row(s["name"], str(s["docs_in"]), str(s["docs_out"]), str(s["shards"]), str(s["cached_shards"]), str(s["seconds"]), s["output"])
    return table


def _drop_table(stage: dict[str, Any]) -> Table:
    table = Table(title=f"{stage['name']}: dropped documents by reason (rejects: {stage.get('rejects')})")
    table.add_column("reason")
    table.add_column("documents", justify="right")
    for reason, count in sorted(stage["drop_reasons"].items(), key=lambda item: -item[1]):
        table.add_row(reason, str(count))
    return table


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="pipeline YAML")],
    storage: Annotated[Optional[str], typer.Option(help="storage root URL (local path or s3://bucket/prefix)")] = None,
    dask_address: Annotated[
        Optional[str], typer.Option(help="existing Dask scheduler, e.g. tcp://host:8786", envvar="FINEFLOW_DASK_ADDRESS")
    ] = None,
    summary_json: Annotated[Optional[Path], typer.Option(help="write the run summary here")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be cached or recomputed, and why")] = False,
    from_stage: Annotated[Optional[str], typer.Option(help="recompute this stage and those after it")] = None,
    credentials_block: Annotated[
        Optional[str], typer.Option(help="prefect-aws AwsCredentials block for s3:// (default: AWS_* environment)")
    ] = None,
) -> None:
    """Run a pipeline end to end on Prefect + Dask."""
    config = _load(pipeline, storage, dask_address, credentials_block)
    if from_stage and from_stage not in [s.stage for s in config.stages]:
        err.print(f"[red]--from-stage {from_stage!r} is not a stage of {pipeline}[/red]")
        raise typer.Exit(2)
    if dry_run and not config.storage_credentials:
        _dry_run(config)  # needs no Prefect API
        return

    api_url, started = _connect_api()
    if dry_run:
        _use_credentials(config.storage_credentials)
        _dry_run(config)
        return
    ui = api_url.removesuffix("/api")
    err.print(f"Prefect API {api_url} ({'started now' if started else 'running'}); UI: [bold]{ui}[/bold]")

    from fineflow.flows import progress
    from fineflow.flows.pipeline import pipeline_flow

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the in-process scheduler is chatty

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        bars: dict[tuple[str, str], Any] = {}

        def on_event(event: str, data: dict) -> None:
            if event == "step_started":
                bars[(data["stage"], data["step"])] = bar.add_task(f"{data['stage']}/{data['step']}", total=data["total"])
            elif event == "shard_done":
                bar.update(bars[(data["stage"], data["step"])], completed=data["done"])
            elif event == "cluster" and data.get("dashboard"):
                bar.console.print(f"Dask dashboard: {data['dashboard']}")

        unsubscribe = progress.subscribe(on_event)
        try:
            state = pipeline_flow(config=config.model_dump(mode="json"), from_stage=from_stage, return_state=True)
        finally:
            unsubscribe()
    if not state.is_completed():
        err.print(f"[red]run failed: {state.message}[/red]")
        err.print(f"see the flow run in the Prefect UI: {ui}/runs")
        raise typer.Exit(1)
    result = state.result()
    console.print(_summary_table(result))
    for stage in result["stages"]:
        if stage.get("drop_reasons"):
            console.print(_drop_table(stage))
    if result.get("report"):
        console.print(f"HTML report (charts, opens offline): {result['report']}", markup=False)
    if summary_json:
        summary = {
            "run_id": result["run_id"],
            "report": result.get("report"),
            "stages": [
                {k: v for k, v in s.items() if k != "steps"}
                | {"steps": [{k: step[k] for k in ("step", "fingerprint", "output", "shards", "cached_shards", "docs_in", "docs_out")} for step in s["steps"]]}
                for s in result["stages"]
            ],
        }
        summary_json.write_text(json.dumps(summary, indent=2))
        err.print(f"summary written to {summary_json}")


_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|>=|<=|>|<)\s*(.+?)\s*$")


def _where_expression(clause: str):
    import polars as pl

    match = _WHERE.match(clause)
    if not match:
        raise typer.BadParameter(f"{clause!r}: expected COLUMN OP VALUE, e.g. language_score>=0.9")
    column, op, raw = match.groups()
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw.strip("'\"")
    col = pl.col(column)
    return {"==": col == value, "!=": col != value, ">=": col >= value, "<=": col <= value, ">": col > value, "<": col < value}[op]


@app.command()
def inspect(
    url: Annotated[str, typer.Argument(help="a step output folder (with _manifest.json), its rejects/ folder, or parquet files")],
    n: Annotated[int, typer.Option("-n", help="documents to show")] = 5,
    language: Annotated[Optional[str], typer.Option(help="only this language")] = None,
    where: Annotated[Optional[list[str]], typer.Option(help="COLUMN OP VALUE, e.g. 'language_score>=0.9' (repeatable)")] = None,
    rejects: Annotated[bool, typer.Option("--rejects", help="show the folder's rejected documents")] = False,
    credentials_block: CredentialsBlock = None,
) -> None:
    """Print a few documents and column statistics of a stage output."""
    import polars as pl

    _storage_credentials(credentials_block)

    from fineflow import storage
    from fineflow.manifest import committed_files, read_manifest

    if read_manifest(url) is not None or url.rstrip("/").endswith("/rejects"):
        files = committed_files(url, rejects=rejects)
    else:
        files = storage.expand(url)
    if not files:
        err.print(f"[red]{url}: no committed parquet files[/red]")
        raise typer.Exit(1)
    frame = pl.concat([pl.read_parquet(io.BytesIO(storage.read_bytes(f))) for f in files], how="diagonal_relaxed")
    if language:
        frame = frame.filter(pl.col("language") == language)
    for clause in where or []:
        frame = frame.filter(_where_expression(clause))
    console.print(f"[bold]{frame.height}[/bold] documents in {len(files)} file(s)")
    if "language" in frame.columns and frame.height:
        counts = frame["language"].value_counts().sort("count", descending=True)
        console.print("languages: " + ", ".join(f"{r['language']}={r['count']}" for r in counts.head(20).to_dicts()))
    if "drop_reason" in frame.columns and frame.height:
        counts = frame["drop_reason"].value_counts().sort("count", descending=True)
        console.print("drop reasons: " + ", ".join(f"{r['drop_reason']}={r['count']}" for r in counts.to_dicts()))
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
            stats.add_row(column, f"{series.min():.4g}", f"{series.mean():.4g}", f"{series.max():.4g}", str(series.null_count()))
        console.print(stats)
    for row in frame.head(n).to_dicts():
        text = (row.get("text") or "").replace("\n", " ")
        console.rule(f"{row.get('id')} [{row.get('language')} {row.get('language_score') or 0:.2f}]")
        console.print(f"{row.get('url')}  {row.get('drop_reason') or ''}")
        console.print(text[:400] + ("…" if len(text) > 400 else ""), markup=False)


@app.command()
def gc(
    storage: Annotated[str, typer.Option(help="storage root to clean")] = "./fineflow-data",
    keep_last: Annotated[int, typer.Option(help="keep what the last N runs (by start time) use", min=0)] = 3,
    keep_run: Annotated[Optional[list[str]], typer.Option(help="also keep what this run uses (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be removed and its bytes per stage")] = False,
    credentials_block: CredentialsBlock = None,
) -> None:
    """Remove step outputs no kept run uses, with their Prefect cache records, and old run records."""
    _storage_credentials(credentials_block)
    from fineflow import gc as collector

    if keep_last == 0 and not keep_run:
        err.print("[red]--keep-last 0 without --keep-run would remove everything; name a run to keep[/red]")
        raise typer.Exit(2)
    try:
        plan = collector.plan_gc(storage, keep_last=keep_last, keep_runs=tuple(keep_run or ()))
    except ValueError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    for note in plan.notes:
        err.print(f"[yellow]{note}[/yellow]")
    table = Table(title=f"gc of {plan.root}: {'would remove' if dry_run else 'removing'}")
    for column in ("stage", "step folders", "bytes"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    counts: dict[str, int] = {}
    for step in plan.removed_steps:
        counts[step.stage] = counts.get(step.stage, 0) + 1
    for stage, size in plan.bytes_by_stage.items():
        table.add_row(stage, str(counts.get(stage, "-")), f"{size:,}")
    table.add_row("total", str(len(plan.removed_steps)), f"{sum(plan.bytes_by_stage.values()):,}")
    console.print(table)
    console.print(
        f"runs kept: {', '.join(r.run_id for r in plan.kept_runs) or 'none'}; "
        f"runs removed: {len(plan.removed_runs)}; step folders kept: {len(plan.kept_steps)}"
    )
    if dry_run:
        for step in plan.removed_steps:
            console.print(f"  would remove {step.url}", markup=False)
        return
    try:
        collector.execute(plan)
    except collector.RunStarted as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"removed {len(plan.removed_steps)} step folder(s) and {len(plan.removed_runs)} run record(s)")


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
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"report written to {url}")
    if out:
        out.write_bytes(store.read_bytes(url))
        console.print(f"copy written to {out}")


@server_app.command("start")
def server_start() -> None:
    """Start (or find) the local Prefect server and print its address."""
    from fineflow.server import start_server

    info = start_server()
    console.print(f"Prefect UI {info.url}  (export PREFECT_API_URL={info.api_url})")


@server_app.command("status")
def server_status() -> None:
    from fineflow.server import running_server, state_dir

    info = running_server()
    if info is None:
        console.print(f"no fineflow Prefect server running (state folder {state_dir()})")
        raise typer.Exit(1)
    console.print(f"Prefect UI {info.url}  pid {info.pid}  state folder {state_dir()}")


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
            err.print(f"[red]{error}[/red]")
            raise typer.Exit(1) from None
    console.print(_stack_table(report))
    console.print(f"state folder {stack.folder}; use it from a shell with: [bold]eval \"$(fineflow stack env)\"[/bold]")


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
        err.print("[red]the stack is not running: fineflow stack up[/red]")
        raise typer.Exit(1)
    typer.echo(export_lines(environment))


if __name__ == "__main__":
    app()
