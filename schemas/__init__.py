"""Pydantic records: the single source of truth for every Parquet table."""

from .arrow import arrow_schema, to_table
from .caption import CaptionRecord, CaptionWindow
from .common import LlmUsage, ModelRef, PromptRef, Provenance, Record, Reject, RunInfo, SongRecord, ToolVersion, utc_now
from .costs import SongCost
from .filter import FilterRecord, ItemJudgement, QaJudgement
from .ingest import ClipFingerprint, FingerprintMatch, IngestRecord
from .lyrics import LyricsRecord, Word
from .mir import PITCH_CLASSES, ChordSpan, MirRecord, SongSection
from .think import Chain, ChainStep, ThinkRecord

__all__ = [
    "SongCost",
    "PITCH_CLASSES",
    "CaptionRecord",
    "Chain",
    "ChainStep",
    "FilterRecord",
    "ItemJudgement",
    "QaJudgement",
    "ThinkRecord",
    "CaptionWindow",
    "ChordSpan",
    "ClipFingerprint",
    "FingerprintMatch",
    "LyricsRecord",
    "MirRecord",
    "Word",
    "IngestRecord",
    "LlmUsage",
    "ModelRef",
    "PromptRef",
    "Provenance",
    "Record",
    "Reject",
    "RunInfo",
    "SongRecord",
    "SongSection",
    "ToolVersion",
    "arrow_schema",
    "to_table",
    "utc_now",
]
