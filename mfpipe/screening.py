"""Which ingested songs belong in the corpus: one copy per recording, none that holds evaluation audio.

The ingest stage's corpus gate (`Screening`), on the driver. The runner opens it at
the start of a run and hands it every batch of ingest records before they are
committed, so a song is decided before any later stage can take it:

- a song that contains a clip of an excluded evaluation set (`ingest.exclude`) is
  rejected `eval_contamination`, naming the clip;
- a song whose fingerprint matches a kept song (`mfpipe.dedup.NearDuplicates`) is
  rejected `near_duplicate`, naming the kept song_id, unless it ranks above it in
  the keep order: then it is kept and the earlier song is left out instead.

When a group decision can be made: songs stream, so a song is decided as soon as
its ingest record is ready, against every song already kept (this run's and every
earlier run's). A copy that arrives after its kept song and ranks lower is never
taken by a later stage. A better copy that arrives later (in this run or a later
one: the corpus grows) replaces the kept song; the replaced song keeps the rows it
already has (GPU work is not undone) but is *withdrawn*: no later stage starts it
and export leaves it out. So each group ends with one kept song, the best by the
keep order among all copies seen; ties go to the copy seen first.

Exclusions added later: at the start of a run, every song already in the corpus is
screened against the clips no earlier run screened it against (the ledger
`OUT/ingest/_matches/screened.json`); a song that contains one is withdrawn the same
way. A run without an exclusion set forgets it in the ledger (songs it ingests are
not screened against it), so giving the set again screens every song once more.

Decisions about songs that already have rows are marks in `OUT/ingest/_matches/`
(`FingerprintMatch`, `had_rows=true`); decisions made before a song has a row are
ingest rejects, and the same table holds their details (the kept song, the clip,
the bit-error rate). A mark counts while it is newer than the song's ingest row
(`--force` on ingest redoes every decision) and, for a copy, while its kept song has
a row. Evaluation clips are fingerprinted once: `OUT/_cache/exclude/`, by sha256.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import audio
from .dedup import (
    Clip,
    ClipMatchSettings,
    ClipScreen,
    Containment,
    Copy,
    Decision,
    NearDuplicates,
    NearDuplicateSettings,
    Song,
)
from .fingerprint import FingerprintSink
from .schemas import ClipFingerprint, FingerprintMatch, IngestRecord, Reject, RunInfo, arrow_schema, to_table, utc_now
from .store import OutputStore

STAGE = "ingest"
MATCHES = "_matches"
LEDGER = "screened.json"
CACHE = ("_cache", "exclude")
OUTCOMES = ("near_duplicate", "eval_contamination")


def matches_dir(store: OutputStore) -> str:
    return store.join(STAGE, MATCHES)


# ------------------------------------------------------------------ reading what is decided


def _fingerprints(column: pa.ChunkedArray) -> list[np.ndarray]:
    """A list<uint32> column as one numpy array per row (no Python ints)."""
    out = []
    for chunk in column.chunks:
        values = chunk.values.to_numpy(zero_copy_only=False).astype(np.uint32, copy=False)
        offsets = chunk.offsets.to_numpy()
        out += [values[offsets[i]:offsets[i + 1]] for i in range(len(chunk))]
    return out


def _ingest_shards(store: OutputStore, columns: list[str]) -> Iterator[pa.Table]:
    """Ingest rows shard by shard; a column an older shard lacks comes out empty."""
    for path in store.shards(store.stage_dir(STAGE)):
        have = set(store.read_schema(path).names)
        table = store.read_shard(path, columns=[c for c in columns if c in have])
        if "fingerprint" in columns and "fingerprint" not in have:
            table = table.append_column("fingerprint", pa.array([[]] * table.num_rows, pa.list_(pa.uint32())))
        yield table


def _row_runs(store: OutputStore) -> dict[str, str]:
    """song_id → the run that wrote its ingest row."""
    runs: dict[str, str] = {}
    for table in _ingest_shards(store, ["song_id", "provenance"]):
        run_ids = pc.struct_field(table["provenance"], "run_id").to_pylist()
        runs.update(zip(table["song_id"].to_pylist(), run_ids))
    return runs


def active_matches(store: OutputStore) -> dict[str, dict[str, Any]]:
    """song_id → its match (the newest that still holds): the songs left out of the corpus."""
    directory = matches_dir(store)
    files = store.shards(directory)
    if not files:
        return {}
    rows = _row_runs(store)
    rejected = set()
    for path in store.shards(store.rejects_dir(STAGE)):
        table = store.read_shard(path, columns=["song_id", "error"])
        rejected.update(zip(table["song_id"].to_pylist(), table["error"].to_pylist()))
    found: dict[str, dict[str, Any]] = {}
    for path in files:
        for m in store.read_shard(path).to_pylist():
            if _holds(m, rows, rejected) and (m["song_id"] not in found
                                              or m["created_at"] >= found[m["song_id"]]["created_at"]):
                found[m["song_id"]] = m
    return found


def _holds(m: dict[str, Any], rows: dict[str, str], rejected: set[tuple[str, str]]) -> bool:
    if not m["had_rows"]:
        return (m["song_id"], m["outcome"]) in rejected
    row_run = rows.get(m["song_id"])
    if row_run is None or row_run > m["run_id"]:  # no row, or one made again since (--force)
        return False
    return m["outcome"] != "near_duplicate" or m["matched_id"] in rows


def left_out(store: OutputStore) -> set[str]:
    """Songs the corpus leaves out (copies that are not kept, songs holding evaluation audio)."""
    return set(active_matches(store))


def _read_ledger(store: OutputStore) -> dict[str, Any]:
    try:
        return json.loads(store.fs.cat_file(f"{matches_dir(store)}/{LEDGER}"))
    except (FileNotFoundError, ValueError):
        return {}


# ------------------------------------------------------------------ what the card and report show


def summary(store: OutputStore, max_rows: int = 50) -> dict[str, Any]:
    """Near-duplicate groups (kept song and left-out copies) and contaminations per excluded set."""
    matches = active_matches(store)
    ledger = _read_ledger(store)
    copies = {sid: m for sid, m in matches.items() if m["outcome"] == "near_duplicate"}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    kept_source: dict[str, str] = {}
    for sid, m in copies.items():
        root, seen = m, {sid}
        while root["matched_id"] in copies and root["matched_id"] not in seen:  # a kept song replaced later
            seen.add(root["matched_id"])
            root = copies[root["matched_id"]]
        groups[root["matched_id"]].append(m)
        kept_source[root["matched_id"]] = root["matched_source"]
    table = [{"kept": kept_source[k], "kept_id": k, "kept_left_out": k in matches,
              "copies": sorted(m["source"] for m in members), "max_ber": round(max(m["ber"] for m in members), 4)}
             for k, members in groups.items()]
    table.sort(key=lambda g: (-len(g["copies"]), g["kept"]))
    contaminated = [m for m in matches.values() if m["outcome"] == "eval_contamination"]
    per_set = Counter(m["excluded_set"] for m in contaminated)
    sets = {name: {"clips": info.get("clips", 0), "unreadable": len(info.get("unreadable", [])), "songs": 0}
            for name, info in (ledger.get("sets") or {}).items()}
    for name, n in per_set.items():
        sets.setdefault(name, {"clips": None, "unreadable": 0, "songs": 0})["songs"] = n
    return {
        "near_duplicates": {"groups": len(groups), "left_out": len(copies), "table": table[:max_rows]},
        "contamination": {
            "left_out": len(contaminated),
            "sets": [{"set": name, **info} for name, info in sorted(sets.items())],
            "table": [{"song": m["source"], "clip": m["matched_source"], "set": m["excluded_set"],
                       "start_s": round(m["offset_s"], 1), "ber": round(m["ber"], 4)}
                      for m in sorted(contaminated, key=lambda m: (m["excluded_set"] or "", m["source"]))][:max_rows],
        },
    }


# ------------------------------------------------------------------ evaluation clips


@dataclass
class ExclusionSets:
    """The clips of `ingest.exclude`, fingerprinted (through the cache)."""

    clips: list[Clip] = field(default_factory=list)
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → {"clips": n, "unreadable": [...]}


def load_exclusions(store: OutputStore, sources: dict[str, list[str]], settings: ClipMatchSettings,
                    run: RunInfo, ffmpeg: str = "ffmpeg") -> ExclusionSets:
    """Fingerprint every clip of every set once: cached under OUT/_cache/exclude/ by sha256."""
    cache_dir = store.join(*CACHE)
    cached = {}
    for path in store.shards(cache_dir):
        for row in store.read_shard(path).to_pylist():
            if len(row["phases"]) == settings.phases or row["error"]:
                cached[row["sha256"]] = row
    listed = [(name, src) for name, srcs in sources.items() for src in srcs]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # decode + Chromaprint release the GIL
        hashes = list(pool.map(lambda item: audio.sha256_file(item[1]) if _readable(item[1]) else None, listed))
        todo = {sha: src for (_, src), sha in zip(listed, hashes) if sha and sha not in cached}
        made = list(pool.map(lambda item: _clip_row(item[0], item[1], settings.phases, ffmpeg), todo.items()))
    if made:
        store.fs.makedirs(cache_dir, exist_ok=True)
        store.write_table_atomic(cache_dir, f"part-{run.run_id}.parquet", to_table(made, ClipFingerprint))
        cached.update({row.sha256: row.model_dump() for row in made})
    out = ExclusionSets(sets={name: {"clips": 0, "unreadable": []} for name in sources})
    seen = set()
    for (name, src), sha in zip(listed, hashes):
        row = cached.get(sha) if sha else None
        if row is None or row["error"]:
            out.sets[name]["unreadable"].append(f"{src}: {row['error'] if row else 'cannot be read'}")
            continue
        out.sets[name]["clips"] += 1
        if sha not in seen:
            seen.add(sha)
            out.clips.append(Clip(sha, src, name, tuple(np.asarray(p, np.uint32) for p in row["phases"])))
    return out


def _readable(source: str) -> bool:
    try:
        return audio.file_size(source) > 0
    except OSError:
        return False


def _clip_row(sha: str, source: str, phases: int, ffmpeg: str) -> ClipFingerprint:
    try:
        sink = FingerprintSink(phases=phases)
        scan = audio.scan_audio(source, ffmpeg, sink)
        prints = sink.results()
    except audio.AudioError as exc:
        return ClipFingerprint(sha256=sha, source=source, phases=[], error=f"{exc.kind}: {exc.message}"[:300],
                               created_at=utc_now())
    if not len(prints[0]):
        return ClipFingerprint(sha256=sha, source=source, phases=[], duration_s=scan.duration_s,
                               error=f"too short to fingerprint ({scan.duration_s:.1f} s)", created_at=utc_now())
    return ClipFingerprint(sha256=sha, source=source, phases=[p.tolist() for p in prints],
                           duration_s=scan.duration_s, created_at=utc_now())


# ------------------------------------------------------------------ the gate


class Screening:
    """The ingest stage's corpus gate (see the module docstring). `withdrawn` is the run's shared set of
    song_ids that have rows but are left out; later stages take none of them."""

    def __init__(self, store: OutputStore, run: RunInfo, near: NearDuplicateSettings, clips: ClipMatchSettings,
                 exclusions: ExclusionSets, withdrawn: set[str]):
        self.store = store
        self.run = run
        self.near_settings = near
        self.withdrawn = withdrawn
        self.exclusions = exclusions
        self.clips = ClipScreen(clips, exclusions.clips)
        self.sources: dict[str, str] = {}  # song_id → source, of the songs decided or kept
        self.copies: dict[str, Reject] = {}  # song_id → its reject, for a byte-identical file of a left-out song
        self.notes = [f"{len(u)} clip(s) of {name} could not be fingerprinted, e.g. {u[0]}"
                      for name, info in exclusions.sets.items() if (u := info["unreadable"])]
        self.written: list[str] = []
        self._near: NearDuplicates | None = None
        withdrawn.update(sid for sid, m in active_matches(store).items() if m["had_rows"])
        self._sweep()

    # ------------------------------------------------------------ start of the run
    def _sweep(self) -> None:
        """Screen the songs already in the corpus against the clips no earlier run screened them against."""
        ledger = _read_ledger(self.store)
        done = set(ledger.get("clips") or [])
        new = [c for c in self.exclusions.clips if c.key not in done]
        if new:
            screen = ClipScreen(self.clips.settings, new)
            marked = 0
            for table in _ingest_shards(self.store, ["song_id", "source", "fingerprint"]):
                marks = []
                for sid, src, fp in zip(table["song_id"].to_pylist(), table["source"].to_pylist(),
                                        _fingerprints(table["fingerprint"])):
                    if sid not in self.withdrawn and (found := screen.contained(fp)) is not None:
                        marks.append(self._contamination(sid, src, found, had_rows=True))
                        self.withdrawn.add(sid)
                self._save(marks)
                marked += len(marks)
            self.notes.append(f"{len(new)} new evaluation clip(s) checked against the songs already ingested: "
                              f"{marked} contain one and are left out (their rows stay; no stage takes them, "
                              "export leaves them out)")
        clips = sorted(c.key for c in self.exclusions.clips)
        sets = {name: {"clips": info["clips"], "unreadable": info["unreadable"][:20]}
                for name, info in self.exclusions.sets.items()}
        if (ledger.get("clips") or []) != clips or (ledger.get("sets") or {}) != sets:
            self.store.fs.makedirs(matches_dir(self.store), exist_ok=True)
            self.store.fs.pipe_file(f"{matches_dir(self.store)}/{LEDGER}", json.dumps(
                {"run_id": self.run.run_id, "clips": clips, "sets": sets}, indent=1).encode())

    def _load_near(self) -> NearDuplicates:
        """The kept songs of earlier runs, in the order they were ingested (built on first use: a run with
        no new songs never pays for it)."""
        near = NearDuplicates(self.near_settings)
        rows = []
        for table in _ingest_shards(self.store, ["song_id", "source", "format", "subtype", "size_bytes",
                                                 "duration_s", "fingerprint", "provenance"]):
            created = pc.struct_field(table["provenance"], "created_at").to_pylist()
            prints = _fingerprints(table["fingerprint"])
            for i, row in enumerate(table.drop_columns(["fingerprint", "provenance"]).to_pylist()):
                rows.append((created[i], row, prints[i]))
        rows.sort(key=lambda r: r[0])
        for _, row, fp in rows:
            self.sources[row["song_id"]] = row["source"]
            if row["song_id"] not in self.withdrawn and len(fp):
                near.keep(Song(row["song_id"], fp, _copy(row)))
        return near

    # ------------------------------------------------------------ each batch
    def admit(self, records: list[IngestRecord], rejects: list[Reject]) -> tuple[list[IngestRecord], list[Reject]]:
        """Decide a batch before it is committed: the records to write, the rejects with the copies and
        contaminated songs added. Marks for songs this batch replaces are written at once."""
        if not records:
            return records, rejects
        if self._near is None and self.near_settings.enabled:
            self._near = self._load_near()
        kept: list[IngestRecord] = []
        found: list[FingerprintMatch] = []
        for rec in records:
            reject = self._decide(rec, found)
            if reject is None:
                kept.append(rec)
            else:
                rejects.append(reject)
        self._save(found)  # before the batch's records are handed to the writer
        return kept, rejects

    def _decide(self, rec: IngestRecord, found: list[FingerprintMatch]) -> Reject | None:
        sid = rec.song_id
        if sid in self.copies:  # identical bytes of a song left out in this run: the same outcome
            return self.copies[sid].model_copy(update={"source": rec.source, "created_at": utc_now()})
        if sid in self.sources or not rec.fingerprint:  # identical bytes of a kept song: the runner's `duplicate`
            return None
        fp = np.asarray(rec.fingerprint, np.uint32)
        self.sources[sid] = rec.source
        contained = self.clips.contained(fp)
        if contained is not None:
            found.append(self._contamination(sid, rec.source, contained, had_rows=False))
            return self._reject(rec, "eval_contamination", _clip_message(contained))
        if self._near is None:
            return None
        decision = self._near.decide(Song(sid, fp, Copy(rec.format, rec.subtype, rec.size_bytes, rec.duration_s)))
        if decision.other is None:
            return None
        if decision.kept:  # this copy ranks above the kept one: the kept one is left out instead
            found.append(self._copy_match(decision.other, sid, decision, had_rows=True))
            self.withdrawn.add(decision.other)
            return None
        found.append(self._copy_match(sid, decision.other, decision, had_rows=False))
        return self._reject(rec, "near_duplicate", self._copy_message(decision))

    # ------------------------------------------------------------ rows
    def _reject(self, rec: IngestRecord, error: str, message: str) -> Reject:
        reject = Reject.of(STAGE, self.run.run_id, rec, error, message)
        self.copies[rec.song_id] = reject
        return reject

    def _copy_message(self, d: Decision) -> str:
        al = d.alignment
        return (f"near-duplicate of {self.sources[d.other]} (song_id {d.other}): bit-error rate {al.ber:.3f} over "
                f"{al.overlap_s:.1f} s at offset {al.offset_s:+.1f} s; the kept copy wins on {d.criterion}")

    def _copy_match(self, song: str, kept: str, d: Decision, had_rows: bool) -> FingerprintMatch:
        al = d.alignment
        sign = 1 if song == d.song else -1  # the alignment is of the deciding song against the other
        return FingerprintMatch(song_id=song, source=self.sources[song], outcome="near_duplicate", matched_id=kept,
                                matched_source=self.sources[kept], ber=al.ber, offset_s=sign * al.offset_s,
                                overlap_s=al.overlap_s, criterion=d.criterion, had_rows=had_rows,
                                run_id=self.run.run_id, created_at=utc_now())

    def _contamination(self, song: str, source: str, found: Containment, had_rows: bool) -> FingerprintMatch:
        al = found.alignment
        return FingerprintMatch(song_id=song, source=source, outcome="eval_contamination", matched_id=found.clip.key,
                                matched_source=found.clip.source, excluded_set=found.clip.excluded_set,
                                ber=al.ber, offset_s=found.start_s, overlap_s=al.overlap_s, had_rows=had_rows,
                                run_id=self.run.run_id, created_at=utc_now())

    def _save(self, matches: Iterable[FingerprintMatch]) -> None:
        matches = list(matches)
        if not matches:
            return
        directory = matches_dir(self.store)
        self.store.fs.makedirs(directory, exist_ok=True)
        name = f"part-{self.run.run_id}-{len(self.written):05d}.parquet"
        self.written.append(self.store.write_table_atomic(directory, name, to_table(matches, FingerprintMatch)))

    def close(self) -> None:
        """One shard for this run's decisions instead of one per batch (new shard first, then the old)."""
        if len(self.written) < 2:
            return
        table = pa.concat_tables([self.store.read_shard(p) for p in self.written]).cast(
            arrow_schema(FingerprintMatch))
        self.store.write_table_atomic(matches_dir(self.store), f"part-{self.run.run_id}-all.parquet", table)
        for path in self.written:
            self.store.remove_shard(path)
        self.written = []


def _copy(row: dict[str, Any]) -> Copy:
    return Copy(row.get("format") or "", row.get("subtype"), int(row.get("size_bytes") or 0),
                float(row.get("duration_s") or 0.0))


def _clip_message(found: Containment) -> str:
    clip, al = found.clip, found.alignment
    return (f"contains the evaluation clip {clip.source} of {clip.excluded_set} (sha256 {clip.key[:12]}…) from "
            f"{found.start_s:.1f} s to {found.start_s + al.overlap_s:.1f} s: bit-error rate {al.ber:.3f}")
