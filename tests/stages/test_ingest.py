"""Ingest end to end through the real CLI and Ray: good songs, every kind of bad input."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from support.helpers import read_dir, run_mfpipe, tone_song

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """A folder with good songs and each bad input the issue lists, and what each must become."""
    d = tmp_path_factory.mktemp("mixed")
    expect: dict[str, str] = {}  # file name -> "ok" | "truncated" | reject error class

    def add(name: str, outcome: str, **kw) -> None:
        tone_song(d / name, kw.pop("seconds", 6.0), seed=len(expect), **kw)
        expect[name] = outcome

    add("plain.wav", "ok")
    add("sub dir/ünïcødé name with spaces.flac", "ok")
    add("low_rate_8k.wav", "ok", sr=8000)
    add("six_channels.wav", "ok", channels=6, sr=48000)
    add("hires_24bit_96k.wav", "ok", sr=96000, channels=2, subtype="PCM_24")
    add("compressed.ogg", "ok", fmt="OGG", subtype="VORBIS")
    add("compressed.mp3", "ok", fmt="MP3", subtype="MPEG_LAYER_III")
    add("long_25min.flac", "truncated", seconds=25 * 60, sr=8000)
    # A format libsndfile cannot read: decoded through ffmpeg.
    tone_song(d / "for_aac.wav", 6.0, seed=50)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(d / "for_aac.wav"), "-c:a", "aac", str(d / "aac song.m4a")],
                   check=True)
    (d / "for_aac.wav").unlink()
    expect["aac song.m4a"] = "ok"
    add("too_short.wav", "too_short", seconds=0.5)
    # The same bytes as plain.wav under another name: one song, one row.
    shutil.copy(d / "plain.wav", d / "plain copy.wav")
    expect["plain copy.wav"] = "duplicate"
    sf.write(d / "silence.wav", np.zeros(22050 * 5, np.float32), 22050)
    expect["silence.wav"] = "silent"
    (d / "empty.mp3").write_bytes(b"")
    expect["empty.mp3"] = "empty_file"
    (d / "not_audio.wav").write_text("this is a text file that claims to be audio\n" * 50)
    expect["not_audio.wav"] = "not_audio"
    (d / "random.flac").write_bytes(np.random.default_rng(7).bytes(50_000))
    expect["random.flac"] = "not_audio"
    full = (d / "plain.wav").read_bytes()
    tone_song(d / "cut.wav", 8.0, seed=99)
    (d / "cut.wav").write_bytes((d / "cut.wav").read_bytes()[: len(full) // 2])
    expect["cut.wav"] = "damaged"
    (d / "notes.txt").write_text("not an input: no audio extension")
    return d, expect


@pytest.fixture(scope="module")
def ingested(mixed_folder, tmp_path_factory):
    folder, expect = mixed_folder
    out = tmp_path_factory.mktemp("out")
    proc = run_mfpipe("run", "--stage", "ingest", "--input", str(folder), "--output", str(out),
                      "--set", "profile=cpu", "--set", "ingest.resources.batch_size=3")
    return folder, expect, out, proc


def _by_name(frame, folder):
    return {os.path.relpath(src, folder): row for src, row in zip(frame["source"], frame.to_dict("records"))}


def test_every_input_is_accounted_for_exactly_once(ingested):
    folder, expect, out, _ = ingested
    rows = read_dir(out / "ingest")
    rejects = read_dir(out / "rejects" / "ingest")
    seen = [os.path.relpath(s, folder) for s in list(rows["source"]) + list(rejects["source"])]
    # The duplicate pair: whichever finished first is kept, the other is the duplicate.
    assert sorted(seen) == sorted(expect)
    assert len(seen) == len(set(seen))
    assert rows["song_id"].is_unique


def test_outcome_per_input(ingested):
    folder, expect, out, _ = ingested
    rows = _by_name(read_dir(out / "ingest"), folder)
    rejects = _by_name(read_dir(out / "rejects" / "ingest"), folder)
    dup_pair = {"plain.wav", "plain copy.wav"}
    kept = dup_pair & set(rows)
    assert len(kept) == 1, "identical files must become exactly one song"
    dup = (dup_pair - kept).pop()
    assert rejects[dup]["error"] == "duplicate"
    assert kept.pop() in rejects[dup]["message"]
    assert rejects[dup]["song_id"] == next(r["song_id"] for n, r in rows.items() if n in dup_pair)
    for name, outcome in expect.items():
        if name in dup_pair:
            continue
        if outcome in ("ok", "truncated"):
            assert name in rows, f"{name} should be processed, got reject {rejects.get(name)}"
            assert rows[name]["truncated"] == (outcome == "truncated"), name
        else:
            assert name in rejects, f"{name} should be rejected as {outcome}"
            assert rejects[name]["error"] == outcome, (name, rejects[name]["message"])
            assert rejects[name]["message"], name


def test_measurements(ingested):
    folder, _, out, _ = ingested
    rows = _by_name(read_dir(out / "ingest"), folder)
    hires = rows["hires_24bit_96k.wav"]
    assert (hires["sample_rate"], hires["channels"], hires["subtype"]) == (96000, 2, "PCM_24")
    assert rows["six_channels.wav"]["channels"] == 6
    assert rows["low_rate_8k.wav"]["sample_rate"] == 8000
    aac = rows["aac song.m4a"]
    assert aac["decoder"] == "ffmpeg" and aac["duration_s"] == pytest.approx(6.0, abs=0.1)
    assert rows["compressed.mp3"]["decoder"] == "soundfile"
    assert any("low sample rate" in w for w in rows["low_rate_8k.wav"]["warnings"])
    plain = rows.get("plain.wav") or rows["plain copy.wav"]
    assert plain["duration_s"] == pytest.approx(6.0, abs=1e-3)
    assert plain["n_windows"] == 1
    long = rows["long_25min.flac"]
    assert long["duration_s"] == pytest.approx(1500.0, abs=0.01)
    assert long["processed_s"] == pytest.approx(1200.0)
    assert long["n_windows"] == 40
    assert any("truncated" in w for w in long["warnings"])
    import hashlib

    uni = rows["sub dir/ünïcødé name with spaces.flac"]
    assert uni["song_id"] == hashlib.sha256((folder / "sub dir/ünïcødé name with spaces.flac").read_bytes()).hexdigest()
    assert {p["stage"] for p in read_dir(out / "ingest")["provenance"]} == {"ingest"}


def test_summary_and_run_record(ingested):
    _, expect, out, proc = ingested
    import json

    runs = sorted((out / "_runs").glob("*/summary.json"))
    summary = json.loads(runs[-1].read_text())
    ingest = summary["summary"][0]
    assert summary["status"] == "ok"
    assert ingest["rows_in"] == len(expect)
    assert ingest["rows_out"] + ingest["rejected"] == len(expect)
    assert (runs[-1].parent / "config.yaml").read_text().startswith("profile: cpu")
    assert "rows out" in proc.stdout  # the summary table
    assert any(name.endswith("notes.txt") for name in summary["ignored_inputs"])


def test_rerun_skips_done_work_and_force_redoes_it(ingested):
    folder, expect, out, _ = ingested
    before = read_dir(out / "ingest")
    proc = run_mfpipe("run", "--stage", "ingest", "--input", str(folder), "--output", str(out),
                      "--set", "profile=cpu")
    assert f"0 out, 0 rejected, {len(expect)} already done" in proc.stderr
    assert len(read_dir(out / "ingest")) == len(before)
    run_mfpipe("run", "--stage", "ingest", "--input", str(folder), "--output", str(out),
               "--set", "profile=cpu", "--force")
    after = read_dir(out / "ingest")
    assert sorted(after["song_id"]) == sorted(before["song_id"])
    assert len(read_dir(out / "rejects" / "ingest")) == len(expect) - len(before)
    assert not list(out.rglob(".tmp-*"))


def test_bundled_examples_ingest(tmp_path):
    out = tmp_path / "out"
    run_mfpipe("run", "--stage", "ingest", "--output", str(out), "--set", "profile=cpu")
    rows = read_dir(out / "ingest")
    import json
    from importlib import resources

    truth = json.loads(resources.files("mfpipe.examples").joinpath("truth.json").read_text())
    assert sorted(os.path.basename(s) for s in rows["source"]) == sorted(t["file"] for t in truth)
    for t in truth:
        row = rows[rows["source"].str.endswith(t["file"])].iloc[0]
        assert row["duration_s"] == pytest.approx(t["duration_s"], abs=0.1)
        assert row["sample_rate"] == t["sample_rate"]
    assert read_dir(out / "rejects" / "ingest").empty
