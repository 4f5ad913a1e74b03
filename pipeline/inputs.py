"""Turn `--input` into the list of sources a run ingests.

IN is a folder (searched recursively for audio extensions), a glob, a single
audio file, or a manifest (.csv / .jsonl / .json / .parquet with a `path`
column; relative paths are relative to the manifest). Local paths and fsspec
URLs both work. Sources come back sorted and unique, so `--limit N` always picks
the same N.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import PurePosixPath

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


class InputError(ValueError):
    """An --input that names nothing usable; the message says why."""


@dataclass
class Discovery:
    sources: list[str]
    ignored: list[str] = field(default_factory=list)  # files skipped for their extension
    kind: str = "folder"


def bundled_examples() -> str:
    return str(resources.files("mfpipe.examples"))


def _url(fs: fsspec.AbstractFileSystem, path: str, original: str) -> str:
    if "://" not in original:
        return path
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return path if "://" in path else f"{protocol}://{path}"


def _has_audio_extension(path: str, extensions: list[str]) -> bool:
    return PurePosixPath(path).suffix.lower() in {e.lower() for e in extensions}


def _hidden(path: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(path).parts[-1:])


def _read_manifest(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    suffix = PurePosixPath(path).suffix.lower()
    with fs.open(path, "rb") as fh:
        if suffix == ".parquet":
            table = pq.read_table(fh)
        elif suffix == ".csv":
            table = pacsv.read_csv(fh)
        else:
            text = fh.read().decode("utf-8")
            if suffix == ".json" and text.lstrip().startswith("["):
                rows = json.loads(text)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            table = pa.Table.from_pylist(rows)
    if "path" not in table.column_names:
        raise InputError(f"manifest {path} has no `path` column (columns: {', '.join(table.column_names)})")
    values = [v for v in table["path"].to_pylist() if v not in (None, "")]
    base = PurePosixPath(path).parent
    return [v if ("://" in v or v.startswith("/")) else str(base / v) for v in values]


def discover(input_spec: str | None, extensions: list[str]) -> Discovery:
    spec = input_spec or bundled_examples()
    fs, path = fsspec.core.url_to_fs(spec)
    if any(ch in spec for ch in "*?["):
        matches = sorted(p for p in fs.glob(path) if fs.isfile(p))
        if not matches:
            raise InputError(f"no files match {spec}")
        return Discovery(sorted({_url(fs, m, spec) for m in matches}), kind="glob")
    if not fs.exists(path):
        raise InputError(f"input not found: {spec}")
    if fs.isdir(path):
        found = sorted(p for p in fs.find(path) if not _hidden(p))
        audio = [p for p in found if _has_audio_extension(p, extensions)]
        # The bundled folder also holds its recipe and truth files: not worth a mention.
        ignored = [p for p in found if not _has_audio_extension(p, extensions)] if input_spec else []
        if not audio:
            raise InputError(f"no audio files ({', '.join(extensions)}) under {spec}")
        return Discovery([_url(fs, p, spec) for p in audio], [_url(fs, p, spec) for p in ignored])
    if PurePosixPath(path).suffix.lower() in MANIFEST_SUFFIXES:
        listed = _read_manifest(fs, path)
        if not listed:
            raise InputError(f"manifest {spec} lists no paths")
        # Manifest rows are inputs by declaration: each one is accounted for, even if missing.
        return Discovery(sorted({_url(fs, p, spec) for p in listed}), kind="manifest")
    return Discovery([_url(fs, path, spec)], kind="file")
