"""`mfpipe inspect OUT`: what an output folder holds, at a glance, in the terminal.

Tables: rows and rejects per stage; the export's items per skill (generated,
dropped by the filter, not judged, exported); then a few sample rows of
mf_skills and mf_think. Filters: `--skill` (one skill, or `caption`),
`--song` (a song_id prefix or part of the file path), `--rejected` (the
rejects of every stage and the items the filter dropped, instead of samples).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from rich.console import Console
from rich.table import Table

from . import facts as folder_facts
from .export import MANIFEST, TABLES, current_root


@dataclass
class Filters:
    skill: str | None = None
    song: str | None = None
    samples: int = 3
    width: int = 160  # characters of text shown per cell


def _short(text: Any, width: int) -> str:
    s = "" if text is None else str(text).replace("\n", " ")
    return s if len(s) <= width else s[: width - 1] + "…"


def _short_id(row_id: str) -> str:
    """<song_id>:qa:3 → 914dd6474fb9…:qa:3 (the song_id prefix is enough to find it again)."""
    sid, sep, rest = row_id.partition(":")
    return f"{sid[:12]}…{sep}{rest}" if len(sid) > 12 else row_id


def _song_mask(table: pa.Table, song: str, source: pa.ChunkedArray | None = None) -> pa.ChunkedArray:
    ids = table["song_id"].fill_null("")
    mask = pc.starts_with(ids, song)
    if source is not None:
        mask = pc.or_(mask, pc.match_substring(source.fill_null(""), song))
    return mask


def _export_rows(store, root: str, table: str, f: Filters, limit: int) -> pa.Table:
    dataset = pads.dataset(store.shards(f"{root}/{table}"), format="parquet", filesystem=store.fs)
    expr = None
    if f.skill:
        expr = pads.field("skill") == f.skill
    if f.song:
        by_song = (pc.starts_with(pads.field("song_id"), f.song)
                   | pc.match_substring(pads.field("song", "source"), f.song))
        expr = by_song if expr is None else expr & by_song
    return dataset.head(limit, filter=expr) if expr is not None else dataset.head(limit)


def stage_table(store, rejects: list[dict[str, Any]]) -> Table:
    rows = folder_facts.stage_rows(store)
    by_stage: dict[str, list[int]] = {}
    for r in rejects:
        counts = by_stage.setdefault(r["stage"], [0, 0])
        counts[0] += r["count"]
        counts[1] += r["retryable"]
    table = Table(title="stages")
    for col in ("stage", "rows", "rejects", "retryable"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage in dict.fromkeys([*rows, *by_stage]):
        rej = by_stage.get(stage, [0, 0])
        table.add_row(stage, str(rows.get(stage, 0)), str(rej[0]), str(rej[1]))
    return table


def skills_table(manifest: dict[str, Any], skill: str | None) -> Table:
    table = Table(title=f"export {manifest['version']} · filter {manifest['filter'].replace('_', ' ')} · "
                        f"think {manifest['think'].replace('_', ' ')}")
    for col in ("skill", "generated", "dropped", "not judged", "mf_skills", "mf_think"):
        table.add_column(col, justify="left" if col == "skill" else "right")
    think = manifest["tables"]["mf_think"].get("by_skill", {})
    for name, c in manifest["items"].items():
        if skill and name != skill:
            continue
        table.add_row(name, str(c["generated"]), str(c["dropped"]), str(c["unjudged"]), str(c["exported"]),
                      str(think.get(name, 0)))
    if not skill:
        table.add_row("[bold]total", *(str(sum(c[k] for c in manifest["items"].values()))
                                       for k in ("generated", "dropped", "unjudged", "exported")),
                      str(manifest["tables"]["mf_think"]["rows"]), style="bold")
    return table


def sample_table(rows: pa.Table, name: str, width: int) -> Table:
    table = Table(title=f"{name}: {rows.num_rows} sample row(s)", show_lines=True)
    if name == "mf_skills":
        cols = ("id", "skill", "question", "answer", "quality")
        for c in cols:
            table.add_column(c, overflow="fold")
        for r in rows.to_pylist():
            options = "".join(f"\n  ({'ABCDEF'[i]}) {o}" for i, o in enumerate(r["options"] or []))
            table.add_row(_short_id(r["id"]), r["skill"], _short(r["question"], width) + options,
                          _short(r["answer"], width), r["quality"]["status"])
    else:
        for c in ("id", "skill", "question", "action", "text"):
            table.add_column(c, overflow="fold")
        for r in rows.to_pylist():
            table.add_row(_short_id(r["id"]), r["skill"], _short(r["question"], width), r["action"],
                          _short(r["text"], width * 2))
    return table


def rejected_tables(store, f: Filters) -> list[Table]:
    rejects = folder_facts.reject_rows(store)
    if f.song and rejects.num_rows:
        rejects = rejects.filter(_song_mask(rejects, f.song, rejects["source"]))
    out = []
    table = Table(title=f"rejects: {rejects.num_rows} row(s)", show_lines=True)
    for col in ("stage", "error", "source", "retryable", "message"):
        table.add_column(col, overflow="fold")
    for r in rejects.slice(0, max(f.samples * 10, 20)).to_pylist():
        table.add_row(r["stage"], r["error"], _short(r["source"], 60), "yes" if r["retryable"] else "no",
                      _short(r["message"], f.width))
    out.append(table)
    if store.has_output("filter"):
        out.append(_filter_drops(store, f))
    return out


def _filter_drops(store, f: Filters) -> Table:
    """The items the quality filter dropped, with its reasons (and the text, from synthesize)."""
    judged = store.read(store.stage_dir("filter"), columns=["song_id", "source", "caption", "qa"])
    if f.song:
        judged = judged.filter(_song_mask(judged, f.song, judged["source"]))
    texts = {}
    synth = store.read(store.stage_dir("synthesize"), columns=["song_id", "caption", "qa"])
    for r in synth.to_pylist():
        texts[r["song_id"]] = r
    table = Table(title="items the filter dropped", show_lines=True)
    for col in ("song", "item", "skill", "text", "reasons"):
        table.add_column(col, overflow="fold")
    shown = 0
    for r in judged.to_pylist():
        synth_row = texts.get(r["song_id"]) or {}
        items = [("caption", "caption", r["caption"], synth_row.get("caption"))]
        qa = synth_row.get("qa") or []
        items += [(f"qa[{j['index']}]", j["skill"], j, qa[j["index"]]["question"] if j["index"] < len(qa) else None)
                  for j in r["qa"] or []]
        for item, skill, judgement, text in items:
            if judgement["keep"] or (f.skill and skill != f.skill):
                continue
            if shown < max(f.samples * 10, 20):
                table.add_row(r["song_id"][:12], item, skill, _short(text, f.width),
                              "; ".join(judgement["reasons"] or []))
            shown += 1
    table.title = f"items the filter dropped: {shown}"
    return table


def inspect(out: str, console: Console, *, skill: str | None = None, song: str | None = None,
            rejected: bool = False, samples: int = 3) -> None:
    from ..store import OutputStore

    store = OutputStore(out)
    f = Filters(skill=skill, song=song, samples=samples)
    rejects = folder_facts.reject_summary(store)
    console.print(stage_table(store, rejects))
    root = current_root(store)
    manifest = None
    if root is not None and store.fs.exists(f"{root}/{MANIFEST}"):
        with store.fs.open(f"{root}/{MANIFEST}") as fh:
            manifest = json.load(fh)
        console.print(skills_table(manifest, skill))
    if rejected:
        for table in rejected_tables(store, f):
            console.print(table)
        return
    if manifest is None:
        console.print(f"[yellow]no export in {out} yet: run `mfpipe export {out}` (or `mfpipe run --stage export`)[/]")
        return
    for name in TABLES:
        rows = _export_rows(store, root, name, f, samples)
        if rows.num_rows or not (skill or song):
            console.print(sample_table(rows, name, f.width))
        else:
            which = (f" skill={skill}" if skill else "") + (f" song={song}" if song else "")
            console.print(f"{name}: no rows match{which}")
