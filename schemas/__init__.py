"""Pydantic records: the single source of truth for every Parquet table."""

from .arrow import arrow_schema, to_table
from .common import ModelRef, PromptRef, Provenance, Record, Reject, SongRecord, ToolVersion, utc_now
from .ingest import IngestRecord

__all__ = [
    "IngestRecord",
    "ModelRef",
    "PromptRef",
    "Provenance",
    "Record",
    "Reject",
    "SongRecord",
    "ToolVersion",
    "arrow_schema",
    "to_table",
    "utc_now",
]
