"""hf-audio: Parquet shards with the audio embedded, loadable by `datasets` with no code from us.

`data/mf_skills/part-<seq>.parquet` and `data/mf_think/part-<seq>.parquet`: one row per sample (song or
window) that has items of that table, the sample's audio stored once per table in `audio`, a struct
{bytes, path} that `datasets` reads as an `Audio` feature. The folder's README.md declares the two configs
(`data_files`) and, in `dataset_info`, every column's type with `audio` as `dtype: audio` at the export's
sample rate; each Parquet file also carries the `Audio` type in its `huggingface` schema metadata, so
`load_dataset("parquet", data_files=...)` decodes it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..schemas import arrow_schema
from ..schemas.export import AudioSample, HfAudioRow
from .audio_export import DATA, EXTENSIONS, TABLES, AudioPlan, Format

# A row group is written once a table has buffered this much audio or this many rows (`datasets` writes
# 100 rows per row group for audio): what bounds the memory of an hf-audio shard.
ROW_GROUP_BYTES = 32 * 2**20
ROW_GROUP_ROWS = 100


def hf_schema(sample_rate: int) -> pa.Schema:
    """The rows' Arrow schema, with the `Audio` feature in the metadata `datasets` reads."""
    schema = arrow_schema(HfAudioRow)
    info = {"info": {"features": {"audio": {"_type": "Audio", "sampling_rate": sample_rate}}}}
    return schema.with_metadata({**schema.metadata, b"huggingface": json.dumps(info).encode()})


_DTYPES = {pa.float64(): "float64", pa.float32(): "float32", pa.bool_(): "bool"}


def _spec(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_struct(t):
        return {"struct": [feature(f.name, f.type) for f in t]}
    if pa.types.is_list(t):
        inner = _spec(t.value_type)
        return {"list": inner.get("dtype", inner.get("struct", inner))}
    return {"dtype": _DTYPES.get(t, str(t))}


def feature(name: str, t: pa.DataType) -> dict[str, Any]:
    return {"name": name, **_spec(t)}


def yaml_features(schema: pa.Schema, sample_rate: int) -> list[dict[str, Any]]:
    """`dataset_info.features` of a dataset card: every column, `audio` as the `Audio` feature."""
    return [{"name": f.name, "dtype": {"audio": {"sampling_rate": sample_rate}}} if f.name == "audio"
            else feature(f.name, f.type) for f in schema]


class _PlainDumper(yaml.SafeDumper):
    """Each config's features written out in full (no YAML anchors: not every card reader follows them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class HfAudioShard:
    def __init__(self, staging: Path, seq: int, plan: AudioPlan):
        self.staging = staging
        self.name = f"part-{seq:06d}.parquet"
        self.schema = hf_schema(plan.sample_rate)
        self.ext = EXTENSIONS[plan.codec]
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self.buffered: dict[str, int] = dict.fromkeys(TABLES, 0)

    def add(self, sample: AudioSample, audio: bytes) -> None:
        base = sample.model_dump(mode="python", exclude={"items"})
        for table in TABLES:
            items = [i.model_dump(mode="python") for i in sample.items if i.table == table]
            if not items:
                continue
            self.rows[table].append({**base, "items": items,
                                     "audio": {"bytes": audio, "path": f"{sample.key}.{self.ext}"}})
            self.buffered[table] += len(audio)
            if self.buffered[table] >= ROW_GROUP_BYTES or len(self.rows[table]) >= ROW_GROUP_ROWS:
                self._flush(table)

    def _flush(self, table: str) -> None:
        if not self.rows[table]:
            return
        if table not in self.writers:
            (self.staging / table).mkdir(parents=True, exist_ok=True)
            # Audio does not compress further; zstd is for the text columns.
            self.writers[table] = pq.ParquetWriter(self.staging / table / self.name, self.schema,
                                                   compression="zstd")
        self.writers[table].write_table(pa.Table.from_pylist(self.rows[table], schema=self.schema))
        self.rows[table], self.buffered[table] = [], 0

    def finish(self) -> list[str]:
        for table in TABLES:
            self._flush(table)
        for writer in self.writers.values():
            writer.close()
        return [f"{table}/{self.name}" for table in TABLES if table in self.writers]


class HfAudio(Format):
    name = "hf-audio"
    shard = HfAudioShard

    def readme(self, manifest: dict[str, Any]) -> str:
        rate = manifest["audio"]["sample_rate"]
        features = yaml_features(hf_schema(rate), rate)
        tables = [t for t in TABLES if any(f.startswith(f"{DATA}/{t}/") for f in manifest["files"])]
        header = {
            "pretty_name": "mfpipe MF-Skills / MF-Think export with audio",
            "tags": ["music", "audio-text", "mfpipe"],
            "configs": [{"config_name": t, "data_files": [{"split": "train", "path": f"{DATA}/{t}/*.parquet"}],
                         **({"default": True} if i == 0 else {})} for i, t in enumerate(tables)],
            "dataset_info": [{"config_name": t, "features": features} for t in tables],
        }
        front = yaml.dump(header, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=1000)
        first = tables[0] if tables else "mf_skills"
        return f"""---
{front}---

# mfpipe MF-Skills / MF-Think export with audio

{manifest['samples']} samples ({manifest['audio']['mode']}) of {manifest['songs']} songs,
{manifest['bytes'] / 2**20:.1f} MB in {len(manifest['files'])} Parquet files. Configs: {', '.join(tables) or 'none'}:
one row per sample (a song, or one 30 s window of it) that has items of that table, in `items` (each with
its `id` in the Parquet export, `scope` and time span). `audio` is {manifest['audio']['codec']} at {rate} Hz,
mono, declared above as an `Audio` feature.

```python
import datasets
ds = datasets.load_dataset("path/to/this/folder", "{first}", split="train")
row = ds[0]
samples = row["audio"].get_all_samples()   # decoded by datasets (torchcodec): .data, .sample_rate
for item in row["items"]:
    print(item["question"], "->", item["answer"])
```

Counts, models, licences and provenance: the export's own dataset card (`OUT/export/README.md`).
Complete once `manifest.json` exists; `_progress/` holds one commit record per shard.
"""
