"""Join the stage outputs by song_id into the MF-Skills and MF-Think corpora.

What goes in:
- MF-Skills (`mf_skills/`): every caption and QA item of `OUT/synthesize/` that
  the quality filter kept, one row each, with the song's metadata, MIR facts,
  the filter's judgement and the provenance of every stage output behind it.
- MF-Think (`mf_think/`): every chain of `OUT/think/` that was kept or rewritten.
- Songs ingest left out of the corpus are never exported: a copy of a recording
  that is not the kept one, a song that holds an evaluation clip
  (`mfpipe.screening`; the card lists the groups and contaminations).
- People's decisions (`mfpipe review`, `OUT/reviews/`) come last: a drop removes
  an item, an edit replaces its text, a keep or edit brings back an item the
  filter left out; provenance says so (`mfpipe.review.honour`).

When parts are missing (decided here, stated in the card):
- the filter never ran on this output (`OUT/filter/` is empty): the synthesize
  items are exported as they are, each row marked `quality.status =
  "unfiltered"`, and the card says so at the top (`export.allow_unfiltered:
  false` makes this an error instead);
- the filter ran but has no judgement for a song (it rejected or has not yet
  reached it), or its judgement is older than the song's synthesize row (the
  text was regenerated since): that song's items are left out and counted as
  `unjudged` — once a filter exists, nothing unjudged slips through;
- a song without a synthesize row has no items (its rejects say why);
  a song without MIR facts gets `song.mir = null`;
- think never ran: `mf_think/` holds one empty shard (the schema), the card says so;
  a think row older than its synthesize row is left out (`stale`).

A rerun replaces the whole export at once. The new export is written into a
version folder of its own, `OUT/_exports/<run_id>/`, and only when it is
complete does `OUT/export` (a relative symbolic link) switch to it, with one
atomic `rename`. A reader opening `OUT/export/...` sees the old export or the
new one, never a mix, never a half-written shard, and never nothing (a
two-rename swap of real folders would leave a moment with no export). A killed
export leaves an unreferenced version folder that the next export removes. The
previous version is kept (`export.keep_versions`) so a reader still going
through it is not cut off. On object stores (no links, no atomic rename) the
version folder is written the same way and `OUT/_exports/current.json` (one
PUT, atomic per object) names the current one; mfpipe's own readers follow it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from .. import screening
from ..config import Section
from ..review.honour import ReviewLedger
from ..schemas import Provenance, RunInfo, arrow_schema, utc_now
from ..schemas.export import SkillsRow, ThinkRow
from ..schemas.synthesize import SKILLS
from ..songfacts import chord_changes, meter_text
from ..store import OutputStore

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class ExportSettings(Section):
    """MF-Skills / MF-Think Parquet export, its dataset card, and the AF3 JSON export."""

    shard_max_rows: int = Field(100_000, ge=1, description="Rows per Parquet shard.")
    shard_max_mb: float = Field(256.0, gt=0, description="In-memory size per shard (the zstd file is smaller).")
    allow_unfiltered: bool = Field(True, description="The filter stage has not run on the output: export the "
                                   "synthesize items marked `unfiltered` (true) or refuse (false).")
    keep_versions: int = Field(2, ge=1, description="Export versions kept under OUT/_exports: 1 = only the "
                               "current one, 2 = also the one before (a reader still going through it is not cut "
                               "off by a rerun).")
    caption_prompt: str = Field("export_caption", description="The instruction a caption answers (prompts/).")
    think_prompt: str = Field("export_think", description="AF3 JSON: what MF-Think questions add to ask for "
                                                          "<think>/<answer>.")
    # Training exports with the audio inside (mfpipe.curate.audio_export); --audio / --codec set the first two.
    audio: Literal["full", "windows"] = Field("full", description="hf-audio / webdataset / lhotse-shar: one sample "
                                              "per song (full: the analysed span, at most 20 min) or per 30 s "
                                              "window Music Flamingo reads (windows).")
    audio_codec: Literal["flac", "opus"] = Field("flac", description="How the exported audio is encoded "
                                                 "(libsndfile): flac (lossless, 16-bit) or opus (Ogg Opus).")
    audio_sample_rate: int = Field(16000, ge=8000, le=192000, description="Sample rate of the exported audio "
                                   "(mono); 16000 is what Music Flamingo reads. Opus: 8, 12, 16, 24 or 48 kHz.")
    pad_last_window: bool = Field(True, description="windows: the song's last window is padded with silence to "
                                  "the full window length, as the model pads it (its real length is `audio_s`).")
    audio_shard_max_mb: float = Field(1024.0, gt=0, description="A training-export shard is closed once it holds "
                                      "this much (a song's samples never straddle two shards).")
    audio_workers: int = Field(2, ge=1, le=64, description="Songs decoded and encoded at once (threads; memory "
                                "grows by one song's audio per worker).")
    af3_audio: Literal["link", "copy", "none"] = Field("link", description="AF3 JSON: put each song's audio "
                                                       "beside the JSON as af3/audio/<song_id>.<ext>: a symbolic "
                                                       "link to the source (link; a copy where either side is "
                                                       "remote), a copy (copy), or nothing (none).")

    @model_validator(mode="after")
    def _opus_rate(self) -> ExportSettings:
        if self.audio_codec == "opus" and self.audio_sample_rate not in OPUS_RATES:
            raise ValueError(f"opus encodes only at {', '.join(map(str, OPUS_RATES))} Hz, not "
                             f"export.audio_sample_rate={self.audio_sample_rate}")
        return self


EXPORT = "export"
VERSIONS = "_exports"
POINTER = "current.json"
MANIFEST = "manifest.json"
TABLES: dict[str, type] = {"mf_skills": SkillsRow, "mf_think": ThinkRow}
# Stage outputs whose provenance every exported row carries, besides synthesize/filter/think.
UPSTREAM = ("ingest", "mir", "caption", "lyrics")
KEPT_ACTIONS = ("kept", "rewritten")


class ExportError(RuntimeError):
    pass


@dataclass
class Tally:
    """What the export saw, item by item; becomes manifest.json and the card's tables."""

    songs_synthesized: int = 0
    songs_exported: set[str] = field(default_factory=set)
    generated: Counter = field(default_factory=Counter)  # skill → items synthesize made
    exported: Counter = field(default_factory=Counter)  # skill → MF-Skills rows
    dropped: Counter = field(default_factory=Counter)  # skill → items the filter dropped
    unjudged: Counter = field(default_factory=Counter)  # skill → items without a (fresh) judgement
    drop_reasons: Counter = field(default_factory=Counter)
    stale_filter_songs: int = 0
    think_songs: int = 0
    think_considered: int = 0
    think_dropped: int = 0
    think_actions: Counter = field(default_factory=Counter)  # kept / rewritten / other
    think_by_skill: Counter = field(default_factory=Counter)
    think_stale_chains: int = 0
    songs_with_form: int = 0  # exported songs whose MIR row has measured sections
    filter_seen: int = 0  # items the filter has a fresh verdict for
    audio_lm_judged: int = 0  # ...of which the audio-LM really judged (a score, a P(yes))
    chain_steps: Counter = field(default_factory=Counter)  # exported chains' steps by who checked them

    def items_json(self) -> dict[str, dict[str, int]]:
        skills = ["caption", *SKILLS] + sorted(set(self.generated) - {"caption", *SKILLS})
        return {s: {"generated": self.generated[s], "dropped": self.dropped[s],
                    "unjudged": self.unjudged[s], "exported": self.exported[s]} for s in skills}


@dataclass
class ExportResult:
    version: str
    path: str  # the version folder
    manifest: dict[str, Any]
    rows: dict[str, int]


# ------------------------------------------------------------------ reading the stage outputs


def _read(store, stage: str, columns: list[str]) -> pa.Table | None:
    """The columns export uses of a stage's rows (None when the stage wrote nothing)."""
    if not store.has_output(stage):
        return None
    return store.read_columns(store.stage_dir(stage), columns)


def _by_song(table: pa.Table | None) -> dict[str, dict[str, Any]]:
    if table is None:
        return {}
    return {row["song_id"]: row for row in table.to_pylist()}


def mir_facts(mir: dict[str, Any] | None) -> dict[str, Any] | None:
    if not mir:
        return None
    changes = chord_changes(mir.get("chords") or [])
    spans = []
    ends = [start for start, _ in changes[1:]]
    last_end = max((float(c.get("end") or 0.0) for c in mir.get("chords") or []), default=0.0)
    for (start, label), end in zip(changes, ends + [last_end]):
        spans.append({"start": start, "end": max(end, start), "label": label})
    meter = mir.get("meter")
    return {"bpm": mir.get("bpm"), "meter": meter, "time_signature": meter_text(int(meter)) if meter else None,
            "key": mir.get("key"), "mode": mir.get("mode"), "key_strength": mir.get("key_strength"),
            "loudness_lufs": mir.get("loudness_lufs"), "chords": spans, "sections": list(mir.get("sections") or [])}


@dataclass
class Lookups:
    """Per-song facts and provenance from ingest, mir, caption, lyrics, filter (held in memory)."""

    ingest: dict[str, dict[str, Any]]
    mir: dict[str, dict[str, Any]]
    provenance: dict[str, dict[str, dict[str, Any]]]  # stage → song_id → provenance
    filter: dict[str, dict[str, Any]] | None  # None: the filter never ran on this output

    @classmethod
    def load(cls, store) -> Lookups:
        ingest = _by_song(_read(store, "ingest", ["song_id", "source", "duration_s", "processed_s"]))
        mir_table = _read(store, "mir", ["song_id", "bpm", "meter", "key", "mode", "key_strength",
                                         "loudness_lufs", "chords", "sections"])
        provenance = {}
        for stage in UPSTREAM:
            table = _read(store, stage, ["song_id", "provenance"])
            provenance[stage] = {} if table is None else dict(zip(table["song_id"].to_pylist(),
                                                                  table["provenance"].to_pylist()))
        filt = _read(store, "filter", ["song_id", "provenance", "caption", "qa"])
        return cls(ingest=ingest, mir={sid: mir_facts(r) for sid, r in _by_song(mir_table).items()},
                   provenance=provenance, filter=None if filt is None else _by_song(filt))

    def song(self, song_id: str, source: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        ing = self.ingest.get(song_id) or {}
        return {"source": ing.get("source") or source, "duration_s": ing.get("duration_s"),
                "processed_s": ing.get("processed_s"), "metadata": metadata, "mir": self.mir.get(song_id)}

    def upstream_provenance(self, song_id: str) -> list[dict[str, Any]]:
        return [p for stage in UPSTREAM if (p := self.provenance[stage].get(song_id)) is not None]


def _newer(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """True when provenance `a` was made before `b` (a judgement of an older text)."""
    return bool(a and b and a.get("created_at") and b.get("created_at") and a["created_at"] < b["created_at"])


# ------------------------------------------------------------------ building the rows


@dataclass
class Builder:
    lookups: Lookups
    export_provenance: dict[str, Any]
    caption_instruction: str
    tally: Tally = field(default_factory=Tally)
    metadata: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # song_id → metadata
    synth_provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    reviews: ReviewLedger = field(default_factory=lambda: ReviewLedger([]))  # people's decisions (mfpipe review)

    def skills_rows(self, synth: dict[str, Any]) -> list[dict[str, Any]]:
        """The exported rows of one synthesize record (counting what is left out)."""
        sid = synth["song_id"]
        self.tally.songs_synthesized += 1
        self.metadata[sid] = synth.get("metadata")
        self.synth_provenance[sid] = synth["provenance"]
        items = [("caption", "caption", self.caption_instruction, [], synth["caption"], None)]
        items += [("qa", qa["skill"], qa["question"], qa.get("options") or [], qa["answer"], i)
                  for i, qa in enumerate(synth.get("qa") or [])]
        for _, skill, *_ in items:
            self.tally.generated[skill] += 1
        judgements = self.reviews.judge(sid, items, self._judgements(synth, items))
        song = self.lookups.song(sid, synth["source"], synth.get("metadata"))
        provenance = [self.export_provenance, synth["provenance"]]
        if self.lookups.filter is not None and sid in self.lookups.filter:
            provenance.append(self.lookups.filter[sid]["provenance"])
        provenance += self.lookups.upstream_provenance(sid)
        flags = _flags_by_field(synth.get("flags") or [])
        rows = []
        for (kind, skill, question, options, answer, index), quality in zip(items, judgements):
            if quality is None:
                continue
            if quality["status"] == "unfiltered":
                quality["flags"] = flags.get("caption" if index is None else f"qa[{index}].answer", [])
            self.tally.exported[skill] += 1
            rows.append({
                "id": f"{sid}:caption" if index is None else f"{sid}:qa:{index}",
                "song_id": sid, "kind": kind, "skill": skill, "question": question, "options": options,
                "answer": answer, "answer_words": len(answer.split()), "quality": quality, "song": song,
                "provenance": provenance,
            })
        rows = self.reviews.apply(rows)
        if rows:
            if sid not in self.tally.songs_exported and (song.get("mir") or {}).get("sections"):
                self.tally.songs_with_form += 1
            self.tally.songs_exported.add(sid)
        return rows

    def _judgements(self, synth: dict[str, Any], items: list[tuple]) -> list[dict[str, Any] | None]:
        """One Quality per item, or None when the item is left out (dropped or unjudged)."""
        if self.lookups.filter is None:
            return [{"status": "unfiltered", "flags": [], "reasons": []} for _ in items]
        judged = self.lookups.filter.get(synth["song_id"])
        stale = judged is not None and _newer(judged["provenance"], synth["provenance"])
        if judged is None or stale:
            self.tally.stale_filter_songs += int(stale)
            for _, skill, *_ in items:
                self.tally.unjudged[skill] += 1
            return [None] * len(items)
        by_index = {j["index"]: j for j in judged.get("qa") or []}
        out = []
        for _, skill, _, _, _, index in items:
            j = judged["caption"] if index is None else by_index.get(index)
            if j is not None:
                self.tally.filter_seen += 1
                self.tally.audio_lm_judged += int((j.get("score") if index is None else j.get("p_yes")) is not None)
            if j is None or (index is not None and j.get("skill") != skill):
                self.tally.unjudged[skill] += 1
                out.append(None)
            elif not j.get("keep"):
                self.tally.dropped[skill] += 1
                self.tally.drop_reasons.update(j.get("reasons") or ["(no reason given)"])
                out.append(None)
            else:
                out.append({"status": "passed", "score": j.get("score"), "p_yes": j.get("p_yes"),
                            "flags": list(j.get("flags") or []), "reasons": list(j.get("reasons") or [])})
        return out

    def think_rows(self, think: dict[str, Any]) -> list[dict[str, Any]]:
        sid = think["song_id"]
        self.tally.think_songs += 1
        self.tally.think_considered += think.get("considered") or 0
        self.tally.think_dropped += think.get("dropped") or 0
        chains = think.get("chains") or []
        if _newer(think["provenance"], self.synth_provenance.get(sid)):
            self.tally.think_stale_chains += len(chains)
            return []
        song = self.lookups.song(sid, think["source"], self.metadata.get(sid))
        provenance = [self.export_provenance, think["provenance"]]
        provenance += [p for p in (self.synth_provenance.get(sid),
                                   (self.lookups.filter or {}).get(sid, {}).get("provenance")) if p]
        provenance += self.lookups.upstream_provenance(sid)
        rows = []
        for chain in chains:
            for step in chain.get("steps") or []:
                who = step.get("checked_by") if step.get("verdict") != "unverifiable" else "unverifiable"
                self.tally.chain_steps[who] += 1
        for n, chain in enumerate(chains):
            self.tally.think_actions[chain["action"]] += 1
            if chain["action"] not in KEPT_ACTIONS:
                continue
            ref = chain["qa_index"] if chain.get("qa_index") is not None else f"c{n}"
            rows.append({
                "id": f"{sid}:think:{ref}", "song_id": sid, "skill": chain["skill"], "question": chain["question"],
                "options": chain.get("options") or [], "text": chain["text"], "answer": chain["answer"],
                "reference_answer": chain.get("reference_answer"), "action": chain["action"],
                "rewrites": chain.get("rewrites") or 0, "steps": chain.get("steps") or [],
                "step_error_rate": chain["step_error_rate"], "first_error_rate": chain["first_error_rate"],
                "selected_because": chain["selected_because"], "qa_index": chain.get("qa_index"),
                "song": song, "provenance": provenance,
            })
        rows = self.reviews.apply(rows, "mf_think")
        self.tally.think_by_skill.update(r["skill"] for r in rows)
        if rows:
            self.tally.songs_exported.add(sid)
        return rows


def _flags_by_field(flags: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for f in flags:
        out[f["field"]].append(f"{f['check']}: {f['message']}")
    return out


# ------------------------------------------------------------------ writing


def _records(store, stage: str) -> Iterator[list[dict[str, Any]]]:
    """A stage's rows, one shard at a time (bounded memory for the big tables)."""
    for path in store.shards(store.stage_dir(stage)):
        yield pq.read_table(path, filesystem=store.fs).to_pylist()


def _write_table(store, directory: str, name: str, batches: Iterator[list[dict[str, Any]]], run_id: str,
                 max_rows: int, max_mb: float) -> tuple[int, list[str]]:
    schema = arrow_schema(TABLES[name])
    writer = store.writer(directory, schema, run_id, max_rows=max_rows, max_mb=max_mb, flush_seconds=1e9)
    for rows in batches:
        writer.write(pa.Table.from_pylist(rows, schema=schema))
    writer.close()
    if not writer.files:
        # An empty table still gets one shard: readers then see the schema, not "no files".
        writer.files.append(store.write_table_atomic(directory, f"part-{run_id}-00000.parquet",
                                                     schema.empty_table()))
    return writer.rows_written, [f.rsplit("/", 1)[-1] for f in writer.files]


def export_provenance(run: RunInfo, prompt, settings: dict[str, Any]) -> dict[str, Any]:
    prov = Provenance(stage=EXPORT, mfpipe_version=run.mfpipe_version, code_rev=run.code_rev,
                      config_hash=run.config_hash, run_id=run.run_id, created_at=utc_now(),
                      prompt=prompt.ref(),
                      settings=json.dumps(settings, sort_keys=True))
    return prov.model_dump(mode="python")


def build(store: OutputStore, cfg: ExportSettings, run: RunInfo,
          progress: Callable[[str, str, Any], None] = lambda *_: None) -> ExportResult:
    """Write a complete export into a new version folder, then make it the current one."""
    from ..prompts import load_prompt
    from .card import write_card
    has_filter = store.has_output("filter")
    if not has_filter and not cfg.allow_unfiltered:
        raise ExportError("the filter stage has not run on this output and export.allow_unfiltered is false: "
                          "run --stage filter first, or allow an unfiltered export")
    prompt = load_prompt(cfg.caption_prompt)
    settings = {"allow_unfiltered": cfg.allow_unfiltered, "shard_max_rows": cfg.shard_max_rows,
                "shard_max_mb": cfg.shard_max_mb}
    provenance = export_provenance(run, prompt, settings)
    builder = Builder(Lookups.load(store), provenance, prompt.text.strip(),
                      reviews=ReviewLedger.load(store, provenance))
    version = run.run_id
    root = store.join(VERSIONS, version)
    total = store.count_rows(store.shards(store.stage_dir("synthesize")))
    progress(EXPORT, "start", total)

    left_out = screening.left_out(store)  # copies that are not kept, songs holding evaluation audio

    def skills_batches() -> Iterator[list[dict[str, Any]]]:
        for batch in _records(store, "synthesize"):
            yield [r for rec in batch if rec["song_id"] not in left_out for r in builder.skills_rows(rec)]
            progress(EXPORT, "advance", len(batch))

    def think_batches() -> Iterator[list[dict[str, Any]]]:
        for batch in _records(store, "think"):
            yield [r for rec in batch if rec["song_id"] not in left_out for r in builder.think_rows(rec)]

    tables: dict[str, Any] = {}
    for name, batches in (("mf_skills", skills_batches()), ("mf_think", think_batches())):
        rows, files = _write_table(store, f"{root}/{name}", name, batches, version,
                                   cfg.shard_max_rows, cfg.shard_max_mb)
        tables[name] = {"rows": rows, "files": files}
    manifest = _manifest(run, builder.tally, tables, has_filter, store.has_output("think"), settings)
    manifest["reviews"] = builder.reviews.manifest(store)
    manifest["screening"] = screening.summary(store)
    store.fs.pipe_file(f"{root}/{MANIFEST}", json.dumps(manifest, indent=2, default=str).encode())
    write_card(store, root, manifest)
    make_current(store, version)
    prune(store, keep=cfg.keep_versions)
    return ExportResult(version=version, path=root, manifest=manifest,
                        rows={name: t["rows"] for name, t in tables.items()})


def _manifest(run, tally: Tally, tables: dict[str, Any], has_filter: bool, has_think: bool,
              settings: dict[str, Any]) -> dict[str, Any]:
    for name, info in tables.items():
        info["schema"] = [f"{f.name}: {f.type}" for f in arrow_schema(TABLES[name])]
    tables["mf_skills"]["by_skill"] = {k: v for k, v in tally.exported.items() if v}
    tables["mf_think"]["by_skill"] = dict(tally.think_by_skill)
    return {
        "version": run.run_id, "created_at": utc_now().isoformat(), "mfpipe_version": run.mfpipe_version,
        "code_rev": run.code_rev, "config_hash": run.config_hash, "settings": settings,
        "filter": "ran" if has_filter else "not_run", "think": "ran" if has_think else "not_run",
        "songs": {"synthesized": tally.songs_synthesized, "exported": len(tally.songs_exported),
                  "stale_filter": tally.stale_filter_songs, "with_measured_form": tally.songs_with_form},
        "items": tally.items_json(),
        "filter_drop_reasons": dict(tally.drop_reasons.most_common(20)),
        "audio_lm": {"items_with_a_verdict": tally.filter_seen, "judged_by_audio_lm": tally.audio_lm_judged,
                     "chain_steps": dict(tally.chain_steps)},
        "think_chains": {"songs": tally.think_songs, "considered": tally.think_considered,
                         "dropped": tally.think_dropped, "stale": tally.think_stale_chains,
                         "by_action": dict(tally.think_actions)},
        "tables": tables,
    }


# ------------------------------------------------------------------ which version is current


def make_current(store, version: str) -> None:
    """Point OUT/export at `_exports/<version>` in one atomic step (local), and record it."""
    previous = current_version(store)
    pointer = {"version": version, "previous": previous if previous != version else None,
               "path": f"{VERSIONS}/{version}", "switched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if store.local:
        link = store.join(EXPORT)
        if os.path.isdir(link) and not os.path.islink(link):
            # An export folder from elsewhere (or an older layout): kept as a version of its own.
            os.rename(link, store.join(VERSIONS, f"moved-{uuid.uuid4().hex[:8]}"))
        tmp = store.join(f"_export-link-{uuid.uuid4().hex[:8]}")
        os.symlink(f"{VERSIONS}/{version}", tmp)
        os.replace(tmp, link)  # rename(2): atomic, readers see the old link or the new one
    store.fs.pipe_file(store.join(VERSIONS, POINTER), json.dumps(pointer).encode())


def _pointer(store) -> dict[str, Any]:
    try:
        with store.fs.open(store.join(VERSIONS, POINTER)) as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return {}


def current_version(store) -> str | None:
    if store.local:
        link = store.join(EXPORT)
        if os.path.islink(link):
            return os.readlink(link).rstrip("/").rsplit("/", 1)[-1]
        if os.path.isdir(link):
            return None
    return _pointer(store).get("version")


def current_root(store) -> str | None:
    """The folder of the current export (through the link on local folders), or None."""
    if store.local and os.path.isdir(store.join(EXPORT)):
        return store.join(EXPORT)
    version = current_version(store)
    return store.join(VERSIONS, version) if version else None


def prune(store, keep: int) -> list[str]:
    """Remove every version folder but the current one and (keep >= 2) the one before it,
    including folders a killed export left unfinished."""
    pointer = _pointer(store)
    keep_set = {current_version(store)} | ({pointer.get("previous")} if keep >= 2 else set())
    base = store.join(VERSIONS)
    try:
        entries = [p.rstrip("/") for p in store.fs.ls(base, detail=False) if store.fs.isdir(p)]
    except FileNotFoundError:
        return []
    removed = [p.rsplit("/", 1)[-1] for p in entries if p.rsplit("/", 1)[-1] not in keep_set]
    for name in removed:
        store.fs.rm(f"{base}/{name}", recursive=True)
    return removed
