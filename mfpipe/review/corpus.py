"""What the review app reads from the output folder: a song index, and one song's rows.

The index (`CorpusIndex`) holds one small summary per song: where its rows
are (stage → shard), its rejects, genre, MIR flags, the filter's verdict per
item, its chains' actions and every item's key and text hash. It reads only
the columns it needs, and texts are hashed and let go, so it stays small. It is
rebuilt when the folder's shards change (a pipeline run still going, another
reviewer's decisions do not count: those are read separately).

`song_rows` reads one song's rows, stage by stage, from the one shard the index
names (only that song's row, only the columns the page shows).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..curate import facts as folder_facts
from ..store import OutputStore
from .items import Item, chain_items, synthesize_items

STAGES = ("ingest", "caption", "mir", "lyrics", "synthesize", "filter", "think")
# What the index reads of each stage (dotted: one field of a struct column).
INDEX_COLUMNS = {
    "ingest": ["song_id", "source", "duration_s", "sample_rate", "subtype"],
    "caption": ["song_id", "source"],
    "mir": ["song_id", "source"],
    "lyrics": ["song_id", "source"],
    "synthesize": ["song_id", "source", "caption", "qa", "flags", "metadata.genre", "provenance.created_at"],
    "filter": ["song_id", "source", "caption", "qa", "provenance.created_at"],
    "think": ["song_id", "source", "chains", "provenance.created_at"],
}
# What a song's page shows of each stage.
PAGE_COLUMNS = {
    "ingest": ["song_id", "source", "duration_s", "processed_s", "truncated", "sample_rate", "channels", "format",
               "subtype", "n_windows", "decoder", "warnings"],
    "caption": ["song_id", "windows"],
    "mir": ["song_id", "bpm", "beats", "downbeats", "meter", "key", "mode", "chords", "sections"],
    "lyrics": ["song_id", "has_vocals", "vocal_regions", "language", "outcome", "text", "words"],
    "synthesize": ["song_id", "caption", "metadata", "qa", "flags", "provenance"],
    "filter": ["song_id", "caption", "qa", "provenance"],
    "think": ["song_id", "chains", "considered", "dropped", "provenance"],
}
VERDICTS = ("kept", "dropped", "unjudged")
BUILD_ORDER = ("ingest", "caption", "mir", "lyrics", "filter", "think", "synthesize")


def read_columns(store: OutputStore, path: str, columns: list[str], song_ids: Iterable[str] | None = None) -> pa.Table:
    """The columns of one shard that it has (an older output may lack some), optionally only some songs."""
    names = set(store.read_schema(path).names)
    present = [c for c in columns if c.split(".", 1)[0] in names]
    filters = None if song_ids is None else [("song_id", "in", list(song_ids))]
    return pq.read_table(path, columns=present, filesystem=store.fs, filters=filters)


def fresh(judged_at: Any, text_at: Any) -> bool:
    """A verdict (filter, think) made no earlier than the text it is about (export's rule)."""
    return not (judged_at and text_at and judged_at < text_at)


@dataclass
class ItemSummary:
    key: str
    kind: str  # caption | qa | chain
    skill: str
    sha256: str
    verdict: str | None  # the filter's: kept | dropped | unjudged (None: chains, which the filter does not see)


@dataclass
class SongSummary:
    song_id: str | None
    source: str
    shards: dict[str, str] = field(default_factory=dict)  # stage → the shard holding its row
    duration_s: float | None = None
    sample_rate: int | None = None
    subtype: str | None = None  # the sample encoding ingest found (WAV: whether a browser plays it)
    rejects: list[dict[str, Any]] = field(default_factory=list)  # stage, error, message, retryable
    genre: str | None = None
    flags: list[str] = field(default_factory=list)  # the checks synthesize flagged (bpm, key, ...)
    judged: str | None = None  # yes | no | stale: the filter's verdict on the current text (None: no text)
    chain_actions: list[str] = field(default_factory=list)
    items: list[ItemSummary] = field(default_factory=list)

    @property
    def name(self) -> str:
        return posixpath.basename(self.source.rstrip("/")) or self.source

    @property
    def has_audio(self) -> bool:
        return "ingest" in self.shards


def _filter_verdicts(row: dict[str, Any] | None, items: list[Item]) -> list[str]:
    if row is None:
        return ["unjudged"] * len(items)
    by_index = {j["index"]: j for j in row.get("qa") or []}
    out = []
    for item in items:
        j = row.get("caption") if item.kind == "caption" else by_index.get(item.index)
        out.append("unjudged" if j is None else "kept" if j.get("keep") else "dropped")
    return out


class CorpusIndex:
    """The songs of one output folder, summarised (see the module doc)."""

    def __init__(self, store: OutputStore):
        self.store = store
        self.signature: tuple = ()
        self.songs: dict[str, SongSummary] = {}  # song_id (or "source:<path>" for rejects without one)
        self.order: list[str] = []

    def _listing(self) -> tuple:
        shards = tuple(tuple(self.store.shards(self.store.stage_dir(s))) for s in STAGES)
        rejects = tuple(tuple(self.store.shards(self.store.rejects_dir(s))) for s in STAGES)
        return shards + rejects

    def refresh(self) -> CorpusIndex:
        """Rebuild when the folder's shards changed since the last build."""
        listing = self._listing()
        if listing != self.signature:
            self._build(listing)
        return self

    def _song(self, song_id: str, source: str) -> SongSummary:
        song = self.songs.get(song_id)
        if song is None:
            song = self.songs[song_id] = SongSummary(song_id=song_id, source=source)
        return song

    def _rows(self, stage: str, listing: tuple) -> Iterable[tuple[str, dict[str, Any]]]:
        for path in listing[STAGES.index(stage)]:
            for row in read_columns(self.store, path, INDEX_COLUMNS[stage]).to_pylist():
                yield path, row

    def _build(self, listing: tuple) -> None:
        self.songs = {}
        judged: dict[str, tuple[Any, dict[str, Any]]] = {}  # song_id → (created_at, compact filter row)
        chains: dict[str, tuple[Any, list[ItemSummary]]] = {}  # song_id → (created_at, its chains)
        for stage in BUILD_ORDER:  # filter and think before synthesize: its items get their verdicts at once
            for path, row in self._rows(stage, listing):
                sid = row["song_id"]
                song = self._song(sid, row["source"])
                song.shards[stage] = path
                if stage == "ingest":
                    song.source, song.duration_s = row["source"], row["duration_s"]
                    song.sample_rate, song.subtype = row.get("sample_rate"), row.get("subtype")
                elif stage == "filter":
                    judged[sid] = (row.get("created_at"), {"caption": row.get("caption"), "qa": row.get("qa")})
                elif stage == "think":
                    song.chain_actions = [c.get("action") for c in row.get("chains") or []]
                    chains[sid] = (row.get("created_at"),
                                   [ItemSummary(c.key, "chain", c.skill, c.sha256, None) for c in chain_items(row)])
                elif stage == "synthesize":
                    self._summarise(song, row, judged.get(sid), chains.get(sid))
        self._add_rejects()
        self.order = sorted(self.songs, key=lambda k: (self.songs[k].name.casefold(), k))
        self.signature = listing

    @staticmethod
    def _summarise(song: SongSummary, synth: dict[str, Any], judged: tuple | None, chains: tuple | None) -> None:
        """A song's synthesize facts, its items with the filter's verdicts, and its chains (when fresh)."""
        song.genre = ((synth.get("genre") or "").strip().lower()) or None
        song.flags = sorted({f["check"] for f in synth.get("flags") or []})
        items = synthesize_items(synth)
        stale = judged is not None and not fresh(judged[0], synth.get("created_at"))
        song.judged = "no" if judged is None else "stale" if stale else "yes"
        verdicts = _filter_verdicts(None if judged is None or stale else judged[1], items)
        song.items = [ItemSummary(i.key, i.kind, i.skill, i.sha256, v) for i, v in zip(items, verdicts)]
        if chains is not None and fresh(chains[0], synth.get("created_at")):
            song.items += chains[1]

    def _add_rejects(self) -> None:
        rejects = folder_facts.reject_rows(self.store)
        if rejects.num_rows == 0:
            return
        for r in rejects.select(["source", "song_id", "stage", "error", "message", "retryable"]).to_pylist():
            key = r["song_id"] or f"source:{r['source']}"
            song = self.songs.get(key) or self._song(key, r["source"])
            if song.song_id == key and not r["song_id"]:
                song.song_id = None
            song.rejects.append({k: r[k] for k in ("stage", "error", "message", "retryable")})

    def shas(self, song_id: str) -> dict[str, str]:
        song = self.songs.get(song_id)
        return {i.key: i.sha256 for i in song.items} if song else {}

    def all_shas(self) -> dict[str, str]:
        return {i.key: i.sha256 for song in self.songs.values() for i in song.items}

    def search(self, text: str) -> set[str]:
        """Song ids whose file name, caption, QA text, chains or lyrics contain `text` (any case)."""
        found = {sid for sid, s in self.songs.items() if text.casefold() in s.source.casefold()}
        fields = {"synthesize": ["caption", "qa"], "lyrics": ["text"], "think": ["chains"]}
        for stage, columns in fields.items():
            for path in self.store.shards(self.store.stage_dir(stage)):
                table = read_columns(self.store, path, ["song_id", *columns])
                mask = None
                for name in columns:
                    if name not in table.column_names:
                        continue
                    hit = _contains(table[name], text)
                    mask = hit if mask is None else pc.or_(mask, hit)
                if mask is not None:
                    found.update(table.filter(mask)["song_id"].to_pylist())
        return found


def _contains(column: pa.ChunkedArray, text: str) -> pa.ChunkedArray:
    """Row mask: any string inside this (possibly nested) column contains `text`, ignoring case."""
    strings = _strings(column.combine_chunks())
    if not strings:
        return pa.chunked_array([pa.array([False] * len(column))])
    mask = None
    for parents, values in strings:
        hit = pc.fill_null(pc.match_substring(values, text, ignore_case=True), False)
        rows = _to_rows(hit, parents, len(column))
        mask = rows if mask is None else pc.or_(mask, rows)
    return pa.chunked_array([mask])


def _strings(array: pa.Array, parents: tuple = ()) -> list[tuple[tuple, pa.Array]]:
    """Every string leaf of a nested array, with the list arrays above it (to map hits back to rows)."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return [(parents, array)]
    if pa.types.is_struct(kind):
        return [s for i in range(kind.num_fields) for s in _strings(array.field(i), parents)]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _strings(array.flatten(), (*parents, array))
    return []


def _to_rows(hit: pa.Array, parents: tuple, n_rows: int) -> pa.Array:
    """Fold a mask over flattened list values back to one value per row (any hit in the row)."""
    for lists in reversed(parents):
        owner = pc.list_parent_indices(lists)
        hits = pc.filter(owner, hit)
        mask = [False] * len(lists)
        for i in pc.unique(hits).to_pylist():
            mask[i] = True
        hit = pa.array(mask)
    return hit if len(hit) == n_rows else pa.array([False] * n_rows)


def song_rows(store: OutputStore, song: SongSummary) -> dict[str, dict[str, Any]]:
    """One song's row of every stage that has one (the page's columns only)."""
    out: dict[str, dict[str, Any]] = {}
    for stage, path in song.shards.items():
        rows = read_columns(store, path, PAGE_COLUMNS[stage], [song.song_id]).to_pylist()
        if rows:
            out[stage] = rows[-1]
    return out
