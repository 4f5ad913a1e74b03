"""The output folder: stage datasets, rejects, run records, resume keys.

Layout under OUT (a local path or an fsspec URL):

    OUT/<stage>/part-<run>-<seq>.parquet     one row per song, the stage's record schema
    OUT/rejects/<stage>/part-<run>-<seq>.parquet   inputs the stage could not handle
    OUT/_runs/<run>/config.yaml, summary.json      what each run was told and did

Shards appear atomically. On a local (POSIX) folder: written under a hidden
temporary name, then renamed (a reader never sees half a file; a killed run
leaves only a hidden temporary that the next run removes). Names starting with
"." or "_" are skipped by pyarrow, DuckDB globs on `*.parquet` and `datasets`.

On an object store (s3://, gs://, any non-local fsspec filesystem) a rename is a
copy plus a delete, not atomic, so shards are written then committed:

    OUT/<stage>/part-<run>-<seq>.parquet               one PUT, under its final name
    OUT/<stage>/_committed/part-<run>-<seq>.parquet.json   then its commit record (one PUT)

A shard belongs to the dataset only once its commit record exists: mfpipe's own
readers (resume, downstream stages) list both and trust committed shards only.
A run killed between the two PUTs leaves an uncommitted shard; the next run
removes it (and any record whose shard is gone) before it writes anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

REJECTS = "rejects"
RUNS = "_runs"
TMP_PREFIX = ".tmp-"
COMMITTED = "_committed"  # object stores: one commit record per shard, in each shard folder
SHARD_GLOB = "part-*.parquet"


class OutputLockedError(RuntimeError):
    pass


class ShardWriter:
    """Buffers rows and writes bounded Parquet shards atomically.

    A shard is flushed when it reaches `max_rows` rows or `max_bytes` bytes, or
    when its oldest row has waited `flush_seconds` (so a killed run loses at most
    that much finished work).
    """

    def __init__(self, store: "OutputStore", directory: str, schema: pa.Schema, run_id: str,
                 max_rows: int, max_bytes: int, flush_seconds: float):
        self.store = store
        self.directory = directory
        self.schema = schema
        self.run_id = run_id
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.flush_seconds = flush_seconds
        self._buffer: list[pa.Table] = []
        self._rows = 0
        self._bytes = 0
        self._since: float | None = None
        self._seq = 0
        self.rows_written = 0
        self.files: list[str] = []

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            self.maybe_flush()
            return
        table = table.cast(self.schema) if table.schema != self.schema else table
        # Split a large incoming table so no shard exceeds max_rows.
        offset = 0
        while offset < table.num_rows:
            take = min(self.max_rows - self._rows, table.num_rows - offset)
            part = table.slice(offset, take)
            offset += take
            self._buffer.append(part)
            self._rows += part.num_rows
            self._bytes += part.nbytes
            if self._since is None:
                self._since = time.monotonic()
            if self._rows >= self.max_rows or self._bytes >= self.max_bytes:
                self.flush()
        self.maybe_flush()

    def maybe_flush(self) -> None:
        if self._since is not None and time.monotonic() - self._since >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        table = pa.concat_tables(self._buffer)
        name = f"part-{self.run_id}-{self._seq:05d}.parquet"
        self._seq += 1
        final = self.store.write_table_atomic(self.directory, name, table)
        self.files.append(final)
        self.rows_written += table.num_rows
        self._buffer, self._rows, self._bytes, self._since = [], 0, 0, None

    def close(self) -> None:
        self.flush()


class OutputStore:
    def __init__(self, url: str | os.PathLike[str]):
        self.url = str(url)
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    # ------------------------------------------------------------ paths
    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def stage_dir(self, stage: str) -> str:
        return self.join(stage)

    def rejects_dir(self, stage: str) -> str:
        return self.join(REJECTS, stage)

    def uri(self, path: str) -> str:
        """A path of this store as a URL other processes (Ray workers, DuckDB) can open."""
        if self.local:
            return path
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
        return f"{protocol}://{path}"

    # ------------------------------------------------------------ reading
    def shards(self, directory: str) -> list[str]:
        """The shards of a folder that belong to the dataset (on object stores: committed ones)."""
        if self.local:
            if not self.fs.exists(directory):
                return []
            return sorted(self.fs.glob(f"{directory}/{SHARD_GLOB}"))
        parts, records = self._remote_listing(directory)
        return sorted(path for name, path in parts.items() if name in records)

    def _remote_listing(self, directory: str) -> tuple[dict[str, str], dict[str, str]]:
        """(shard name → path, shard name → commit-record path) of one object-store folder."""
        self.fs.invalidate_cache(directory)  # another process may have written since
        try:
            found = self.fs.find(directory)
        except FileNotFoundError:
            return {}, {}
        parts: dict[str, str] = {}
        records: dict[str, str] = {}
        for path in found:
            parent, _, name = path.rstrip("/").rpartition("/")
            if parent == directory and fnmatch.fnmatch(name, SHARD_GLOB):
                parts[name] = path
            elif parent == f"{directory}/{COMMITTED}" and name.endswith(".json"):
                records[name[: -len(".json")]] = path
        return parts, records

    def count_rows(self, files: list[str]) -> int:
        """Rows in these shards, from the Parquet footers alone."""
        total = 0
        for f in files:
            with self.fs.open(f, "rb") as fh:
                total += pq.ParquetFile(fh).metadata.num_rows
        return total

    def has_output(self, stage: str) -> bool:
        return bool(self.shards(self.stage_dir(stage)))

    def read(self, directory: str, columns: list[str] | None = None,
             schema: pa.Schema | None = None) -> pa.Table:
        files = self.shards(directory)
        if not files:
            if schema is None:
                return pa.table({c: pa.array([], pa.string()) for c in columns or []})
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        tables = [pq.read_table(f, columns=columns, filesystem=self.fs, schema=schema) for f in files]
        return pa.concat_tables(tables, promote_options="default")

    def keys(self, directory: str, column: str, where: tuple[str, Any] | None = None) -> set[str]:
        """The distinct values of one column over all shards (resume reads only this)."""
        files = self.shards(directory)
        cols = [column] + ([where[0]] if where else [])
        out: set[str] = set()
        for f in files:
            t = pq.read_table(f, columns=cols, filesystem=self.fs)
            if where:
                mask = pa.compute.equal(t[where[0]].fill_null(False), where[1])
                t = t.filter(mask)
            out.update(v for v in t[column].to_pylist() if v is not None)
        return out

    # ------------------------------------------------------------ writing
    def writer(self, directory: str, schema: pa.Schema, run_id: str, *, max_rows: int,
               max_mb: float, flush_seconds: float) -> ShardWriter:
        self.fs.makedirs(directory, exist_ok=True)
        return ShardWriter(self, directory, schema, run_id, max_rows, int(max_mb * 2**20), flush_seconds)

    def write_table_atomic(self, directory: str, name: str, table: pa.Table) -> str:
        final = f"{directory}/{name}"
        tmp = f"{directory}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}"
        if self.local:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb+") as fh:  # the rename must not outrun the data
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        else:
            # Object stores: no atomic rename. PUT the shard under its final name, then
            # PUT its commit record; readers trust only committed shards.
            buffer = io.BytesIO()
            pq.write_table(table, buffer, compression="zstd")
            data = buffer.getvalue()
            self.fs.pipe_file(final, data)
            record = {"shard": name, "rows": table.num_rows, "bytes": len(data),
                      "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            self.fs.pipe_file(f"{directory}/{COMMITTED}/{name}.json", json.dumps(record).encode())
        return final

    def remove_stale_temporaries(self) -> int:
        """What a killed run left: hidden temporaries (local folders), uncommitted shards and
        orphaned commit records (object stores). Called at the start of a run, before any write."""
        if self.local:
            stale = self.fs.glob(f"{self.root}/**/{TMP_PREFIX}*")
        else:
            stale = []
            for directory in self._shard_dirs():
                parts, records = self._remote_listing(directory)
                stale += [path for name, path in parts.items() if name not in records]
                stale += [path for name, path in records.items() if name not in parts]
        if stale:
            self.fs.rm(stale)
        return len(stale)

    def _shard_dirs(self) -> list[str]:
        """Folders that hold shards: OUT/<stage>/ and OUT/rejects/<stage>/."""
        self.fs.invalidate_cache(self.root)
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return []
        dirs = set()
        for path in found:
            parent, _, name = path.rpartition("/")
            if parent.endswith(f"/{COMMITTED}"):
                parent = parent[: -len(COMMITTED) - 1]
            elif not fnmatch.fnmatch(name, SHARD_GLOB):
                continue
            dirs.add(parent)
        return sorted(dirs)

    def clear(self, stage: str) -> None:
        for directory in (self.stage_dir(stage), self.rejects_dir(stage)):
            if self.local:
                for path in self.shards(directory):
                    self.fs.rm(path)
                continue
            # Records first: a clear cut short leaves uncommitted shards, never a
            # commit record that outlives its shard.
            parts, records = self._remote_listing(directory)
            for batch in (list(records.values()), list(parts.values())):
                if batch:
                    self.fs.rm(batch)

    def save_run(self, run_id: str, files: dict[str, str]) -> None:
        directory = self.join(RUNS, run_id)
        self.fs.makedirs(directory, exist_ok=True)
        for name, text in files.items():
            with self.fs.open(f"{directory}/{name}", "w") as fh:
                fh.write(text)

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.fs.glob(self.join(RUNS, "*", "summary.json"))):
            with self.fs.open(path) as fh:
                out.append(json.load(fh))
        return out

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per output folder (local folders; object stores are not locked: run one
        writer per remote output at a time)."""
        if not self.local:
            yield
            return
        path = Path(self.root) / ".mfpipe.lock"
        with open(path, "w") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputLockedError(f"another mfpipe run is writing to {self.root}") from None
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
