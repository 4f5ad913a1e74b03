"""The exported corpora: MF-Skills (captions and QA) and MF-Think (checked reasoning chains).

One row per training item, self-contained: the item, its song's structured
metadata and MIR facts, what the quality filter said, and the provenance of
every stage output that went into it. `OUT/export/mf_skills/` and
`OUT/export/mf_think/` hold these rows with exactly the Arrow schemas derived
from the classes below (`mfpipe.schemas.arrow_schema`), run after run.
"""

from __future__ import annotations

from pydantic import Field

from .common import Provenance, Record
from .mir import ChordSpan, SongSection
from .synthesize import SongMetadata
from .think import ChainStep

# How a row passed the quality filter.
#   passed:     the filter judged it and kept it
#   unfiltered: the filter stage has not run on this output at all (the card says so)
#   reviewed:   the filter dropped it or never judged it, and a person kept or edited it (`mfpipe review`)
QUALITY_STATUSES = ("passed", "unfiltered", "reviewed")


class MirFacts(Record):
    """The song's measured facts (the beat and downbeat lists stay in OUT/mir)."""

    bpm: float | None = None
    meter: int | None = None  # beats per bar
    time_signature: str | None = None  # "4/4", "3/4", "6/8"
    key: str | None = None
    mode: str | None = None
    key_strength: float | None = None
    loudness_lufs: float | None = None
    chords: list[ChordSpan] = Field(default_factory=list)  # chord changes ("N" dropped, repeats merged)
    sections: list[SongSection] = Field(default_factory=list)  # the measured form (mir stage)


class Quality(Record):
    status: str  # one of QUALITY_STATUSES
    score: float | None = None  # the audio-LM's 1-10 judgement
    p_yes: float | None = None  # the audio-LM's probability that the text is true of the audio
    flags: list[str] = Field(default_factory=list)  # MIR consistency flags on this item
    reasons: list[str] = Field(default_factory=list)


class SongFacts(Record):
    """What every row of one song carries: where the audio is and what is known about it."""

    source: str
    duration_s: float | None = None
    processed_s: float | None = None  # what the models heard (songs are cut at 20 min)
    metadata: SongMetadata | None = None
    mir: MirFacts | None = None


class SkillsRow(Record):
    """MF-Skills: one kept caption or QA item."""

    id: str  # "<song_id>:caption" or "<song_id>:qa:<index in the synthesize row>"
    song_id: str
    kind: str  # "caption" | "qa"
    skill: str  # "caption" or one of the five QA skills
    question: str  # QA: the question; caption: the instruction it answers
    options: list[str] = Field(default_factory=list)  # multiple choice (empty: open-ended)
    answer: str  # caption text or the reference answer (multiple choice: one of the options)
    answer_words: int
    quality: Quality
    song: SongFacts
    provenance: list[Provenance] = Field(default_factory=list)  # export, synthesize, filter, mir, ...


class ThinkRow(Record):
    """MF-Think: one kept or rewritten reasoning chain."""

    id: str  # "<song_id>:think:<qa_index or chain position>"
    song_id: str
    skill: str
    question: str
    options: list[str] = Field(default_factory=list)
    text: str  # the training target: <think>…</think><answer>…</answer>
    answer: str
    reference_answer: str | None = None
    action: str  # "kept" | "rewritten"
    rewrites: int = 0
    steps: list[ChainStep] = Field(default_factory=list)
    step_error_rate: float
    first_error_rate: float
    selected_because: str
    qa_index: int | None = None
    song: SongFacts
    provenance: list[Provenance] = Field(default_factory=list)


# ------------------------------------------------------------------ training exports with the audio inside
# (`mfpipe export --format hf-audio|webdataset|lhotse-shar`, `mfpipe.curate.audio_export`)

# Where an item sits in a sample:
#   time: it names a time (m:ss) in the song; start/end: the 30 s window(s) holding it, in the sample's time
#   song: it is about the whole song (no time named); start/end: None
ITEM_SCOPES = ("time", "song")


class SampleItem(Record):
    """One training item that goes with a sample's audio: an MF-Skills caption or QA item, or an MF-Think
    chain. `id` is the row id of the Parquet export (join there for quality, steps and per-row provenance)."""

    id: str
    table: str  # "mf_skills" | "mf_think"
    kind: str  # "caption" | "qa" | "think"
    skill: str
    question: str
    options: list[str] = Field(default_factory=list)
    answer: str  # caption text, reference answer, or the chain's final answer
    text: str | None = None  # MF-Think: the training target <think>…</think><answer>…</answer>
    scope: str  # one of ITEM_SCOPES
    start: float | None = None  # seconds from the start of the sample's audio
    end: float | None = None


class AudioSample(Record):
    """One sample of a training export: one song (`--audio full`) or one 30 s window of it (`--audio windows`),
    with its items, the song's facts and provenance. The WebDataset `KEY.json`, the Lhotse cut's custom data
    and the hf-audio row (plus its `audio` column) are this record."""

    key: str  # unique and stable: "<song_id>" or "<song_id>_w<window, 2 digits>"
    song_id: str
    window: int | None = None  # which 30 s window of the song (windows), None: the analysed span (full)
    start_s: float  # where the sample's audio starts in the song
    end_s: float  # where the song's audio in it ends
    audio_s: float  # seconds of the song in the sample
    duration_s: float  # length of the encoded audio (a padded last window: the full window length)
    sample_rate: int
    codec: str  # "flac" | "opus"
    items: list[SampleItem] = Field(default_factory=list)
    song: SongFacts
    provenance: list[Provenance] = Field(default_factory=list)  # every stage output behind the items, once


Binary = bytes  # (the field below is named `bytes`, as `datasets` names it, which hides the type in the class)


class AudioBlob(Record):
    """The Hugging Face `Audio` feature's storage: the encoded file and a name. Both fields nullable, as
    `datasets` declares them, so the Parquet schema metadata's `Audio` type matches the column exactly."""

    bytes: Binary | None = None
    path: str | None = None


class HfAudioRow(AudioSample):
    """A row of the hf-audio export: the sample and its audio (decoded by `datasets` as an `Audio` feature)."""

    audio: AudioBlob | None = None  # always set; nullable only to match the `Audio` feature's Arrow type


class FailedSong(Record):
    """A song of the text export whose audio could not be used (moved, deleted, damaged since ingest)."""

    song_id: str
    source: str
    error: str


class AudioShardCommit(Record):
    """`<export>/_progress/<seq>.json`: a shard of a training export is part of it once this record exists.
    Songs go in a fixed order (`position`), so a resumed export starts after the last committed song."""

    seq: int
    files: list[str]  # under data/
    songs: int
    samples: int
    items: int
    audio_s: float
    bytes: int
    last_bucket: int  # the position of the shard's last song in the export's order: (bucket, song_id)
    last_song_id: str
    failed: list[FailedSong] = Field(default_factory=list)  # songs whose audio could not be used
    fingerprint: str  # the export settings; a record of other settings is not resumed from
    committed_at: str
