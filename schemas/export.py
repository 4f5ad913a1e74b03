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
QUALITY_STATUSES = ("passed", "unfiltered")


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
