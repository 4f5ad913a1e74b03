"""Object-store outputs: shards are PUT, then committed by a record; only committed shards count.

Run against fsspec's in-memory filesystem (fast, in-process) and against real s3:// URLs
served by a local S3-compatible server (moto) through s3fs.
"""

from __future__ import annotations

import json
import uuid

import pyarrow as pa
import pytest

from mfpipe.store import COMMITTED, OutputStore

SCHEMA = pa.schema([("song_id", pa.string()), ("x", pa.int64())])


def _rows(a: int, b: int) -> pa.Table:
    return pa.table({"song_id": [f"s{i}" for i in range(a, b)], "x": list(range(a, b))}, schema=SCHEMA)


@pytest.fixture(params=["memory", "s3"])
def remote_url(request):
    if request.param == "memory":
        url = f"memory://mfpipe-test-{uuid.uuid4().hex[:8]}/out"
        yield url
        return
    s3 = request.getfixturevalue("s3_server")
    mp = request.getfixturevalue("monkeypatch")
    for key, value in s3.env.items():
        mp.setenv(key, value)
    import s3fs

    bucket = f"mfpipe-test-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    yield f"s3://{bucket}/out"


def _write(store: OutputStore, rows: pa.Table, run: str = "run1", max_rows: int = 4) -> list[str]:
    w = store.writer(store.stage_dir("st"), SCHEMA, run, max_rows=max_rows, max_mb=64, flush_seconds=3600)
    w.write(rows)
    w.close()
    return w.files


def test_shards_are_committed_and_read_back(remote_url):
    store = OutputStore(remote_url)
    files = _write(store, _rows(0, 10))
    assert len(files) == 3
    assert store.shards(store.stage_dir("st")) == sorted(files)
    records = store.fs.find(f"{store.stage_dir('st')}/{COMMITTED}")
    assert sorted(r.rsplit("/", 1)[1] for r in records) == sorted(f.rsplit("/", 1)[1] + ".json" for f in files)
    assert store.read(store.stage_dir("st"))["x"].to_pylist() == list(range(10))
    assert store.keys(store.stage_dir("st"), "song_id") == {f"s{i}" for i in range(10)}


def test_a_shard_without_its_commit_record_never_counts_and_is_removed(remote_url, monkeypatch):
    store = OutputStore(remote_url)
    _write(store, _rows(0, 4))
    # The run dies between the shard's PUT and its commit record's PUT.
    real_pipe = store.fs.pipe_file

    def die_on_commit(path, data, **kw):
        if f"/{COMMITTED}/" in path:
            raise KeyboardInterrupt("killed")
        return real_pipe(path, data, **kw)

    monkeypatch.setattr(store.fs, "pipe_file", die_on_commit)
    with pytest.raises(KeyboardInterrupt):
        _write(store, _rows(4, 8), run="run2")
    monkeypatch.undo()
    directory = store.stage_dir("st")
    orphan = [p for p in store.fs.find(directory) if "run2" in p]
    assert len(orphan) == 1 and orphan[0].endswith(".parquet")  # whole, but uncommitted
    assert store.keys(directory, "song_id") == {f"s{i}" for i in range(4)}  # resume redoes s4..s7
    # A commit record whose shard is gone does not count either.
    store.fs.rm(store.shards(directory)[0])
    assert store.shards(directory) == []
    # The next run's start removes both leftovers, and nothing else.
    _write(store, _rows(10, 12), run="run3")
    fresh = OutputStore(remote_url)
    assert fresh.remove_stale_temporaries() == 2
    assert fresh.keys(directory, "song_id") == {"s10", "s11"}
    assert all(fresh.fs.exists(f"{directory}/{COMMITTED}/{p.rsplit('/', 1)[1]}.json")
               for p in fresh.fs.find(directory) if p.endswith(".parquet"))


def test_clear_removes_records_and_shards(remote_url):
    store = OutputStore(remote_url)
    _write(store, _rows(0, 6))
    store.clear("st")
    assert not store.fs.find(store.stage_dir("st"))
    assert not store.has_output("st")


def test_one_writer_per_output_folder_on_object_stores_too(remote_url):
    """A lease object with owner and expiry: a second run is refused while the first holds it, and may go
    once it is released, or once a killed run's lease has expired."""
    import json
    import time

    from mfpipe.store import LEASE, OutputLockedError

    first, second = OutputStore(remote_url), OutputStore(remote_url)
    with first.lock("run-a", lease_s=30):
        lease = json.loads(first.fs.cat_file(first.join(LEASE)))
        assert lease["run_id"] == "run-a" and lease["expires_at"] > time.time()
        with pytest.raises(OutputLockedError, match="run run-a"):
            with second.lock("run-b", lease_s=30):
                pass
    with second.lock("run-b", lease_s=30):  # released: the next run takes it
        pass
    assert not first.fs.exists(first.join(LEASE))
    # A run killed while holding it leaves a lease that blocks only until it expires.
    first.fs.pipe_file(first.join(LEASE), json.dumps({"run_id": "killed", "token": "x",
                                                      "expires_at": time.time() - 1}).encode())
    with second.lock("run-c", lease_s=30):
        assert json.loads(second.fs.cat_file(second.join(LEASE)))["run_id"] == "run-c"


@pytest.fixture
def s3_url(s3_server, monkeypatch):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    import s3fs

    bucket = f"mfpipe-test-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/out"


def test_two_runs_that_race_for_an_s3_lease_cannot_both_win(s3_url):
    """Both read "no lease" before either writes (the window a read-then-write lease leaves open): the
    create-only write lets exactly one of them take it."""
    from mfpipe.store import OutputLockedError

    first, second = OutputStore(s3_url), OutputStore(s3_url)
    assert first._read_lease(first.join("_lease.json")) is None  # both start from nothing
    real_read = second._read_lease
    second._read_lease = lambda path: None  # the second run's read happened before the first run's write
    with first.lock("run-a", lease_s=30):
        with pytest.raises(OutputLockedError, match="at the same moment"):
            with second.lock("run-b", lease_s=30):
                pass
        second._read_lease = real_read
        assert json.loads(first.fs.cat_file(first.join("_lease.json")))["run_id"] == "run-a"


def test_a_stalled_run_cannot_overwrite_its_successors_s3_lease(s3_url):
    """A run stalls past its lease; a successor takes the folder. When the stalled run wakes, its renewal
    (if-match on the ETag it knew) fails: it marks the lease lost and writes no more shards, and the
    successor's lease stands."""
    import time

    from mfpipe.store import OutputLockedError

    stalled = OutputStore(s3_url)
    with stalled.lock("stalled", lease_s=3):
        lease = stalled.join("_lease.json")
        successor = {"run_id": "successor", "token": "t2", "expires_at": time.time() + 600}
        stalled.fs.pipe_file(lease, json.dumps(successor).encode())  # what the successor wrote meanwhile
        deadline = time.time() + 10
        while not stalled.lease_lost.is_set() and time.time() < deadline:
            time.sleep(0.2)
        assert stalled.lease_lost.is_set()
        with pytest.raises(OutputLockedError, match="lost its lease"):
            _write(stalled, _rows(0, 2))
        assert json.loads(stalled.fs.cat_file(lease))["run_id"] == "successor"
    assert json.loads(stalled.fs.cat_file(lease))["run_id"] == "successor"  # not removed on the way out
