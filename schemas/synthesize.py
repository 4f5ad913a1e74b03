"""LLM synthesis: the rich caption, structured metadata and five-skill QA of one song.

Two kinds of models live here:
- the record written to `OUT/synthesize/` (`SynthesizeRecord`);
- the drafts the LLM is asked to return. Their JSON schemas go to the server as
  `response_format` (structured output), so every string has a `maxLength` and
  every list a `maxItems`: a small model cannot run away, and a large one cannot
  pad. Sizes that depend on the config (caption length, questions per skill)
  are built by the functions at the bottom.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Literal

from pydantic import Field, create_model, field_validator

from .common import LlmUsage, Record, SongRecord

# The five MF-Skills question types (Music Flamingo paper, section 3).
SKILLS = ("temporal", "attribute", "harmony_theory", "lyric_vocal", "comparative_structural")

Skill = Literal["temporal", "attribute", "harmony_theory", "lyric_vocal", "comparative_structural"]

# ------------------------------------------------------------------ the record


class QaItem(Record):
    skill: Skill
    question: str
    answer: str  # multiple choice: exactly one of `options`
    options: list[str] = Field(default_factory=list)  # empty: an open-ended question


class SongMetadata(Record):
    """Structured fields for rewards and checks (the paper's GRPO metadata categories)."""

    genre: str | None = None
    bpm: float | None = None
    key: str | None = None  # "C major", "F# minor"
    meter: str | None = None  # "4/4", "3/4", "6/8"
    structure: list[str] = Field(default_factory=list)  # sections in order: intro, verse, chorus, ...
    instruments: list[str] = Field(default_factory=list)
    vocal_character: str | None = None
    lyric_themes: list[str] = Field(default_factory=list)
    theory: str | None = None  # harmony and progressions
    mix_notes: str | None = None
    dynamics: str | None = None


class ConsistencyFlag(Record):
    """A statement in the generated text that contradicts the MIR facts."""

    field: str  # where: caption, metadata.bpm, qa[3].answer, ...
    check: str  # bpm | key | mode | meter | chord
    stated: str  # what the text says
    expected: str  # what MIR measured
    message: str


class GateEvent(Record):
    """An item the checks (`mfpipe.lint`) flagged, and what synthesize's gate did with it."""

    field: str  # caption, qa/<skill>[i]
    check: str  # leaky_question | tool_mention | unsupported_identity | ungrounded_time | distractor | ...
    outcome: str  # repaired (the one repair request fixed it) | dropped (the item, or the caption's sentence)
    message: str


class SynthesizeRecord(SongRecord):
    caption: str
    caption_words: int
    metadata: SongMetadata
    qa: list[QaItem] = Field(default_factory=list)
    flags: list[ConsistencyFlag] = Field(default_factory=list)  # contradictions with MIR (empty: none found)
    inputs: list[str] = Field(default_factory=list)  # upstream outputs this song had: caption, mir, lyrics
    usage: LlmUsage = Field(default_factory=LlmUsage)
    gated: list[GateEvent] = Field(default_factory=list)  # items the checks flagged: repaired or dropped


# ------------------------------------------------------------------ what the LLM returns

Short = Annotated[str, Field(min_length=1, max_length=80)]
Sentence = Annotated[str, Field(min_length=1, max_length=300)]
Label = Annotated[str, Field(min_length=1, max_length=40)]  # a section or instrument name
Remark = Annotated[str, Field(min_length=1, max_length=200)]


class MetadataDraft(Record):
    """bpm, key and meter are null where nothing measured them: a model must not invent them (they become
    reward truth). The free-text fields are keyword phrases, as the structured-thinking reward reads them."""

    genre: Short
    bpm: float | None = Field(ge=20, le=400)
    key: str | None = Field(pattern=r"^[A-G](#|b)? (major|minor)$", max_length=8)
    meter: str | None = Field(pattern=r"^(2|3|4|5|6|7|9|12)/(2|4|8)$", max_length=4)
    structure: list[Label] = Field(max_length=12)
    instruments: list[Label] = Field(max_length=10)
    vocal_character: Remark
    lyric_themes: list[Label] = Field(max_length=6)
    theory: Sentence
    mix_notes: Remark
    dynamics: Remark


class OpenQaDraft(Record):
    question: Sentence
    answer: Sentence


class ChoiceQaDraft(Record):
    question: Sentence
    options: list[Short]
    correct: str = Field(pattern=r"^[A-F]$", max_length=1)  # letter of the right option

    @property
    def distinct(self) -> bool:
        folded = [o.strip().casefold() for o in self.options]
        return len(set(folded)) == len(folded)


class StrictChoiceQaDraft(ChoiceQaDraft):
    """What a request asks for: the options must differ (JSON schema cannot say so, so this
    check runs after decoding and a failure earns the model one repair request)."""

    @field_validator("options")
    @classmethod
    def _distinct(cls, options: list[str]) -> list[str]:
        folded = [o.strip().casefold() for o in options]
        if len(set(folded)) != len(folded):
            raise ValueError("the options must all be different")
        return options


# Characters per word used to turn a word count into the schema's minLength (English prose runs
# ~5.5 with the space; a little under, so a caption of enough words is never refused by its length).
CHARS_PER_WORD = 5


@cache
def caption_draft(max_chars: int, min_words: int = 1) -> type[Record]:
    """{"caption": str} between `min_words` words (the schema's minLength, so the server's grammar
    holds the model to it) and `max_chars` characters."""

    def enough_words(value: str) -> str:
        words = len(value.split())
        if words < min_words:
            raise ValueError(f"the caption has {words} words; it must have at least {min_words} (it is too short)")
        return value

    return create_model(
        "CaptionDraft", __base__=Record,
        caption=(str, Field(min_length=max(1, min(min_words * CHARS_PER_WORD, max_chars)), max_length=max_chars)),
        __validators__={"enough_words": field_validator("caption")(enough_words)},
    )


@cache
def qa_draft(n_open: int, n_choice: int, n_options: int, strict: bool = True, answer_chars: int = 300) -> type[Record]:
    """{"open": [exactly n_open], "multiple_choice": [exactly n_choice]} for one skill.

    Exact counts and the option count are in the schema, so the server's grammar
    makes the model produce them; the letter of the right option is limited to
    the letters that exist. `strict=False`: the same schema without the
    different-options check, to salvage the good items of an answer that failed it.
    """
    letters = "ABCDEF"[:n_options]
    choice = create_model(
        f"ChoiceQa{n_options}", __base__=StrictChoiceQaDraft if strict else ChoiceQaDraft,
        options=(list[Short], Field(min_length=n_options, max_length=n_options)),
        correct=(str, Field(pattern=f"^[{letters}]$", max_length=1)),
    )
    open_item = OpenQaDraft if answer_chars == 300 else create_model(
        f"OpenQa{answer_chars}", __base__=OpenQaDraft,
        answer=(str, Field(min_length=1, max_length=answer_chars)))
    fields: dict = {}
    if n_open:
        fields["open"] = (list[open_item], Field(min_length=n_open, max_length=n_open))
    if n_choice:
        fields["multiple_choice"] = (list[choice], Field(min_length=n_choice, max_length=n_choice))
    return create_model(f"QaDraft{n_open}x{n_choice}", __base__=Record, **fields)
