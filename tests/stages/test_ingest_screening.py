"""Near-duplicates and evaluation contamination through the real CLI and Ray: one recording counted once,
groups that survive reruns and resumes, an exclusion added later that export honours with no work redone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mfpipe import screening
from mfpipe.curate.report import write_report
from mfpipe.store import OutputStore
from support.corpus import Plan, write_llm_stages
from support.helpers import read_dir, run_mfpipe

pytestmark = pytest.mark.slow

CPU = ("--set", "profile=cpu", "--set", "ingest.resources.batch_size=2")


def _ingest(folder, out, *extra: str):
    return run_mfpipe("run", "--stage", "ingest", "--input", str(folder), "--output", str(out), *CPU, *extra)


def _groups(out) -> dict[str, list[str]]:
    """kept file → its copies' files (names only)."""
    table = screening.summary(OutputStore(out))["near_duplicates"]["table"]
    return {os.path.basename(g["kept"]): sorted(os.path.basename(c) for c in g["copies"]) for g in table}


@pytest.fixture(scope="module")
def ingested(screening_songs, tmp_path_factory):
    out = tmp_path_factory.mktemp("screened") / "out"
    proc = _ingest(screening_songs.folder, out)
    return out, proc


def test_copies_are_one_song_and_every_input_is_accounted_for(ingested, screening_songs):
    out, proc = ingested
    songs = screening_songs
    rows = read_dir(out / "ingest")
    rejects = read_dir(out / "rejects" / "ingest")
    inputs = sorted(p.name for p in songs.folder.iterdir())
    assert sorted(os.path.basename(s) for s in [*rows["source"], *rejects["source"]]) == inputs
    assert _groups(out) == {songs.original.name: sorted(p.name for p in songs.copies.values())}
    original_id = rows[rows["source"].str.endswith(songs.original.name)]["song_id"].item()
    left_out = screening.left_out(OutputStore(out))
    kept = {os.path.basename(s) for s, sid in zip(rows["source"], rows["song_id"]) if sid not in left_out}
    assert kept == {songs.original.name, *(p.name for p in songs.unrelated.values())}
    # A copy that arrived before the original was kept for a while, then replaced: it keeps its row (no
    # work is undone) but is left out. A copy that arrived after it is a `near_duplicate` reject naming it.
    for reject in rejects.to_dict("records"):
        assert reject["error"] == "near_duplicate"
        assert reject["song_id"] in left_out
        assert "song_id " in reject["message"] and "bit-error rate" in reject["message"]
    by_name = {os.path.basename(m["source"]): m for m in screening.active_matches(OutputStore(out)).values()}
    assert set(by_name) == {p.name for p in songs.copies.values()}
    chain = {name: os.path.basename(m["matched_source"]) for name, m in by_name.items()}
    for name in by_name:  # following "kept instead" from any copy ends at the original
        seen = name
        while seen in chain:
            seen = chain[seen]
        assert seen == songs.original.name
    assert original_id not in left_out
    assert len(rows["fingerprint"].iloc[0]) > 100  # the fingerprint is in the row (list<uint32>)


def test_rerun_keeps_the_groups_and_redoes_nothing(ingested, screening_songs):
    out, _ = ingested
    before = _groups(out), sorted(p.name for p in (out / "ingest" / "_matches").glob("part-*.parquet"))
    proc = _ingest(screening_songs.folder, out)
    n = len(list(screening_songs.folder.iterdir()))
    assert f"0 out, 0 rejected, {n} already done" in proc.stderr
    assert (_groups(out), sorted(p.name for p in (out / "ingest" / "_matches").glob("part-*.parquet"))) == before


def test_resume_ends_with_the_groups_of_one_whole_run(ingested, screening_songs, tmp_path):
    """A first run stops after three inputs (copies only: one of them is kept meanwhile); the next run
    brings the original, which replaces it."""
    out, _ = ingested
    resumed = tmp_path / "out"
    _ingest(screening_songs.folder, resumed, "--limit", "3")
    partial = _groups(resumed)
    assert screening_songs.original.name not in partial
    _ingest(screening_songs.folder, resumed)
    assert _groups(resumed) == _groups(out)
    left_out = screening.left_out(OutputStore(resumed))
    rows = read_dir(resumed / "ingest")
    replaced = [os.path.basename(s) for s, sid in zip(rows["source"], rows["song_id"]) if sid in left_out]
    assert replaced and set(replaced) <= {p.name for p in screening_songs.copies.values()}


def test_a_missing_exclusion_set_is_a_clear_usage_error(ingested, screening_songs, tmp_path):
    out, _ = ingested
    proc = run_mfpipe("run", "--stage", "ingest", "--input", str(screening_songs.folder), "--output", str(out),
                      *CPU, "--exclude", str(tmp_path / "no-such-set"), check=False)
    assert proc.returncode == 2
    assert "input not found" in proc.stderr and "no-such-set" in proc.stderr


def test_an_exclusion_added_later_is_left_out_of_the_export_with_no_work_redone(ingested, screening_songs,
                                                                                tmp_path):
    out = tmp_path / "out"
    shutil.copytree(ingested[0], out, ignore=shutil.ignore_patterns(".mfpipe.lock"))
    write_llm_stages(out, Plan(unjudged=0, stale=0))  # caption ... think rows for every ingested song, all judged
    export = ("run", "--stage", "export", "--input", str(screening_songs.folder), "--output", str(out), *CPU)
    run_mfpipe(*export)
    rows = read_dir(out / "ingest")
    original_id = rows[rows["source"].str.endswith(screening_songs.original.name)]["song_id"].item()
    before = set(read_dir(out / "export" / "mf_skills")["song_id"])
    assert original_id in before
    assert not before & screening.left_out(OutputStore(out))  # replaced copies are never exported
    stage_files = {stage: sorted(p.name for p in (out / stage).glob("part-*.parquet"))
                   for stage in ("ingest", "caption", "synthesize", "filter", "think")}

    run_mfpipe(*export, "--exclude", str(screening_songs.clips))
    summary = json.loads(sorted((out / "_runs").glob("*/summary.json"))[-1].read_text())
    stages = {s["stage"]: s for s in summary["summary"]}
    assert summary["plan"] is None  # no stage had work: no workers, no Ray
    assert stages["synthesize"]["rows_in"] == 0 and stages["ingest"]["rows_in"] == 0
    assert any("1 contain one and are left out" in note for note in stages["ingest"]["notes"]), stages["ingest"]
    assert {stage: sorted(p.name for p in (out / stage).glob("part-*.parquet")) for stage in stage_files} \
        == stage_files
    assert set(read_dir(out / "export" / "mf_skills")["song_id"]) == before - {original_id}
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    contamination = manifest["screening"]["contamination"]
    assert contamination["sets"] == [{"set": str(screening_songs.clips), "clips": 1, "unreadable": 0, "songs": 1}]
    assert [os.path.basename(c["song"]) for c in contamination["table"]] == [screening_songs.original.name]
    card = (out / "export" / "README.md").read_text()
    assert "## Near-duplicates and evaluation contamination" in card
    assert "eval_clip.mp3" in card and "copy_1_128k.mp3" in card and "itself left out" in card
    page = Path(write_report(str(out))).read_text()
    assert "<h2>Near-duplicates</h2>" in page and "<h2>Evaluation contamination</h2>" in page
    assert "eval_clip.mp3" in page and "copy_1_128k.mp3" in page
    # Again: nothing new to screen, nothing marked twice.
    marks = screening.active_matches(OutputStore(out))
    run_mfpipe(*export, "--exclude", str(screening_songs.clips))
    assert screening.active_matches(OutputStore(out)) == marks
