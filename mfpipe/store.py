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
import errno
import fcntl
import fnmatch
import io
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

REJECTS = "rejects"
RESOLVED = "_resolved"  # OUT/rejects/<stage>/_resolved/: rejects a later run made good (or superseded)
RUNS = "_runs"
COSTS = "_costs"  # OUT/_costs/<stage>/: what each song cost each stage, per run (schemas.SongCost)
LEASE = "_lease.json"  # object stores: which run writes this output folder, until when
TMP_PREFIX = ".tmp-"
COMMITTED = "_committed"  # object stores: one commit record per shard, in each shard folder
SHARD_GLOB = "part-*.parquet"


class OutputStoreError(RuntimeError):
    """The output folder cannot be written: full, read-only, no permission, or gone. Not a song's fault:
    the run stops (what committed stays committed) and says so in one line."""


# What the output folder itself can do wrong (a full disk, a quota, permissions, a read-only or vanished mount).
_STORE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.ENOENT,
                 errno.ENOTCONN, errno.ESTALE, errno.ENODEV, errno.ENXIO}


class OutputLockedError(RuntimeError):
    pass


class ShardWriter:
    """Buffers rows and writes bounded Parquet shards atomically.

    A shard is flushed when it reaches `max_rows` rows or `max_bytes` bytes, or
    when its oldest row has waited `flush_seconds` (so a killed run loses at most
    that much finished work). With `first_at_once`, the writer's first rows are
    committed as soon as they come (downstream stages that stream get the first
    songs without waiting; one small shard per run).
    """

    def __init__(self, store: OutputStore, directory: str, schema: pa.Schema, run_id: str,
                 max_rows: int, max_bytes: int, flush_seconds: float,
                 on_commit: Callable[[str, pa.Table], None] | None = None, first_at_once: bool = False):
        self.store = store
        self.first_at_once = first_at_once
        self.on_commit = on_commit  # called with (shard path, its rows) once the shard is committed
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
        if self._since is None:
            return
        if time.monotonic() - self._since >= self.flush_seconds or (self.first_at_once and not self.files):
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
        if self.on_commit is not None:
            self.on_commit(final, table)

    def close(self) -> None:
        self.flush()


class OutputStore:
    def __init__(self, url: str | os.PathLike[str]):
        self.url = str(url)
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = root.rstrip("/")
        self.lease_lost = threading.Event()  # object stores: a successor took our lease; we write no more
        with self.writing(self.root):
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

    def read_columns(self, directory: str, columns: list[str]) -> pa.Table:
        """Only these columns of a folder's shards (nothing else is read: wide columns such as fingerprints
        or provenance stay on disk); a column a shard of an older version lacks comes out null."""
        tables = []
        for f in self.shards(directory):
            have = set(self.read_schema(f).names)
            table = pq.read_table(f, columns=[c for c in columns if c in have], filesystem=self.fs)
            for c in columns:
                if c not in have:
                    table = table.append_column(c, pa.nulls(table.num_rows))
            tables.append(table.select(columns))
        if not tables:
            return pa.table({c: pa.array([], pa.null()) for c in columns})
        return pa.concat_tables(tables, promote_options="default")

    def keys(self, directory: str, column: str, where: tuple[str, Any] | None = None) -> set[str]:
        """The distinct values of one column over all shards (resume reads only this)."""
        files = self.shards(directory)
        cols = [column] + ([where[0]] if where else [])
        out: set[str] = set()
        for f in files:
            t = pq.read_table(f, columns=cols, filesystem=self.fs)
            if where:
                mask = pc.equal(t[where[0]].fill_null(False), where[1])
                t = t.filter(mask)
            out.update(v for v in t[column].to_pylist() if v is not None)
        return out

    # ------------------------------------------------------------ writing
    def read_schema(self, path: str) -> pa.Schema:
        with self.fs.open(path, "rb") as fh:
            return pq.ParquetFile(fh).schema_arrow

    def read_shard(self, path: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(path, columns=columns, filesystem=self.fs)

    def writer(self, directory: str, schema: pa.Schema, run_id: str, *, max_rows: int,
               max_mb: float, flush_seconds: float,
               on_commit: Callable[[str, pa.Table], None] | None = None, first_at_once: bool = False) -> ShardWriter:
        self.fs.makedirs(directory, exist_ok=True)
        return ShardWriter(self, directory, schema, run_id, max_rows, int(max_mb * 2**20), flush_seconds,
                           on_commit, first_at_once)

    @contextlib.contextmanager
    def writing(self, path: str) -> Iterator[None]:
        """Errors of the output folder itself (full, read-only, ...) become one `OutputStoreError` naming the
        folder, the file and the cause."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _STORE_ERRNOS:
                raise
            raise OutputStoreError(f"cannot write to the output folder {self.url}: {exc.strerror or exc} (while "
                                   f"writing {self.uri(path)}). Free the space or fix the folder, then run the same "
                                   f"command again: what was committed is kept.") from None

    def write_table_atomic(self, directory: str, name: str, table: pa.Table) -> str:
        if self.lease_lost.is_set():
            raise OutputLockedError(f"this run lost its lease on {self.url} to another run (it stalled longer "
                                    f"than the lease): it writes nothing more; the other run carries on")
        final = f"{directory}/{name}"
        tmp = f"{directory}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}"
        with self.writing(final):
            if self.local:
                try:
                    pq.write_table(table, tmp, compression="zstd")
                    with open(tmp, "rb+") as fh:  # the rename must not outrun the data
                        os.fsync(fh.fileno())
                    os.replace(tmp, final)
                except BaseException:
                    with contextlib.suppress(OSError):  # nothing half-written stays behind
                        os.remove(tmp)
                    raise
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

    def remove_shard(self, path: str) -> None:
        """Take one shard out of its dataset (object stores: its commit record first)."""
        if not self.local:
            directory, _, name = path.rpartition("/")
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(f"{directory}/{COMMITTED}/{name}.json")
        self.fs.rm(path)

    def clear(self, stage: str) -> None:
        for directory in (self.stage_dir(stage), self.rejects_dir(stage), f"{self.rejects_dir(stage)}/{RESOLVED}"):
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
        """The run's record files, each whole or not at all."""
        directory = self.join(RUNS, run_id)
        with self.writing(directory):
            self.fs.makedirs(directory, exist_ok=True)
            for name, text in files.items():
                path = f"{directory}/{name}"
                if not self.local:
                    self.fs.pipe_file(path, text.encode())
                    continue
                tmp = f"{directory}/{TMP_PREFIX}{name}"
                try:
                    Path(tmp).write_text(text)
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.remove(tmp)
                    raise

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.fs.glob(self.join(RUNS, "*", "summary.json"))):
            with self.fs.open(path) as fh:
                out.append(json.load(fh))
        return out

    # ------------------------------------------------------------ rejects made good
    def resolve_rejects(self, stage: str, key: str, run_id: str) -> int:
        """Move the rejects a later result made good out of the open rejects.

        A retryable reject is resolved when its unit (`key`: song_id, or source for ingest) now
        has a record in the stage, or a newer reject of the same stage (the retry failed again:
        only the newest one stays open). Non-retryable rejects are facts about the input and stay
        (think's dropped chains live beside the song's record). Resolved rows go to
        `rejects/<stage>/_resolved/` with `resolved_by` and `resolution`; the shards that held
        them are rewritten without them (new shard first, then the old one removed).
        Returns how many rejects were resolved."""
        directory = self.rejects_dir(stage)
        files = self.shards(directory)
        if not files:
            return 0
        done = self.keys(self.stage_dir(stage), key)
        tables = {f: self.read_shard(f) for f in files}
        newest: dict[str, Any] = {}
        for table in tables.values():
            for unit, created in zip(table[key].to_pylist(), table["created_at"].to_pylist()):
                if unit is not None and (unit not in newest or created > newest[unit]):
                    newest[unit] = created
        moved: list[pa.Table] = []
        for seq, (path, table) in enumerate(tables.items()):
            units, created, retry = (table[c].to_pylist() for c in (key, "created_at", "retryable"))
            why = [None if not r or u is None else "succeeded" if u in done else
                   "superseded" if c < newest[u] else None for u, c, r in zip(units, created, retry)]
            if not any(why):
                continue
            keep = pa.array([w is None for w in why])
            gone = table.filter(pc.invert(keep))
            moved.append(gone.append_column("resolution", pa.array([w for w in why if w], pa.string()))
                         .append_column("resolved_by", pa.array([run_id] * gone.num_rows, pa.string())))
            rest = table.filter(keep)
            if rest.num_rows:
                self.write_table_atomic(directory, f"part-{run_id}-resolved-{seq:05d}.parquet", rest)
            self.remove_shard(path)
        if moved:
            table = pa.concat_tables(moved, promote_options="default")
            self.fs.makedirs(f"{directory}/{RESOLVED}", exist_ok=True)
            self.write_table_atomic(f"{directory}/{RESOLVED}", f"part-{run_id}-{uuid.uuid4().hex[:6]}.parquet",
                                    table)
            return table.num_rows
        return 0

    # ------------------------------------------------------------ one writer at a time
    @contextlib.contextmanager
    def lock(self, run_id: str = "", lease_s: float = 120.0) -> Iterator[None]:
        """One writer per output folder: a file lock on local folders, a lease object on object
        stores (`_lease.json`: owner and expiry, renewed while the run lives; a run killed without
        releasing it blocks the folder until the lease expires)."""
        if not self.local:
            with self._lease(run_id, lease_s):
                yield
            return
        path = Path(self.root) / ".mfpipe.lock"
        with self.writing(str(path)):
            fh = open(path, "w")  # noqa: SIM115 - held open for the whole run
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputLockedError(f"another mfpipe run is writing to {self.root}") from None
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _lease(self, run_id: str, lease_s: float) -> Iterator[None]:
        """The lease object. Where the store has conditional writes (S3: create-only, then if-match on the
        lease's ETag) taking and renewing it cannot race: two runs cannot both win, and a stalled run whose
        lease a successor took cannot overwrite it (its renewal fails, and it writes no more shards).
        Elsewhere: write, wait, read back (the last writer wins)."""
        path = self.join(LEASE)
        me = {"run_id": run_id or uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
              "token": uuid.uuid4().hex}
        held, held_etag = self._read_lease(path), self._etag(path)
        if held and held.get("token") != me["token"] and held.get("expires_at", 0) > time.time():
            left = held["expires_at"] - time.time()
            raise OutputLockedError(
                f"another mfpipe run is writing to {self.url} (run {held.get('run_id')} on {held.get('host')}, "
                f"pid {held.get('pid')}; its lease runs {left:.0f} s more and is renewed while it lives). If "
                f"that run was killed, wait for the lease to expire or remove {self.uri(path)}")
        conditional = self._conditional_writes()
        etag: list[str | None] = [held_etag]

        def write(first: bool) -> None:
            data = json.dumps({**me, "expires_at": time.time() + lease_s}).encode()
            if not conditional:
                self.fs.pipe_file(path, data)
                return
            # Create-only when there is no lease; else replace exactly the lease we read (expired, or ours).
            options = {"mode": "create"} if first and held is None else {"IfMatch": etag[0]}
            out = self.fs.pipe_file(path, data, **options)
            etag[0] = out.get("ETag") if isinstance(out, dict) else self._etag(path)

        try:
            write(first=True)
        except (FileExistsError, OSError) as exc:
            if not conditional:
                raise
            raise OutputLockedError(f"another mfpipe run took the lease on {self.url} at the same moment "
                                    f"({exc})") from None
        if not conditional:
            time.sleep(min(1.0, lease_s / 10))  # two runs that started together: the last write wins
            if (self._read_lease(path) or {}).get("token") != me["token"]:
                raise OutputLockedError(f"another mfpipe run took the lease on {self.url} at the same moment")
        self.lease_lost.clear()
        stop = threading.Event()

        def keep() -> None:
            while not stop.wait(lease_s / 3):
                try:
                    write(first=False)
                except (FileExistsError, OSError):
                    if conditional and (self._read_lease(path) or {}).get("token") != me["token"]:
                        self.lease_lost.set()  # a successor holds it now: write nothing more
                        return
                except Exception:  # noqa: BLE001 - a missed renewal is retried; the lease has slack
                    pass

        keeper = threading.Thread(target=keep, name="mfpipe-lease", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join(timeout=5)
            if (self._read_lease(path) or {}).get("token") == me["token"]:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(path)

    def _conditional_writes(self) -> bool:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return any(p in ("s3", "s3a") for p in protocols)

    def _etag(self, path: str) -> str | None:
        try:
            return self.fs.info(path).get("ETag")
        except FileNotFoundError:
            return None

    def _read_lease(self, path: str) -> dict[str, Any] | None:
        self.fs.invalidate_cache(self.root)
        try:
            return json.loads(self.fs.cat_file(path))
        except (FileNotFoundError, ValueError):
            return None
