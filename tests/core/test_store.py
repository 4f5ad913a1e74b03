"""Shards: bounded, atomic, readable; stale temporaries removed; one writer per folder."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mfpipe.store import OutputLockedError, OutputStore

SCHEMA = pa.schema([("song_id", pa.string()), ("x", pa.int64())])


def _rows(a: int, b: int) -> pa.Table:
    return pa.table({"song_id": [f"s{i}" for i in range(a, b)], "x": list(range(a, b))}, schema=SCHEMA)


def test_shards_are_bounded_and_complete(tmp_path):
    store = OutputStore(tmp_path)
    w = store.writer(store.stage_dir("st"), SCHEMA, "run1", max_rows=4, max_mb=64, flush_seconds=3600)
    w.write(_rows(0, 3))
    assert store.shards(store.stage_dir("st")) == []  # buffered, below every bound
    w.write(_rows(3, 10))
    w.close()
    files = store.shards(store.stage_dir("st"))
    assert [pq.read_metadata(f).num_rows for f in files] == [4, 4, 2]
    assert store.read(store.stage_dir("st"))["x"].to_pylist() == list(range(10))
    assert store.keys(store.stage_dir("st"), "song_id") == {f"s{i}" for i in range(10)}
    assert store.count_rows(files) == 10


def test_time_bound_flush(tmp_path):
    store = OutputStore(tmp_path)
    w = store.writer(store.stage_dir("st"), SCHEMA, "run1", max_rows=1000, max_mb=64, flush_seconds=0)
    w.write(_rows(0, 2))
    assert len(store.shards(store.stage_dir("st"))) == 1


def test_first_rows_at_once_then_shards_fill(tmp_path):
    store = OutputStore(tmp_path)
    w = store.writer(store.stage_dir("st"), SCHEMA, "run1", max_rows=1000, max_mb=64, flush_seconds=3600,
                     first_at_once=True)
    w.write(_rows(0, 1))
    assert len(store.shards(store.stage_dir("st"))) == 1  # the first song goes downstream at once
    w.write(_rows(1, 5))
    assert len(store.shards(store.stage_dir("st"))) == 1  # later ones wait for a bound
    w.close()
    assert store.count_rows(store.shards(store.stage_dir("st"))) == 5


def test_stale_temporaries_are_removed_and_never_read(tmp_path):
    store = OutputStore(tmp_path)
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / ".tmp-abcd-part-x-00000.parquet").write_bytes(b"half a file")
    assert store.shards(store.stage_dir("st")) == []
    assert store.remove_stale_temporaries() == 1
    assert not list(tmp_path.rglob(".tmp-*"))


def test_one_writer_per_output_folder(tmp_path):
    a, b = OutputStore(tmp_path), OutputStore(tmp_path)
    with a.lock():
        with pytest.raises(OutputLockedError, match="another mfpipe run"):
            with b.lock():
                pass
    with b.lock():  # released
        pass
