"""Lhotse Shar: `data/cuts.<seq>.jsonl.gz` + `data/recording.<seq>.tar`, written by lhotse's `SharWriter`.

One cut per song or window (id = the sample key), its recording in the tar, and one supervision per item:
the text is the training target (the caption, the answer, or the MF-Think `<think>…</think><answer>…</answer>`
text), the span the item's time scope gives (else the whole cut), and the question, options, skill, table and
scope in the supervision's `custom`. The cut's `custom` holds the song's facts and the provenance.
Lhotse encodes the audio itself (libsndfile), from the lossless FLAC this export hands it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..schemas.export import AudioSample
from .audio_export import AudioPlan, Format

ONE_SHARD = 10**9  # SharWriter's shard size: each of our shards is one Shar shard, numbered by shard_offset


class LhotseSharShard:
    def __init__(self, staging: Path, seq: int, plan: AudioPlan):
        from lhotse.shar import SharWriter

        self.staging = staging
        self.seq = seq
        self.writer = SharWriter(str(staging), fields={"recording": plan.codec}, shard_size=ONE_SHARD,
                                 shard_offset=seq)
        self.writer.__enter__()

    def add(self, sample: AudioSample, audio: bytes) -> None:
        self.writer.write(sample_cut(sample, audio))

    def finish(self) -> list[str]:
        self.writer.close()
        # The recording first: readers find a shard by its cuts file.
        names = [f"recording.{self.seq:06d}.tar", f"cuts.{self.seq:06d}.jsonl.gz"]
        return [n for n in names if (self.staging / n).exists()]


def sample_cut(sample: AudioSample, audio: bytes):
    from lhotse import Recording, SupervisionSegment

    recording = Recording.from_bytes(audio, recording_id=sample.key)
    cut = recording.to_cut()
    cut.supervisions = [
        SupervisionSegment(id=f"{sample.key}/{item.id}", recording_id=sample.key,
                           start=item.start if item.start is not None else 0.0,
                           duration=(item.end - item.start) if item.start is not None else cut.duration,
                           channel=0, text=item.text or item.answer,
                           custom={"item_id": item.id, "table": item.table, "kind": item.kind,
                                   "skill": item.skill, "question": item.question, "options": item.options,
                                   "answer": item.answer, "scope": item.scope})
        for item in sample.items
    ]
    facts = sample.model_dump(mode="json", exclude={"items"})
    cut.custom = {k: facts[k] for k in ("song_id", "window", "start_s", "end_s", "audio_s", "song", "provenance")}
    return cut


class LhotseShar(Format):
    name = "lhotse-shar"
    shard = LhotseSharShard
    lossless_input = True  # SharWriter encodes to the export's codec itself

    def readme(self, manifest: dict[str, Any]) -> str:
        return f"""# mfpipe training export: Lhotse Shar

{manifest['samples']} cuts ({manifest['audio']['mode']}) of {manifest['songs']} songs in {manifest['shards']}
Shar shards under `data/` (`cuts.NNNNNN.jsonl.gz` + `recording.NNNNNN.tar`), {manifest['bytes'] / 2**20:.1f} MB,
audio {manifest['audio']['codec']} at {manifest['audio']['sample_rate']} Hz mono. One supervision per item:
its text is the training target, its span the item's window(s) when it names a time, else the whole cut;
`custom` has the question, options, skill, table (`mf_skills` / `mf_think`) and scope. The cut's `custom`
has the song's facts (MIR, metadata) and provenance.

```python
from lhotse import CutSet
cuts = CutSet.from_shar(in_dir="data")
for cut in cuts:
    audio = cut.load_audio()
    for sup in cut.supervisions:
        print(sup.custom["question"], "->", sup.text)
```

Complete once `manifest.json` exists; `_progress/` holds one commit record per shard.
"""
