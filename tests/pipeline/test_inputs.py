"""--input: folders, globs, manifests (csv / jsonl / parquet), single files, clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mfpipe.pipeline.inputs import InputError, bundled_examples, discover
from mfpipe.stages.ingest import IngestConfig

EXT = [".wav", ".flac", ".mp3"]


@pytest.fixture
def tree(tmp_path):
    for rel in ("a.wav", "sub/b.FLAC", "sub/deeper/c.mp3", "sub/readme.txt", ".hidden.wav"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return tmp_path


def test_folder_is_searched_recursively_and_sorted(tree):
    found = discover(str(tree), EXT)
    assert [p.replace(str(tree) + "/", "") for p in found.sources] == ["a.wav", "sub/b.FLAC", "sub/deeper/c.mp3"]
    assert [p.replace(str(tree) + "/", "") for p in found.ignored] == ["sub/readme.txt"]


def test_glob(tree):
    found = discover(str(tree / "sub" / "**" / "*.mp3"), EXT)
    assert [p.rsplit("/", 1)[-1] for p in found.sources] == ["c.mp3"]
    with pytest.raises(InputError, match="no files match"):
        discover(str(tree / "*.opus"), EXT)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_manifests_resolve_relative_paths(tree, kind):
    paths = ["a.wav", "sub/b.FLAC", str(tree / "missing.wav")]
    manifest = tree / f"list.{kind}"
    if kind == "csv":
        manifest.write_text("path,title\n" + "\n".join(f"{p},t" for p in paths) + "\n")
    elif kind == "jsonl":
        manifest.write_text("\n".join(json.dumps({"path": p}) for p in paths) + "\n")
    else:
        pq.write_table(pa.table({"path": paths}), manifest)
    found = discover(str(manifest), EXT)
    # Listed rows are inputs by declaration, the missing one too (ingest rejects it as missing).
    assert sorted(found.sources) == sorted([str(tree / "a.wav"), str(tree / "sub/b.FLAC"), str(tree / "missing.wav")])


def test_manifest_without_path_column(tree):
    (tree / "bad.csv").write_text("file\na.wav\n")
    with pytest.raises(InputError, match="no `path` column"):
        discover(str(tree / "bad.csv"), EXT)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        discover(str(tmp_path / "nope"), EXT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no audio files"):
        discover(str(tmp_path / "empty"), EXT)


def test_fsspec_urls_and_bundled_default(tree):
    found = discover(f"file://{tree}", EXT)
    assert found.sources[0].startswith("file://") and found.sources[0].endswith("a.wav")
    examples = discover(None, IngestConfig().extensions)
    assert len(examples.sources) == 4 and all(s.startswith(bundled_examples()) for s in examples.sources)
