"""Training exports with the audio inside: hf-audio, WebDataset and Lhotse Shar shards.

Built from the rows of the current Parquet export (`OUT/export/mf_skills`, `mf_think`), so they hold
exactly the items the export selected. One sample per song (`full`: the analysed span, at most 20 min)
or per 30 s window (`windows`: split as the caption stage splits, the last window padded with silence
as the model pads it), each with the items that go with it:

- an item that names a time (m:ss, as the filter reads them) goes with the window(s) holding that time
  (`scope = "time"`; in `full` its `start`/`end` are those windows);
- an item that names none is about the whole song (`scope = "song"`; in `windows` every window of the
  song carries it).

Layout of one export (`OUT/export/<format>/`, or `--dest`):

    README.md            how to load it (hf-audio: the Hugging Face card declaring the `Audio` feature)
    manifest.json        written last: the export is complete once it exists
    _progress/<seq>.json one commit record per shard (`AudioShardCommit`)
    data/...             the shards and nothing else (a Lhotse Shar folder must hold only its shards)

How it stays bounded, atomic and resumable:
- Songs go in a fixed order: the export's rows are first partitioned into local temporary files by a
  hash of song_id (`bucket`), then read one bucket at a time and grouped by song, sorted by song_id.
  Memory holds one bucket of text rows, the audio of the songs being decoded (one per worker) and the
  shard being written (Parquet row groups are flushed as they fill; tar members go straight to disk).
- Each song is decoded once (`mfpipe.audio.load_mono`, mono at `export.audio_sample_rate`) and encoded
  with libsndfile (soundfile): FLAC 16-bit or Ogg Opus.
- A shard is written under `_staging/` (object stores: a local temporary folder), moved into `data/` by
  rename (object stores: one PUT per file), and belongs to the export once its commit record exists.
  A song's samples never straddle two shards.
- A rerun with the same settings starts after the last committed song: files of a shard that has no
  commit record are removed first, so a killed export (even `kill -9`) resumes without duplicates.
  Other settings (or `--restart`) start the export over.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile as sf
from fsspec.implementations.local import LocalFileSystem

from ..audio import AudioError, load_mono
from ..backends.audiolm import MAX_WINDOWS, split_windows, window_clip
from ..factcheck import windows_for
from ..schemas import utc_now
from ..schemas.export import AudioSample, AudioShardCommit, FailedSong, SampleItem

FOLDERS = {"hf-audio": "hf_audio", "webdataset": "webdataset", "lhotse-shar": "lhotse_shar"}
TABLES = ("mf_skills", "mf_think")
DATA = "data"
PROGRESS = "_progress"
STAGING = "_staging"
MANIFEST = "manifest.json"
README = "README.md"
ROWS_PER_BUCKET = 20_000  # text rows held at once (as Arrow) while grouping by song
MAX_BUCKETS = 256  # open files while partitioning: 2 per bucket (beyond ~5M rows, buckets grow instead)
EXTENSIONS = {"flac": "flac", "opus": "opus"}

# An export hook: called with ("staged" | "published" | "committed", shard seq) as each shard moves on.
EventHook = Callable[[str, int], None]


class AudioExportError(RuntimeError):
    pass


# ------------------------------------------------------------------ what decides the audio


@dataclass(frozen=True)
class AudioPlan:
    mode: str  # "full" | "windows"
    codec: str  # "flac" | "opus"
    sample_rate: int
    window_s: float = 30.0
    min_clip_s: float = 1.0  # a last window shorter than this is read from the song's last min_clip_s
    pad_last_window: bool = True

    @classmethod
    def from_settings(cls, cfg: Any, window_s: float, min_clip_s: float) -> AudioPlan:
        return cls(mode=cfg.audio, codec=cfg.audio_codec, sample_rate=cfg.audio_sample_rate, window_s=window_s,
                   min_clip_s=min_clip_s, pad_last_window=cfg.pad_last_window)


def encode(audio: np.ndarray, sample_rate: int, codec: str) -> bytes:
    """Mono float samples → FLAC (16-bit) or Ogg Opus bytes, with libsndfile."""
    buffer = io.BytesIO()
    if codec == "flac":
        # Clipped first: libsndfile converts float to 16-bit without clipping unless told to.
        sf.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    elif codec == "opus":
        sf.write(buffer, audio, sample_rate, format="OGG", subtype="OPUS")
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return buffer.getvalue()


# ------------------------------------------------------------------ songs in a fixed order, one bucket at a time


@dataclass
class SongGroup:
    """One song of the text export: its facts, its items (both tables) and the provenance behind them."""

    bucket: int
    song_id: str
    song: dict[str, Any]
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (table, export row)

    @property
    def position(self) -> tuple[int, str]:
        return (self.bucket, self.song_id)

    def provenance(self) -> list[dict[str, Any]]:
        """Every provenance entry of the song's rows, once, in the order first seen."""
        seen: dict[str, dict[str, Any]] = {}
        for _, row in self.rows:
            for entry in row.get("provenance") or []:
                seen.setdefault(json.dumps(entry, sort_keys=True, default=str), entry)
        return list(seen.values())


def bucket_of(song_id: str, buckets: int) -> int:
    return zlib.crc32(song_id.encode()) % buckets


def bucket_count(store, root: str) -> int:
    rows = sum(store.count_rows(store.shards(f"{root}/{t}")) for t in TABLES)
    return min(MAX_BUCKETS, max(1, math.ceil(rows / ROWS_PER_BUCKET)))


def _partition(store, root: str, buckets: int, tmp: Path) -> dict[tuple[str, int], Path]:
    """Write each table's rows into one local Parquet file per bucket (one pass over the export)."""
    writers: dict[tuple[str, int], pq.ParquetWriter] = {}
    paths: dict[tuple[str, int], Path] = {}
    try:
        for table in TABLES:
            for shard in store.shards(f"{root}/{table}"):
                with store.fs.open(shard, "rb") as fh:
                    reader = pq.ParquetFile(fh)
                    for batch in reader.iter_batches(batch_size=16384):
                        where = np.array([bucket_of(s, buckets) for s in batch.column("song_id").to_pylist()])
                        for b in np.unique(where):
                            key = (table, int(b))
                            if key not in writers:
                                paths[key] = tmp / f"{table}-{int(b):05d}.parquet"
                                writers[key] = pq.ParquetWriter(paths[key], reader.schema_arrow)
                            writers[key].write_batch(batch.filter(pa.array(where == b)))
    finally:
        for writer in writers.values():
            writer.close()
    return paths


def _runs(table: pa.Table) -> tuple[pa.Table, dict[str, tuple[int, int]]]:
    """The table sorted by song_id, and each song's (offset, length) in it."""
    table = table.take(pc.sort_indices(table, [("song_id", "ascending")]))
    runs: dict[str, tuple[int, int]] = {}
    for i, song_id in enumerate(table.column("song_id").to_pylist()):
        start, length = runs.get(song_id, (i, 0))
        runs[song_id] = (start, length + 1)
    return table, runs


def song_groups(store, root: str, buckets: int, after: tuple[int, str] | None = None) -> Iterator[SongGroup]:
    """The songs of the export at `root` in their fixed order, skipping those up to `after`. One bucket
    is held at a time, as Arrow; rows become Python objects one song at a time."""
    with tempfile.TemporaryDirectory(prefix="mfpipe-export-") as tmp:
        parts = _partition(store, root, buckets, Path(tmp))
        for b in range(buckets):
            if after is not None and b < after[0]:
                continue
            tables = {t: _runs(pq.read_table(parts[(t, b)])) for t in TABLES if (t, b) in parts}
            for song_id in sorted({sid for _, runs in tables.values() for sid in runs}):
                if after is not None and (b, song_id) <= after:
                    continue
                rows = [(t, row) for t, (table, runs) in tables.items() if song_id in runs
                        for row in table.slice(*runs[song_id]).to_pylist()]
                yield SongGroup(b, song_id, rows[0][1]["song"], rows)
            del tables


# ------------------------------------------------------------------ samples of one song


def _item(table: str, row: dict[str, Any], scope: str, span: tuple[float, float] | None) -> SampleItem:
    return SampleItem(id=row["id"], table=table, kind=row.get("kind") or "think", skill=row["skill"],
                      question=row["question"], options=list(row.get("options") or []), answer=row["answer"],
                      text=row.get("text"), scope=scope, start=span[0] if span else None,
                      end=span[1] if span else None)


def _named_windows(row: dict[str, Any], spans: list[tuple[float, float]]) -> list[int]:
    """The windows an item names by time (m:ss), as the filter reads them; [] for none (pick=0: no spread)."""
    return windows_for([row["question"], *(row.get("options") or []), row["answer"]], spans, 0)


def song_samples(group: SongGroup, audio: np.ndarray, plan: AudioPlan) -> list[tuple[AudioSample, np.ndarray]]:
    """Cut one decoded song into its samples, each with the items that go with it."""
    rate = plan.sample_rate
    analysed = len(audio) / rate
    spans = split_windows(analysed, plan.window_s, MAX_WINDOWS)
    named = [(table, row, _named_windows(row, spans)) for table, row in group.rows]
    common = {"song_id": group.song_id, "sample_rate": rate, "codec": plan.codec, "song": group.song,
              "provenance": group.provenance()}
    if plan.mode == "full":
        items = [_item(table, row, "time", (spans[w[0]][0], spans[w[-1]][1])) if w else _item(table, row, "song", None)
                 for table, row, w in named]
        sample = AudioSample(key=group.song_id, window=None, start_s=0.0, end_s=round(analysed, 6),
                             audio_s=round(analysed, 6), duration_s=round(analysed, 6), items=items, **common)
        return [(sample, audio)]
    out = []
    window_n = int(round(plan.window_s * rate))
    for i, (start, end) in enumerate(spans):
        clip = window_clip(audio, start, end, plan.min_clip_s, rate)
        clip_end = min(len(audio), int(round(end * rate)))
        clip_start = clip_end - len(clip)  # a short tail is read from earlier (window_clip)
        real_s = len(clip) / rate
        if plan.pad_last_window and len(clip) < window_n:
            clip = np.concatenate([clip, np.zeros(window_n - len(clip), dtype=clip.dtype)])
        items = [_item(table, row, "time", (0.0, round(real_s, 6))) for table, row, w in named if i in w]
        items += [_item(table, row, "song", None) for table, row, w in named if not w]
        sample = AudioSample(key=f"{group.song_id}_w{i:02d}", window=i, start_s=round(clip_start / rate, 6),
                             end_s=round(clip_end / rate, 6), audio_s=round(real_s, 6),
                             duration_s=round(len(clip) / rate, 6), items=items, **common)
        out.append((sample, clip))
    return out


@dataclass
class Prepared:
    """One song, decoded and encoded: its samples with their audio bytes, or why it failed."""

    group: SongGroup
    samples: list[tuple[AudioSample, bytes]] = field(default_factory=list)
    failed: FailedSong | None = None


def prepare(group: SongGroup, plan: AudioPlan, codec: str) -> Prepared:
    source = group.song.get("source") or ""
    seconds = group.song.get("processed_s") or group.song.get("duration_s")
    try:
        audio = load_mono(source, plan.sample_rate, max_seconds=seconds)
        if not len(audio):
            raise AudioError("empty", "no audio decoded")
    except (AudioError, OSError, RuntimeError, sf.LibsndfileError) as exc:
        return Prepared(group, failed=FailedSong(song_id=group.song_id, source=source,
                                                 error=f"{type(exc).__name__}: {exc}"))
    return Prepared(group, [(s, encode(clip, plan.sample_rate, codec)) for s, clip in song_samples(group, audio, plan)])


def prepared_songs(groups: Iterator[SongGroup], plan: AudioPlan, codec: str, workers: int) -> Iterator[Prepared]:
    """`prepare` over the songs on `workers` threads, in order, with at most `workers` songs ahead."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mfpipe-audio") as pool:
        pending: deque[Future] = deque()
        for group in groups:
            pending.append(pool.submit(prepare, group, plan, codec))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# ------------------------------------------------------------------ where the shards go


class Target:
    """The folder of one training export, local or on an fsspec filesystem."""

    def __init__(self, fs, root: str):
        self.fs = fs
        self.root = root.rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)

    @classmethod
    def from_url(cls, url: str) -> Target:
        fs, root = fsspec.core.url_to_fs(url)
        return cls(fs, root)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self) -> str:
        if self.local:
            return self.root
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
        return f"{protocol}://{self.root}"

    def staging(self) -> Path:
        """Where shards are written before they are published (same filesystem when local: rename)."""
        if self.local:
            path = Path(self.path(STAGING))
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            return path
        return Path(tempfile.mkdtemp(prefix="mfpipe-shard-"))

    def publish(self, staged: Path, relative: str) -> None:
        final = self.path(DATA, relative)
        if self.local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            with open(staged, "rb+") as fh:  # the rename must not outrun the data
                os.fsync(fh.fileno())
            os.replace(staged, final)
        else:
            self.fs.put_file(str(staged), final)  # one PUT: visible whole or not at all
            staged.unlink()

    def put_text(self, relative: str, text: str) -> None:
        final = self.path(relative)
        if self.local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            head, _, name = final.rpartition("/")
            tmp = f"{head}/.tmp-{os.getpid()}-{name}"  # what OutputStore.remove_stale_temporaries clears
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        else:
            self.fs.pipe_file(final, text.encode())

    def read_json(self, relative: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(self.path(relative), "rb") as fh:
                return json.load(fh)
        except (FileNotFoundError, ValueError):
            return None

    def files(self, folder: str) -> list[str]:
        """Files under a folder, relative to it."""
        base = self.path(folder)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        return sorted(p[len(base) + 1:] for p in found)

    def commits(self) -> list[AudioShardCommit]:
        out = []
        for name in self.files(PROGRESS):
            if name.endswith(".json") and "/" not in name:
                record = self.read_json(f"{PROGRESS}/{name}")
                if record:
                    out.append(AudioShardCommit.model_validate(record))
        return sorted(out, key=lambda c: c.seq)

    def clear(self) -> None:
        for name in (DATA, PROGRESS, STAGING, MANIFEST, README):
            if self.fs.exists(self.path(name)):
                self.fs.rm(self.path(name), recursive=True)


# ------------------------------------------------------------------ the formats


class ShardSink(Protocol):
    """One shard of one format being written into a staging folder."""

    def add(self, sample: AudioSample, audio: bytes) -> None: ...

    def finish(self) -> list[str]:
        """Close the shard; the files it wrote, relative to the staging folder (= to data/), in the order
        they are to be published (the file readers discover a shard by goes last)."""
        ...


class Format:
    """A training format: how its shards are written (`shard`) and what its README says."""

    name: str
    shard: Callable[[Path, int, AudioPlan], ShardSink]  # a ShardSink class, opened per shard
    lossless_input = False  # True: the sink encodes on its own (Lhotse) and gets lossless FLAC to start from

    def input_codec(self, codec: str) -> str:
        return "flac" if self.lossless_input else codec

    def open(self, staging: Path, seq: int, plan: AudioPlan) -> ShardSink:
        return self.shard(staging, seq, plan)

    def readme(self, manifest: dict[str, Any]) -> str:
        raise NotImplementedError


def format_named(name: str) -> Format:
    if name == "hf-audio":
        from .hf_audio import HfAudio
        return HfAudio()
    if name == "webdataset":
        from .webdataset_export import WebDataset
        return WebDataset()
    if name == "lhotse-shar":
        from .lhotse_shar import LhotseShar
        return LhotseShar()
    raise AudioExportError(f"unknown training format {name!r} (hf-audio, webdataset, lhotse-shar)")


# ------------------------------------------------------------------ writing an export


@dataclass
class ShardTally:
    seq: int
    songs: int = 0
    samples: int = 0
    items: int = 0
    audio_s: float = 0.0
    bytes: int = 0
    last: tuple[int, str] | None = None
    failed: list[FailedSong] = field(default_factory=list)


@dataclass
class AudioExportResult:
    format: str
    path: str  # the export's folder (a URL for object stores)
    manifest: dict[str, Any]
    resumed_after: int  # shards already committed when this run started
    skipped: bool = False  # already complete with these settings


def fingerprint(fmt: str, plan: AudioPlan, version: str | None, buckets: int, shard_max_mb: float) -> str:
    facts = {"format": fmt, "plan": plan.__dict__, "export_version": version, "buckets": buckets,
             "shard_max_mb": shard_max_mb}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _remove_uncommitted(target: Target, commits: list[AudioShardCommit]) -> int:
    """Files in data/ no commit record names: what a run killed between publish and commit left."""
    committed = {f for c in commits for f in c.files}
    stale = [name for name in target.files(DATA) if name not in committed]
    for name in stale:
        target.fs.rm(target.path(DATA, name))
    return len(stale)


def _commit(target: Target, sink: ShardSink, staging: Path, tally: ShardTally, print_hash: str,
            on_event: EventHook) -> AudioShardCommit:
    files = sink.finish()
    if not tally.samples:  # only songs that failed: nothing to publish, but their record moves the export on
        files = []
    on_event("staged", tally.seq)
    for name in files:
        target.publish(staging / name, name)
    on_event("published", tally.seq)
    assert tally.last is not None
    record = AudioShardCommit(seq=tally.seq, files=files, songs=tally.songs, samples=tally.samples,
                              items=tally.items, audio_s=round(tally.audio_s, 3), bytes=tally.bytes,
                              last_bucket=tally.last[0], last_song_id=tally.last[1], failed=tally.failed,
                              fingerprint=print_hash, committed_at=utc_now().isoformat())
    target.put_text(f"{PROGRESS}/{tally.seq:06d}.json", record.model_dump_json(indent=1))
    on_event("committed", tally.seq)
    return record


def export_audio(store, root: str, fmt_name: str, cfg: Any, *, window_s: float = 30.0, min_clip_s: float = 1.0,
                 dest: str | None = None, restart: bool = False, on_event: EventHook | None = None,
                 log: Callable[[str], None] = lambda _: None) -> AudioExportResult:
    """Write (or resume) the `fmt_name` training export of the Parquet export at `root`."""
    from .export import current_version

    fmt = format_named(fmt_name)
    plan = AudioPlan.from_settings(cfg, window_s, min_clip_s)
    target = Target.from_url(dest) if dest else Target(store.fs, f"{root}/{FOLDERS[fmt_name]}")
    version = current_version(store)
    buckets = bucket_count(store, root)
    print_hash = fingerprint(fmt_name, plan, version, buckets, cfg.audio_shard_max_mb)
    commits = target.commits()
    if restart or any(c.fingerprint != print_hash for c in commits):
        if commits:
            log(f"{target.url()}: starting over ({'--restart' if restart else 'other settings or export version'})")
        target.clear()
        commits = []
    done = target.read_json(MANIFEST)
    if done and done.get("fingerprint") == print_hash and done.get("complete"):
        return AudioExportResult(fmt_name, target.url(), done, resumed_after=len(commits), skipped=True)
    if done:  # from other settings, or never finished: it must not say "complete" while shards change
        target.fs.rm(target.path(MANIFEST))
    if stale := _remove_uncommitted(target, commits):
        log(f"removed {stale} file(s) of a shard an interrupted export left uncommitted")
    if commits:
        log(f"resuming after shard {commits[-1].seq} ({sum(c.songs for c in commits)} songs committed)")
    after = (commits[-1].last_bucket, commits[-1].last_song_id) if commits else None
    already = len(commits)
    staging = target.staging()
    on_event = on_event or (lambda *_: None)
    max_bytes = cfg.audio_shard_max_mb * 2**20
    try:
        tally, sink = ShardTally(seq=commits[-1].seq + 1 if commits else 0), None
        groups = song_groups(store, root, buckets, after)
        for song in prepared_songs(groups, plan, fmt.input_codec(plan.codec), cfg.audio_workers):
            sink = sink or fmt.open(staging, tally.seq, plan)
            _add_song(sink, tally, song)
            if tally.bytes >= max_bytes:
                commits.append(_commit(target, sink, staging, tally, print_hash, on_event))
                log(f"shard {tally.seq}: {tally.samples} samples, {tally.bytes / 2**20:.1f} MB")
                tally, sink = ShardTally(seq=tally.seq + 1), None
        if sink is not None and tally.songs:
            commits.append(_commit(target, sink, staging, tally, print_hash, on_event))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = _manifest(fmt_name, target, commits, plan, print_hash, version, cfg)
    target.put_text(README, fmt.readme(manifest))
    target.put_text(MANIFEST, json.dumps(manifest, indent=1))
    return AudioExportResult(fmt_name, target.url(), manifest, resumed_after=already)


def _add_song(sink: ShardSink, tally: ShardTally, song: Prepared) -> None:
    tally.songs += 1
    tally.last = song.group.position
    if song.failed is not None:
        tally.failed.append(song.failed)
        return
    for sample, audio in song.samples:
        sink.add(sample, audio)
        tally.samples += 1
        tally.items += len(sample.items)
        tally.audio_s += sample.audio_s
        tally.bytes += len(audio)


def _manifest(fmt_name: str, target: Target, commits: list[AudioShardCommit], plan: AudioPlan, print_hash: str,
              version: str | None, cfg: Any) -> dict[str, Any]:
    files = [f"{DATA}/{f}" for c in commits for f in c.files]
    sizes = {f: target.fs.size(target.path(f)) for f in files}
    return {
        "format": fmt_name, "complete": True, "export_version": version, "fingerprint": print_hash,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "path": target.url(),
        "audio": {"mode": plan.mode, "codec": plan.codec, "sample_rate": plan.sample_rate, "channels": 1,
                  "window_s": plan.window_s, "pad_last_window": plan.pad_last_window,
                  "min_clip_s": plan.min_clip_s},
        "shard_max_mb": cfg.audio_shard_max_mb, "shards": len(commits),
        "songs": sum(c.songs for c in commits) - sum(len(c.failed) for c in commits),
        "samples": sum(c.samples for c in commits), "items": sum(c.items for c in commits),
        "audio_hours": round(sum(c.audio_s for c in commits) / 3600, 4),
        "bytes": sum(sizes.values()), "files": files,
        "failed": [f.model_dump() for c in commits for f in c.failed],
    }


# ------------------------------------------------------------------ the dataset card's list of formats


def record_format(store, root: str, name: str, summary: dict[str, Any]) -> None:
    """Add a written format to the export's manifest.json and rewrite its dataset card."""
    from .card import write_card
    from .export import MANIFEST as EXPORT_MANIFEST

    target = Target(store.fs, root)
    manifest = target.read_json(EXPORT_MANIFEST)
    if manifest is None:
        return
    if str(summary.get("path", "")).startswith(f"{target.root}/"):  # inside the export: say where, relatively
        summary = {**summary, "path": summary["path"][len(target.root) + 1:]}
    manifest.setdefault("formats", {})[name] = summary
    target.put_text(EXPORT_MANIFEST, json.dumps(manifest, indent=2, default=str))
    write_card(store, root, manifest)


def format_summary(result: AudioExportResult, inside: bool) -> dict[str, Any]:
    """What the export's manifest and card say of a written training format (`inside`: in the export folder)."""
    m = result.manifest
    tables = [t for t in TABLES if any(f.startswith(f"{DATA}/{t}/") for f in m["files"])]
    return {"path": m["path"], "bytes": m["bytes"], "files": len(m["files"]), "samples": m["samples"],
            "songs": m["songs"], "items": m["items"], "audio_hours": m["audio_hours"], "audio": m["audio"],
            "failed": len(m["failed"]), "inside": inside, "tables": tables}


LOADING = {
    "hf-audio": "`datasets.load_dataset(\"{path}\", \"mf_skills\", split=\"train\")` (the folder's card declares "
                "the `Audio` feature: `row[\"audio\"]` decodes)",
    "webdataset": "`webdataset.WebDataset(\"{path}/data/shard-{{000000..{last:06d}}}.tar\")`: `KEY.{ext}` + "
                  "`KEY.json` (an `AudioSample`)",
    "lhotse-shar": "`lhotse.CutSet.from_shar(in_dir=\"{path}/data\")`: cuts with their recording and one "
                   "supervision per item",
    "af3-json": "Audio Flamingo training JSON; `sound` paths are `audio/<song_id>.<ext>` beside it ({audio})",
}


def audio_configs(manifest: dict[str, Any]) -> list[str]:
    """Dataset-card YAML configs for an hf-audio export written inside the export folder
    (`load_dataset("OUT/export", "mf_skills_audio")`; the `Audio` type comes from the files' metadata)."""
    info = (manifest.get("formats") or {}).get("hf-audio")
    if not info or not info.get("inside"):
        return []
    lines = []
    for table in info.get("tables", []):
        lines += [f"- config_name: {table}_audio", "  data_files:", "  - split: train",
                  f"    path: {FOLDERS['hf-audio']}/{DATA}/{table}/*.parquet"]
    return lines


def training_formats(manifest: dict[str, Any]) -> str:
    """The dataset card's "Training formats" section (empty until a format besides Parquet is written)."""
    formats = manifest.get("formats") or {}
    if not formats:
        return ""
    rows = []
    for name, info in sorted(formats.items()):
        audio = info.get("audio") or {}
        what = (f"{audio.get('mode')} · {audio.get('codec')} · {audio.get('sample_rate')} Hz mono"
                if isinstance(audio, dict) and audio else f"audio: {audio or 'n/a'}")
        ext = EXTENSIONS.get(audio.get("codec", "flac"), "flac") if isinstance(audio, dict) else "flac"
        how = LOADING[name].format(path=info["path"], last=max(info.get("files", 1) - 1, 0), ext=ext,
                                   audio=info.get("audio"))
        size = f"{info['bytes'] / 2**20:.1f} MB" if info.get("bytes") is not None else ""
        count = info.get("samples", info.get("entries", ""))
        rows.append(f"| {name} | `{info['path']}` | {what} | {count} | {size} | {how} |")
    failed = sum(int(info.get("failed") or 0) for info in formats.values())
    note = (f"\n{failed} song(s) could not be decoded again for a training format (moved or damaged since ingest): "
            "listed in that format's manifest.json under `failed`.\n" if failed else "")
    return ("\n## Training formats\n\nWritten from the rows above, with the audio inside (mono; `windows`: one "
            "sample per 30 s window, the last padded with silence as the model pads it). A format is complete "
            "once its `manifest.json` exists.\n\n"
            "| format | where | audio | samples / entries | size | how to load |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n" + note)
