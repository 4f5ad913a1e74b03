"""The parts of a stage's loop, each on its own, without Ray or a subprocess: the board and readiness,
the outage guard (an injected clock and probe), the ledger, and the sink (a real local output folder)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mfpipe.pipeline.board import Board
from mfpipe.pipeline.ledger import Ledger
from mfpipe.pipeline.outage import OutageGuard
from mfpipe.pipeline.readiness import Readiness
from mfpipe.pipeline.sink import Sink
from mfpipe.pipeline.stage import INPUTS, Stage
from mfpipe.schemas import Provenance, Reject, SongRecord, utc_now
from mfpipe.store import OutputStore


class Base(Stage):
    name = "base"
    requires = (INPUTS,)
    key = "source"


class Needs(Stage):
    """Reads `base` (required) and `extra` (optional)."""

    name = "needs"
    requires = ("base",)
    uses = ("extra",)
    record = SongRecord


def _commit(board: Board, stage: str, ids: list[str], kind: str = "record") -> None:
    table = pa.table({"song_id": ids, "source": [f"{i}.wav" for i in ids]})
    board.publish(stage, kind, f"{stage}/part-{len(board.lane(stage).events)}.parquet", table, "song_id")


# ---------------------------------------------------------------- readiness


def test_a_song_is_ready_once_its_upstream_stages_say_so():
    board = Board()
    ready = Readiness(Needs, board, planned={"base", "extra", "needs"}, done={"s3"})
    _commit(board, "base", ["s1", "s2", "s3"])
    ready.seed(None)
    assert list(ready.pending) == [] and ready.waiting == {"s1", "s2"} and ready.skipped == 1  # s3: done before
    _commit(board, "extra", ["s1"])
    ready.absorb()
    assert list(ready.pending) == ["s1"]  # s2 waits for the optional upstream stage of this run
    _commit(board, "extra", ["s2"], kind="reject")
    ready.absorb()
    assert list(ready.pending) == ["s1", "s2"] and not ready.waiting  # a reject upstream: it goes without


def test_an_optional_upstream_that_finishes_or_is_not_planned_releases_its_songs():
    board = Board()
    ready = Readiness(Needs, board, planned={"base", "extra", "needs"}, done=set())
    _commit(board, "base", ["s1"])
    ready.seed(None)
    assert ready.waiting == {"s1"} and not ready.upstream_finished()
    board.finish("extra")
    board.finish("base")
    ready.absorb()
    assert list(ready.pending) == ["s1"] and ready.upstream_finished()
    alone = Readiness(Needs, Board(), planned={"base", "needs"}, done=set())  # extra not in this run
    _commit(alone.board, "base", ["s9"])
    alone.seed(None)
    assert list(alone.pending) == ["s9"]


def test_songs_left_out_of_the_corpus_are_never_taken():
    board = Board(withdrawn={"s2"})
    ready = Readiness(Needs, board, planned={"base", "needs"}, done=set())
    _commit(board, "base", ["s1", "s2", "s3"])
    ready.seed(None)
    assert list(ready.pending) == ["s1", "s3"] and ready.left_out == 1
    board.withdrawn.add("s3")  # withdrawn after it was queued (a better copy arrived)
    assert ready.take() == "s1" and ready.take() is None and ready.left_out == 2


# ---------------------------------------------------------------- the outage guard


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_pauses_probes_with_backoff_and_fails_after_the_longest_wait():
    clock, answers, recovered = Clock(), [], []
    guard = OutageGuard(lambda: answers.pop(0), lambda: recovered.append(clock.now), max_wait_s=60,
                        song_strikes=3, clock=clock)
    assert not guard.paused and guard.check().failed is None
    guard.deferred("s1", "connection refused")
    assert guard.paused
    answers[:] = ["still down"]
    assert guard.check().failed is None and recovered == [0.0]  # probed at once, then recovered (ours)
    clock.now = 1.0
    assert guard.check().failed is None and answers == []  # backing off: no probe before its time
    answers[:] = ["still down"] * 20
    for t in range(2, 70):
        clock.now = float(t)
        result = guard.check(waiting=5)
        if result.failed:
            break
    assert result.failed and "down for 6" in result.failed and "5 song(s) stay pending" in result.failed
    assert len(recovered) < 20  # backoff: not a probe per look


def test_when_the_service_answers_songs_that_kept_failing_are_struck_out():
    clock, state = Clock(), {"down": True}
    guard = OutageGuard(lambda: "down" if state["down"] else None, lambda: None, max_wait_s=600, song_strikes=2,
                        clock=clock)
    guard.deferred("bad", "HTTP 500")
    guard.deferred("fine", "HTTP 500")
    state["down"] = False
    assert guard.check().struck_out == [] and not guard.paused  # one strike each: not the songs' fault yet
    guard.deferred("bad", "HTTP 500 again")
    result = guard.check()
    assert result.struck_out == [("bad", "HTTP 500 again")] and guard.strikes["fine"] == 1


# ---------------------------------------------------------------- the ledger


def test_done_is_committed_rows_and_rejects_for_good_and_limit_cuts_in_discovery_order():
    board = Board(withdrawn={"w"})
    _commit(board, "needs", ["a"])
    board.lane("needs").rejected.add("b")  # a reject for good (retryable ones are not loaded)
    _commit(board, "base", ["a", "b", "c", "w"])
    ledger = Ledger(board, limit=2)
    assert ledger.done(Needs) == {"a", "b"}
    assert ledger.counts(Needs, []) == (1, 2)  # c left; w is withdrawn
    assert ledger.inputs(["z.wav", "y.wav", "x.wav"]) == ["z.wav", "y.wav"]
    assert ledger.allows(1) and not ledger.allows(2)
    assert Ledger(board, None).allows(10**9)


# ---------------------------------------------------------------- the sink


class Tagged(SongRecord):
    tag: str


class TaggedStage(Stage):
    name = "tagged"
    record = Tagged

    @classmethod
    def counts(cls, record):
        return {record.tag: 1}


def _rec(sid: str, source: str, tag: str = "x") -> Tagged:
    prov = Provenance(stage="tagged", mfpipe_version="0", code_rev=None, config_hash="h", run_id="r",
                      created_at=utc_now())
    return Tagged(song_id=sid, source=source, provenance=prov, tag=tag)


class Summary:
    def __init__(self):
        self.rows_out = self.rejected = 0
        self.counts: dict[str, int] = {}
        self.first_commit_s = None


class DropOdd:
    """A corpus gate: rejects songs whose id ends in an odd digit."""

    def admit(self, records, rejects):
        bad = [r for r in records if int(r.song_id[-1]) % 2]
        return [r for r in records if r not in bad], rejects + [Reject.of("tagged", "r", r, "odd", "odd") for r in bad]


@pytest.mark.parametrize("gate", [None, DropOdd()])
def test_the_sink_writes_once_per_song_counts_and_publishes_what_commits(tmp_path, gate):
    store = OutputStore(str(tmp_path / "out"))
    board = Board()
    summary = Summary()
    sink = Sink(store, TaggedStage, "r", board, summary, shard_max_rows=100, shard_max_mb=8, flush_seconds=600,
                first_at_once=False, started=0.0, gate=gate)
    sink.write([_rec("s2", "a.wav", "loud"), _rec("s2", "b.wav"), _rec("s4", "c.wav", "loud"), _rec("s1", "d.wav")],
               [])
    assert not board.lane("tagged").records  # nothing committed yet: downstream sees nothing
    sink.close()
    rows = store.read(store.stage_dir("tagged")).to_pylist()
    rejects = store.read(store.rejects_dir("tagged")).to_pylist()
    kept = sorted(r["song_id"] for r in rows)
    assert kept == (["s2", "s4"] if gate else ["s1", "s2", "s4"])
    dup = next(r for r in rejects if r["error"] == "duplicate")
    assert dup["source"] == "b.wav" and "same audio as a.wav" in dup["message"]
    assert summary.rows_out == len(kept) and summary.rejected == len(rejects) and summary.counts["loud"] == 2
    assert set(board.lane("tagged").records) == set(kept)  # published on commit


# ---------------------------------------------------------------- the phase's capacity (elastic pools)


def test_capacity_grants_shares_packed_per_gpu_and_never_more():
    from mfpipe.pipeline.capacity import Capacity

    cap = Capacity(cpus=4, gpus=2)
    grants = [cap.take("a", 1, 0.6), cap.take("a", 1, 0.6)]
    assert [g.gpu for g in grants] == [0, 1]  # 0.6 + 0.6 does not fit one GPU
    assert cap.take("b", 1, 0.6) is None  # 0.4 left on each GPU: never split, never oversubscribed
    small = cap.take("b", 1, 0.4)
    assert small is not None and cap.take("b", 1, 0.0) is not None and cap.take("b", 0.5, 0.0) is None  # CPUs out
    cap.give("a", grants[0])
    assert cap.take("b", 0.0, 0.6).gpu == 0 and cap.holding("a") == 1


def test_a_stage_owed_its_share_makes_grown_stages_give_back():
    from mfpipe.pipeline.capacity import Capacity

    cap = Capacity(cpus=2, gpus=0)
    cap.plan("mir", 1)
    cap.plan("late", 1)
    cap.take("mir", 1, 0)
    cap.take("mir", 1, 0)  # mir grew into late's planned share while late had nothing to do
    assert not cap.owed_by("mir")  # nobody is owed: mir keeps its grown worker
    cap.wants("mir", True, 1, 0)
    assert cap.someone_else_wants("late") and not cap.someone_else_wants("mir")
    cap.want("late", True, 1, 0)  # late has songs now, and no worker
    assert cap.owed_by("mir") == ["late"] and not cap.owed_by("late")
    cap.give("mir", cap.held["mir"][-1])
    assert cap.take("late", 1, 0) is not None and not cap.owed  # late holds its planned worker again
    assert not cap.owed_by("mir")  # back at its plan: it stops giving


def test_a_starved_worker_is_let_go_only_for_a_stage_its_share_can_serve():
    """A GPU stage's idle worker (0.1 CPU, half a GPU) is not let go for a CPU stage that wants a whole
    CPU (it could not start one with it: a model load lost for nothing), but is for a stage wanting half a
    GPU, or a tenth of a CPU."""
    from mfpipe.pipeline.capacity import Capacity

    cap = Capacity(cpus=1.2, gpus=1)
    gpu_worker = cap.take("caption", 0.1, 0.5)
    cap.take("ingest", 1, 0)
    cap.take("filter", 0.1, 0.5)
    cap.wants("ingest", True, 1, 0)
    assert cap.someone_else_wants("caption") and not cap.someone_else_wants("caption", gpu_worker)
    cap.wants("ingest", False)
    cap.wants("think", True, 0.1, 0.5)
    assert cap.someone_else_wants("caption", gpu_worker) and not cap.someone_else_wants("think", gpu_worker)
    cap.wants("think", True, 0.1, 0.75)
    assert not cap.someone_else_wants("caption", gpu_worker)  # half a GPU back is not three quarters
    cap.wants("think", False)
    cap.wants("mir", True, 0.1, 0)
    assert cap.someone_else_wants("caption", gpu_worker)


def test_a_grown_stage_gives_back_only_what_an_owed_stage_is_short_of():
    """An owed stage that can start its worker with what is free takes no worker from a grown one (that
    worker's model load would be lost), and a GPU stage's worker is not given back to a CPU stage short of
    CPUs only when that worker holds a CPU share."""
    from mfpipe.pipeline.capacity import Capacity, Grant

    cap = Capacity(cpus=2, gpus=1)
    for stage, planned in (("caption", 1), ("filter", 1), ("mir", 2)):
        cap.plan(stage, planned)
    first, grown = cap.take("caption", 0.1, 0.5), cap.take("caption", 0.1, 0.5)  # grew into filter's half
    cap.want("mir", True, 0.5, 0)  # 1.8 CPUs free: mir starts its own
    assert cap.owed_by("caption", grown) == [] and cap.take("mir", 0.5, 0) is not None
    cap.want("filter", True, 0.1, 0.5)  # filter's songs came: no half GPU is free
    assert cap.owed_by("caption", grown) == ["filter"] and cap.owed_by("mir") == []  # mir is within its plan
    cap.give("caption", grown)
    assert cap.take("filter", 0.1, 0.5) is not None and cap.owed_by("caption", first) == []
    cap.take("mir", 1.2, 0)  # mir grew into the CPUs (2 workers, its plan: CPUs all held now)
    cap.take("mir", 0.0, 0)  # a third, beyond its plan
    cap.want("ingest", True, 0.5, 0)  # 0.1 CPU free
    assert cap.owed_by("caption", first) == []  # caption is within its plan
    assert cap.owed_by("mir", Grant(0.0, 0.0, None)) == []  # a worker holding no CPU cannot help
    assert cap.owed_by("mir", Grant(1.2, 0.0, None)) == ["ingest"]
