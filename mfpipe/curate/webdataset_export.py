"""WebDataset tar shards: `data/shard-<seq>.tar`, one sample per song or window.

Each sample is two members with the same key (song_id-based, stable: `<song_id>` or `<song_id>_wNN`):
`KEY.flac` (or `KEY.opus`) and `KEY.json`, an `AudioSample` (items, the song's facts, provenance). Written
with webdataset's own `TarWriter` (fixed mtime, so a rerun writes the same bytes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..schemas.export import AudioSample
from .audio_export import EXTENSIONS, AudioPlan, Format


class WebDatasetShard:
    def __init__(self, staging: Path, seq: int, plan: AudioPlan):
        import webdataset as wds

        self.name = f"shard-{seq:06d}.tar"
        self.ext = EXTENSIONS[plan.codec]
        self.writer = wds.TarWriter(str(staging / self.name), encoder=False, mtime=0.0)

    def add(self, sample: AudioSample, audio: bytes) -> None:
        self.writer.write({"__key__": sample.key, self.ext: audio, "json": sample.model_dump_json().encode()})

    def finish(self) -> list[str]:
        self.writer.close()
        return [self.name]


class WebDataset(Format):
    name = "webdataset"
    shard = WebDatasetShard

    def readme(self, manifest: dict[str, Any]) -> str:
        ext = EXTENSIONS[manifest["audio"]["codec"]]
        last = max(manifest["shards"] - 1, 0)
        return f"""# mfpipe training export: WebDataset

{manifest['samples']} samples ({manifest['audio']['mode']}) of {manifest['songs']} songs in {manifest['shards']} tar
shards (`data/shard-000000.tar` …), {manifest['bytes'] / 2**20:.1f} MB. Each sample is `KEY.{ext}`
({manifest['audio']['codec']}, {manifest['audio']['sample_rate']} Hz, mono) and `KEY.json`: the sample's
items (captions, QA, reasoning chains, with `scope` and their time span), the song's MIR facts and metadata,
and the provenance of every stage output behind it (`mfpipe.schemas.export.AudioSample`). Keys are
`<song_id>` (full songs) or `<song_id>_wNN` (30 s windows).

```python
import io, json, soundfile, webdataset as wds
for sample in wds.WebDataset("data/shard-{{000000..{last:06d}}}.tar", shardshuffle=False):
    audio, rate = soundfile.read(io.BytesIO(sample["{ext}"]))
    record = json.loads(sample["json"])
```

Complete once `manifest.json` exists (it lists every shard); `_progress/` holds one commit record per shard.
"""
