"""The project's main job: `mfpipe run --stage all` in the cpu profile, through the real CLI, on
real Ray, with the vLLM server mfpipe starts itself, over the bundled example songs:
ingest → caption / mir / lyrics → synthesize → filter → think (→ export), every song accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mfpipe.pipeline.config import load_config
from mfpipe.schemas import FilterRecord, Reject, ThinkRecord
from mfpipe.think.select import select_items
from mfpipe.thinktext import is_well_formed, parse
from support.helpers import read_dir, run_mfpipe
from support.think_data import TRUTH

pytestmark = [pytest.mark.slow, pytest.mark.cpu_extra]

STAGES = ["ingest", "caption", "mir", "lyrics", "synthesize", "filter", "think"]  # one row per song
ALL = [*STAGES, "export"]
CHAIN_ERRORS = {"too_many_wrong_steps", "still_wrong_after_rewrite", "wrong_answer", "too_many_unverifiable_steps"}


def mfpipe_all(out: Path):
    return run_mfpipe("run", "--stage", "all", "--output", str(out), "--set", "profile=cpu",
                      "--set", f"llm.server.log_file={out / 'vllm.log'}", timeout=1500, check=False)


@pytest.fixture(scope="module")
def run_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("all")
    proc = mfpipe_all(out)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
    return out, proc


def song_ids(folder: Path) -> set[str]:
    frame = read_dir(folder)
    return set(frame["song_id"]) if len(frame) else set()


def records(out: Path, stage: str, model) -> list:
    return [model.model_validate(row) for row in pq.read_table(out / stage).to_pylist()]


def rejects(out: Path, stage: str) -> list[Reject]:
    folder = out / "rejects" / stage
    if not list(folder.glob("*.parquet")):
        return []
    return [Reject.model_validate(row) for row in pq.read_table(folder).to_pylist()]


def test_every_song_is_accounted_for_at_every_stage(run_all):
    out, proc = run_all
    assert " → ".join(ALL) in " ".join(proc.stderr.split())
    songs = song_ids(out / "ingest")
    assert len(songs) == len(TRUTH)
    # A song is accounted for at a stage when the stage wrote it or rejected it, or when a stage before
    # it rejected it (the cpu profile's caption floor may reject a short caption from the 135M model).
    rejected_before: set[str] = set()
    for stage in STAGES:
        done = song_ids(out / stage) | song_ids(out / "rejects" / stage)
        assert not done & rejected_before, f"{stage} got songs that an upstream stage rejected"
        assert done | rejected_before == songs, f"{stage}: {len(songs - done - rejected_before)} song(s) lost"
        rejected_before |= song_ids(out / "rejects" / stage)
    summary = json.loads(next((out / "_runs").glob("*/summary.json")).read_text())
    assert summary["status"] == "ok" and [s["stage"] for s in summary["summary"]] == ALL


def test_a_filter_row_for_every_synthesized_song(run_all):
    out, _ = run_all
    synthesized = {r["song_id"]: r for r in pq.read_table(out / "synthesize").to_pylist()}
    judged = {r.song_id: r for r in records(out, "filter", FilterRecord)}
    assert set(judged) == set(synthesized) and not rejects(out, "filter")
    for song_id, record in judged.items():
        assert [q.index for q in record.qa] == list(range(len(synthesized[song_id]["qa"])))
        assert record.kept_items + record.dropped_items == 1 + len(record.qa)
        assert all(item.reasons for item in [record.caption, *record.qa])


def test_think_rows_parse_and_dropped_chains_have_rejects_with_their_ratio(run_all):
    out, _ = run_all
    kept_items = {r.song_id: {q.index for q in r.qa if q.keep} for r in records(out, "filter", FilterRecord)}
    think = records(out, "think", ThinkRecord) if song_ids(out / "think") else []
    dropped = rejects(out, "think")
    for record in think:
        assert record.considered == len(record.chains) + record.dropped
        assert record.dropped == sum(r.song_id == record.song_id for r in dropped)
        for chain in record.chains:
            assert chain.qa_index in kept_items[record.song_id]
            assert is_well_formed(chain.text) and parse(chain.text).answer == chain.answer
            assert chain.action in ("kept", "rewritten") and chain.step_error_rate == 0.0
            assert chain.first_error_rate <= 0.3 and chain.rewrites == (chain.action == "rewritten")
    for reject in dropped:
        assert reject.error in CHAIN_ERRORS or reject.error.startswith("llm_"), reject
        if reject.error in ("too_many_wrong_steps", "still_wrong_after_rewrite"):
            assert "steps wrong (" in reject.message and "%" in reject.message
    # Every item the selection rule picks from a song's synthesize and filter rows became a chain or a
    # reject (whatever the stand-in wrote, and however many items that leaves: none is an outcome too).
    cfg = load_config(None, ["profile=cpu"]).think
    upstream = {stage: {r["song_id"]: r for r in pq.read_table(out / stage).to_pylist()}
                for stage in ("synthesize", "filter")}
    by_song = {r.song_id: r for r in think}
    for song_id in upstream["filter"]:
        selected = select_items({stage: upstream[stage][song_id] for stage in upstream}, cfg)
        if song_id in by_song:
            assert by_song[song_id].considered == len(selected)
        elif selected:  # no row: every chain was dropped, or the song was rejected whole
            ours = [r for r in dropped if r.song_id == song_id]
            assert len(ours) == len(selected) or (len(ours) == 1 and ours[0].error.startswith("llm_")), ours
    # the export's MF-Think table is exactly the surviving chains, their text as think wrote it
    exported = pq.read_table(out / "export" / "mf_think").to_pylist()
    assert sorted(r["text"] for r in exported) == sorted(c.text for r in think for c in r.chains)


def test_one_llm_server_for_the_run_and_honest_banners(run_all):
    out, proc = run_all
    assert proc.stderr.count("starting the vLLM server") == 1  # synthesize and think share it
    banner = " ".join(proc.stderr.split())
    assert "filter: judges with a tiny RANDOM-WEIGHT stand-in" in banner
    assert "think: checks steps with a tiny RANDOM-WEIGHT stand-in" in banner


def test_a_rerun_redoes_only_the_retryable_rejects(run_all):
    out, _ = run_all
    retryable = {stage: {r.song_id for r in rejects(out, stage) if r.retryable} for stage in STAGES}
    before = {stage: song_ids(out / stage) for stage in STAGES}
    proc = mfpipe_all(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if not any(retryable.values()):
        assert "starting the vLLM server" not in proc.stderr  # nothing left to do: no server
    for stage in STAGES:
        after = read_dir(out / stage)
        assert after["song_id"].is_unique if len(after) else True
        assert before[stage] <= set(after["song_id"] if len(after) else [])  # nothing done is redone or lost
        # what is new is a retried song, or one that a retried song let through downstream
        new = set(after["song_id"] if len(after) else []) - before[stage]
        assert new <= set().union(*retryable.values()), f"{stage} redid songs that were done"
