"""Near-duplicate groups and evaluation-clip containment, from Chromaprint fingerprints.

Candidate search is an inverted index of sub-fingerprint values (`SubprintIndex`),
never all pairs: each indexed value points at (item, position); a query looks up
its own values and every hit votes for (item, offset = its position - the query's).
Copies of one recording share many exact 32-bit values at one offset, unrelated
music almost none, so the few items with the most votes at one offset are the
only ones compared bit by bit (`fingerprint.align_near`). Values so common that
they say nothing (the sub-fingerprint of silence) are skipped at query time.

Near-duplicates (`NearDuplicates`): songs are decided one at a time against the
songs kept so far. A song whose best match has a bit-error rate of at most
`max_ber` over an overlap covering `min_overlap` of the longer song is a copy:
the better of the two by the keep order is kept (lossless over lossy, higher
bitrate, longer, then the one seen first: `keep`), the other is left out and
names it. Groups are stars around their kept song, not chains, so two different
songs that both contain the same sample never merge.

Containment (`ClipScreen`): an evaluation clip is inside a song when it lines up
with a BER of at most `max_ber` over `min_overlap` of the shorter of the two.
Every clip is indexed at several phases of Chromaprint's frame grid (a clip is
cut at any sample), and the song's values are looked up against them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field

from .config import Section
from .fingerprint import ITEM_S, Alignment, align_exhaustive, align_near

KeepCriterion = Literal["lossless", "bitrate", "duration", "first_seen"]
KEEP_ORDER: list[KeepCriterion] = ["lossless", "bitrate", "duration", "first_seen"]
# Sample encodings that lose nothing (libsndfile subtypes and ffmpeg codec names).
LOSSLESS = ("PCM_", "FLOAT", "DOUBLE", "ALAC", "pcm_", "flac", "alac", "wavpack", "ape", "tta", "mlp", "truehd")


class NearDuplicateSettings(Section):
    """Near-duplicate groups: the same recording under other bytes (re-encoded, trimmed, louder, resampled)."""

    enabled: bool = Field(True, description="Group near-duplicates at ingest; the copies that are not kept "
                          "are left out as `near_duplicate` (needs ingest.fingerprint).")
    max_ber: float = Field(0.08, gt=0, lt=0.5, description="Largest bit-error rate between two fingerprints of "
                           "one recording. Measured on renders: re-encodes, +2 dB, 22.05 kHz, a 3 s trim: <= 0.031; "
                           "two renders of one progression, tempo and arrangement with other melodies: >= 0.11; "
                           "unrelated songs: 0.3-0.45.")
    min_overlap: float = Field(0.8, gt=0, le=1, description="The aligned overlap must cover this share of the "
                               "longer song (a 30 s excerpt of a 4-minute song is not a copy of it).")
    min_seconds: float = Field(5.0, gt=0, description="Shortest overlap that makes two songs copies (a few "
                               "seconds of fingerprint say too little).")
    keep: list[KeepCriterion] = Field(default_factory=lambda: list(KEEP_ORDER), description="Which copy of a group "
                                      "is kept, first criterion first: lossless over lossy, higher bitrate (file "
                                      "bytes per second, to 1 kbit/s), longer (to 1 s), first seen. The one seen "
                                      "first always breaks remaining ties.")
    sample: int = Field(4, ge=1, description="The index holds one sub-fingerprint value in `sample` (chosen by "
                        "value, so copies keep the same ones): memory and query time / sample.")


class ClipMatchSettings(Section):
    """When a song contains an evaluation clip (ingest.exclude)."""

    max_ber: float = Field(0.08, gt=0, lt=0.5, description="Largest bit-error rate between the clip and the part of "
                           "the song it lines up with (a re-encoded 10 s clip cut from a render: ~0.02 at its best "
                           "grid phase).")
    min_overlap: float = Field(0.9, gt=0, le=1, description="Share of the shorter of clip and song the alignment "
                               "must cover.")
    min_seconds: float = Field(5.0, gt=0, description="Shortest alignment that counts (clips or songs shorter "
                               "than this are never matched).")
    phases: int = Field(4, ge=1, le=16, description="Offsets within one Chromaprint frame step at which each clip "
                        "is fingerprinted.")


# ------------------------------------------------------------------ the inverted index


def _sampled(values: np.ndarray, sample: int) -> np.ndarray:
    """Positions of the values kept when one in `sample` is indexed, chosen by the value itself."""
    if sample <= 1:
        return np.arange(len(values))
    mixed = (values.astype(np.uint64) * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    return np.flatnonzero((mixed >> np.uint64(16)) % np.uint64(sample) == 0)


@dataclass
class _Segment:
    keys: np.ndarray  # uint32, sorted
    items: np.ndarray  # int32
    pos: np.ndarray  # int32

    @classmethod
    def merged(cls, parts: list[_Segment]) -> _Segment:
        keys = np.concatenate([p.keys for p in parts])
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], np.concatenate([p.items for p in parts])[order],
                   np.concatenate([p.pos for p in parts])[order])


@dataclass
class Candidate:
    item: int
    offset: int  # the query's value at i sits on the item's value at i + offset
    votes: int


class SubprintIndex:
    """Sub-fingerprint value → (item, position), for candidate search without all pairs.

    Items are added one by one (songs arrive while a run streams) into small sorted segments that
    are merged as they grow (sizes halve from the first: O(log n) segments, each posting moved
    O(log n) times); `remove` hides an item from later queries."""

    def __init__(self, sample: int = 1, max_postings: int = 1000):
        self.sample = sample
        self.max_postings = max_postings  # a value more common than this names no recording
        self.segments: list[_Segment] = []
        self.removed: set[int] = set()

    def add(self, item: int, values: np.ndarray) -> None:
        positions = _sampled(values, self.sample)
        if not len(positions):
            return
        keys = values[positions]
        order = np.argsort(keys, kind="stable")
        self.segments.append(_Segment(keys[order], np.full(len(keys), item, np.int32),
                                      positions[order].astype(np.int32)))
        while len(self.segments) > 1 and len(self.segments[-2].keys) <= 2 * len(self.segments[-1].keys):
            last = self.segments.pop()
            self.segments[-1] = _Segment.merged([self.segments[-1], last])

    def remove(self, item: int) -> None:
        self.removed.add(item)

    def postings(self) -> int:
        return sum(len(s.keys) for s in self.segments)

    def query(self, values: np.ndarray, top: int = 8, min_votes: int = 2) -> list[Candidate]:
        """The items with the most votes at one offset (at least `min_votes`), best first."""
        positions = _sampled(values, self.sample)
        keys = values[positions]
        hit_items, hit_offsets = [], []
        for seg in self.segments:
            lo = np.searchsorted(seg.keys, keys, "left")
            counts = np.searchsorted(seg.keys, keys, "right") - lo
            counts[counts > self.max_postings] = 0
            total = int(counts.sum())
            if not total:
                continue
            # The postings of every looked-up value, flattened: start of its run + rank within it.
            starts = np.repeat(lo, counts)
            within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            hits = starts + within
            hit_items.append(seg.items[hits])
            hit_offsets.append(seg.pos[hits] - np.repeat(positions, counts).astype(np.int32))
        if not hit_items:
            return []
        items = np.concatenate(hit_items).astype(np.int64)
        offsets = np.concatenate(hit_offsets).astype(np.int64)
        pairs, votes = np.unique(items * (1 << 20) + (offsets + (1 << 19)), return_counts=True)
        found: dict[int, Candidate] = {}
        for pair, n in zip(pairs.tolist(), votes.tolist()):
            item = pair >> 20
            if n < min_votes or item in self.removed:
                continue
            if item not in found or n > found[item].votes:
                found[item] = Candidate(item, (pair & ((1 << 20) - 1)) - (1 << 19), n)
        return sorted(found.values(), key=lambda c: (-c.votes, c.item))[:top]


# ------------------------------------------------------------------ the keep order


@dataclass(frozen=True)
class Copy:
    """What the keep order looks at, for one song."""

    format: str
    subtype: str | None
    size_bytes: int
    duration_s: float

    @property
    def lossless(self) -> bool:
        return (self.subtype or "").startswith(LOSSLESS) and not (self.subtype or "").startswith(("pcm_alaw",
                                                                                                     "pcm_mulaw"))

    @property
    def kbps(self) -> int:
        return round(self.size_bytes * 8 / max(self.duration_s, 1e-6) / 1000)

    def rank(self, order: list[KeepCriterion], seen: int) -> tuple:
        """Larger is better; `seen` (arrival number) breaks remaining ties, earlier first."""
        values = {"lossless": int(self.lossless), "bitrate": self.kbps, "duration": round(self.duration_s),
                  "first_seen": -seen}
        return (*(values[c] for c in order), -seen)


def deciding_criterion(a: tuple, b: tuple, order: list[KeepCriterion]) -> str:
    """The first criterion on which two ranks differ (for the message)."""
    for name, x, y in zip([*order, "first_seen"], a, b):
        if x != y:
            return name.replace("_", " ")
    return "first seen"


# ------------------------------------------------------------------ near-duplicate decisions


@dataclass
class Song:
    """One song as the deciders see it: its id, fingerprint and what the keep order reads."""

    key: str
    fingerprint: np.ndarray
    copy: Copy | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome for one song: kept (maybe in place of an earlier one), or a copy of a kept one."""

    song: str
    kept: bool
    other: str | None = None  # kept: the song it replaces (now a copy of it); else the song kept instead
    alignment: Alignment | None = None  # of this song against `other`
    criterion: str | None = None  # what decided between the two


@dataclass
class NearDuplicates:
    """Decides songs one at a time against the kept ones; `exhaustive=True` compares every pair
    at every offset instead of asking the index (the reference for tests and the benchmark)."""

    settings: NearDuplicateSettings
    exhaustive: bool = False
    kept: dict[int, Song] = field(default_factory=dict)  # item → song
    ids: dict[str, int] = field(default_factory=dict)  # song key → item (kept or not)
    ranks: dict[int, tuple] = field(default_factory=dict)
    index: SubprintIndex = field(init=False)

    def __post_init__(self) -> None:
        self.index = SubprintIndex(sample=self.settings.sample)

    def __contains__(self, key: str) -> bool:
        return key in self.ids

    def keep(self, song: Song) -> None:
        """Add a song known to be kept (loading what earlier runs decided)."""
        item = self._item(song)
        self.kept[item] = song
        self.index.add(item, song.fingerprint)

    def decide(self, song: Song) -> Decision:
        item = self._item(song)
        match = self._best_match(song)
        if match is None:
            self.keep(song)
            return Decision(song.key, kept=True)
        other_item, alignment = match
        other = self.kept[other_item]
        order = self.settings.keep
        mine, theirs = self.ranks[item], self.ranks[other_item]
        criterion = deciding_criterion(mine, theirs, order)
        if mine > theirs:
            del self.kept[other_item]
            self.index.remove(other_item)
            self.keep(song)
            return Decision(song.key, kept=True, other=other.key, alignment=alignment, criterion=criterion)
        return Decision(song.key, kept=False, other=other.key, alignment=alignment, criterion=criterion)

    def _item(self, song: Song) -> int:
        item = self.ids.setdefault(song.key, len(self.ids))
        copy = song.copy or Copy("", None, 0, len(song.fingerprint) * ITEM_S)
        self.ranks[item] = copy.rank(self.settings.keep, item)
        return item

    def _best_match(self, song: Song) -> tuple[int, Alignment] | None:
        """The kept song this one copies (lowest BER among those that qualify), or None."""
        fp = song.fingerprint
        if not len(fp):
            return None
        found = []
        for item, offset in self._candidates(fp):
            other = self.kept[item].fingerprint
            longer = max(len(fp), len(other))
            alignment = (align_near(fp, other, offset) if offset is not None
                         else align_exhaustive(fp, other, max(1, round(self.settings.min_overlap * longer))))
            if (alignment is not None and alignment.ber <= self.settings.max_ber
                    and alignment.overlap >= self.settings.min_overlap * longer
                    and alignment.overlap_s >= self.settings.min_seconds):
                found.append((alignment.ber, item, alignment))
        if not found:
            return None
        _, item, alignment = min(found, key=lambda f: (f[0], f[1]))
        return item, alignment

    def _candidates(self, fp: np.ndarray) -> list[tuple[int, int | None]]:
        """(kept item, offset to check around; None: every offset)."""
        if self.exhaustive:
            return [(item, None) for item in self.kept]
        return [(c.item, c.offset) for c in self.index.query(fp) if c.item in self.kept]


# ------------------------------------------------------------------ evaluation clips


@dataclass(frozen=True)
class Clip:
    key: str  # the clip's sha256
    source: str
    excluded_set: str
    phases: tuple[np.ndarray, ...]  # its fingerprint at each grid phase


@dataclass(frozen=True)
class Containment:
    clip: Clip
    alignment: Alignment  # of the song against the clip: the clip starts at -offset in the song

    @property
    def start_s(self) -> float:
        return -self.alignment.offset_s


class ClipScreen:
    """Which evaluation clip a song contains, if any (all clip phases in one index)."""

    def __init__(self, settings: ClipMatchSettings, clips: Iterable[Clip] = ()):
        self.settings = settings
        self.index = SubprintIndex(sample=1)
        self.entries: list[tuple[Clip, np.ndarray]] = []
        for clip in clips:
            self.add(clip)

    def __len__(self) -> int:
        return len({c.key for c, _ in self.entries})

    def add(self, clip: Clip) -> None:
        for phase in clip.phases:
            if len(phase):
                self.index.add(len(self.entries), phase)
                self.entries.append((clip, phase))

    def contained(self, fingerprint: np.ndarray) -> Containment | None:
        """The best-matching clip the song contains (lowest BER), or None."""
        if not len(fingerprint) or not self.entries:
            return None
        s = self.settings
        best: Containment | None = None
        for cand in self.index.query(fingerprint, top=16):
            clip, phase = self.entries[cand.item]
            alignment = align_near(fingerprint, phase, cand.offset)
            shorter = min(len(fingerprint), len(phase))
            if (alignment.ber <= s.max_ber and alignment.overlap >= s.min_overlap * shorter
                    and alignment.overlap_s >= s.min_seconds
                    and (best is None or alignment.ber < best.alignment.ber)):
                best = Containment(clip, alignment)
        return best
