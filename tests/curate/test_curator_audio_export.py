"""Training exports with the audio inside (hf-audio, WebDataset, Lhotse Shar) and AF3 sound paths.

One corpus for the module, from the session's real ingest + MIR of the example songs: the LLM-made
stages are written for every song (`support.corpus`), two of the songs sit in two folders under the same
name (`a/vocals.flac`, `b/vocals.flac`), one QA item names a time (m:ss), and the Parquet export is built
by the real code. Each format is then read back by its own library.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mfpipe.audio import load_mono
from mfpipe.backends.audiolm import split_windows
from mfpipe.curate import af3
from mfpipe.curate import export as corpus
from mfpipe.curate.audio_export import AudioPlan, SongGroup, export_audio, song_samples
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas.export import AudioSample
from mfpipe.store import OutputStore
from support.corpus import Plan, write_llm_stages
from support.fixtures_curate import copy_out
from support.helpers import REPO, run_mfpipe

pytestmark = pytest.mark.slow  # the session's ingest + MIR run, and real decodes

RATE = 16000
TIMED_QUESTION = "What does the flute do at 0:45?"  # 45 s: the second 30 s window


def _rewrite(folder: Path, edit) -> None:
    """Rewrite every shard of a stage folder through `edit(rows) -> rows`, keeping its schema."""
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path)
        pq.write_table(pa.Table.from_pylist(edit(table.to_pylist()), schema=table.schema), path)


@pytest.fixture(scope="module")
def made(tmp_path_factory, mir_out):
    root = tmp_path_factory.mktemp("audio-export")
    out = copy_out(mir_out, root / "out")
    flacs = {}

    def same_names(rows):
        # The two FLAC songs move to a/vocals.flac and b/vocals.flac: same bytes, so the same song_id.
        for row in rows:
            if row["source"].endswith(".flac"):
                new = root / "ab"[len(flacs)] / "vocals.flac"
                new.parent.mkdir()
                shutil.copy(row["source"], new)
                flacs[row["song_id"]] = str(new)
                row["source"] = str(new)
        return rows

    _rewrite(out / "ingest", same_names)
    assert len(flacs) == 2
    write_llm_stages(out, Plan(unjudged=0, stale=0))
    songs = pq.read_table(sorted((out / "ingest").glob("part-*.parquet"))).to_pylist()
    longest = max(songs, key=lambda s: s["processed_s"])["song_id"]

    def name_a_time(rows):
        for row in rows:
            if row["song_id"] == longest:
                row["qa"][0]["question"] = TIMED_QUESTION  # qa[0] is kept by the fixture's filter
        return rows

    _rewrite(out / "synthesize", name_a_time)
    cfg = load_config(None, ["profile=cpu"])
    corpus.build(OutputStore(out), cfg.export, RunInfo(run_id="20990101T000000-audio", config_hash="audio"))
    return {"out": out, "songs": {s["song_id"]: s for s in songs}, "vocals": flacs, "timed": longest}


def _export_rows(out: Path) -> dict[str, dict]:
    rows = {}
    for table in corpus.TABLES:
        for row in pq.read_table(sorted((out / "export" / table).glob("part-*.parquet"))).to_pylist():
            rows[row["id"]] = {**row, "table": table}
    return rows


def _settings(*sets: str):
    return load_config(None, ["profile=cpu", *sets]).export


def _export(out: Path, fmt: str, *sets: str, dest: str | None = None):
    store = OutputStore(out)
    return export_audio(store, corpus.current_root(store), fmt, _settings(*sets), dest=dest)


def _check_items(samples: list[AudioSample], made: dict, mode: str) -> None:
    """Every selected item is in the export, where it belongs; nothing else is."""
    rows = _export_rows(made["out"])
    seen: dict[str, list[AudioSample]] = {}
    for sample in samples:
        for item in sample.items:
            assert item.id in rows and rows[item.id]["song_id"] == sample.song_id
            assert item.question == rows[item.id]["question"] and item.table == rows[item.id]["table"]
            seen.setdefault(item.id, []).append(sample)
    assert set(seen) == set(rows)
    windows = {sid: len(split_windows(s["processed_s"])) for sid, s in made["songs"].items()}
    for item_id, where in seen.items():
        item = next(i for i in where[0].items if i.id == item_id)
        if TIMED_QUESTION == item.question:
            assert item.scope == "time"
            if mode == "full":
                assert len(where) == 1 and (item.start, item.end) == (30.0, 60.0)
            else:
                assert [s.window for s in where] == [1]
        else:
            assert item.scope == "song" and item.start is None
            assert len(where) == (1 if mode == "full" else windows[rows[item_id]["song_id"]])


# ------------------------------------------------------------------ the three formats, read by their libraries


def test_hf_audio_loads_in_datasets(made, tmp_path):
    import datasets

    out = made["out"]
    proc = run_mfpipe("export", str(out), "--format", "hf-audio", "--audio", "windows", "--set", "profile=cpu")
    assert "hf-audio:" in proc.stdout
    folder = out / "export" / "hf_audio"
    manifest = json.loads((folder / "manifest.json").read_text())
    samples = []
    for table in corpus.TABLES:
        ds = datasets.load_dataset(str(folder), table, split="train", cache_dir=str(tmp_path / "hf"))
        assert isinstance(ds.features["audio"], datasets.Audio) and ds.features["audio"].sampling_rate == RATE
        for row in ds:
            decoded = row["audio"].get_all_samples()
            assert decoded.sample_rate == RATE and decoded.data.shape[0] == 1
            assert decoded.data.shape[1] == round(row["duration_s"] * RATE) == 30 * RATE  # padded last windows
            assert row["items"] and {i["table"] for i in row["items"]} == {table}
            samples.append(AudioSample.model_validate({k: v for k, v in row.items() if k != "audio"}))
    # A sample is in each config whose items it has; put its items back together to check them.
    merged: dict[str, AudioSample] = {}
    for s in samples:
        merged[s.key] = merged[s.key].model_copy(update={"items": merged[s.key].items + s.items}) \
            if s.key in merged else s
    assert len(merged) == manifest["samples"] == sum(len(split_windows(s["processed_s"]))
                                                     for s in made["songs"].values())
    _check_items(list(merged.values()), made, "windows")
    # The files carry the Audio type themselves, and the export's own card names them as configs.
    files = sorted(str(p) for p in (folder / "data" / "mf_think").glob("*.parquet"))
    plain = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(plain.features["audio"], datasets.Audio)
    card = (out / "export" / "README.md").read_text()
    assert "config_name: mf_skills_audio" in card.split("---")[1] and "| hf-audio |" in card
    ds = datasets.load_dataset(str(out / "export"), "mf_skills_audio", split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["audio"], datasets.Audio) and ds.num_rows > 0


def test_webdataset_iterates_every_sample(made):
    import webdataset as wds

    out = made["out"]
    # A tiny shard size: every song closes its shard (a song never straddles two).
    result = _export(out, "webdataset", "export.audio_codec=opus", "export.audio_shard_max_mb=0.01")
    folder = out / "export" / "webdataset"
    tars = sorted(str(p) for p in (folder / "data").glob("shard-*.tar"))
    assert len(tars) == result.manifest["shards"] == len(made["songs"])
    samples = []
    for sample in wds.WebDataset(tars, shardshuffle=False):
        record = AudioSample.model_validate_json(sample["json"])
        assert record.key == sample["__key__"] == record.song_id
        audio, rate = sf.read(io.BytesIO(sample["opus"]))
        assert rate == RATE and audio.ndim == 1
        song = made["songs"][record.song_id]
        assert record.duration_s == record.audio_s == pytest.approx(song["processed_s"], abs=1 / RATE)
        assert len(audio) == pytest.approx(song["processed_s"] * RATE, abs=2)
        samples.append(record)
    assert len(samples) == result.manifest["samples"] == len(made["songs"])  # keys unique: song_id
    _check_items(samples, made, "full")


def test_lhotse_shar_loads_every_cut(made):
    from lhotse import CutSet

    out = made["out"]
    result = _export(out, "lhotse-shar")
    cuts = list(CutSet.from_shar(in_dir=str(out / "export" / "lhotse_shar" / "data")))
    assert len(cuts) == result.manifest["samples"] == len(made["songs"])
    rows = _export_rows(out)
    for cut in cuts:
        song = made["songs"][cut.id]
        assert cut.duration == pytest.approx(song["processed_s"], abs=1 / RATE)
        audio = cut.load_audio()
        assert cut.sampling_rate == RATE and audio.shape == (1, round(cut.duration * RATE))
        ids = {s.custom["item_id"] for s in cut.supervisions}
        assert ids == {i for i, r in rows.items() if r["song_id"] == cut.id}
        for sup in cut.supervisions:
            row = rows[sup.custom["item_id"]]
            assert sup.text == (row.get("text") or row["answer"]) and sup.custom["question"] == row["question"]
            if row["question"] == TIMED_QUESTION:
                assert (sup.start, sup.duration) == (30.0, 30.0)  # the window the item names
            else:
                assert (sup.start, sup.duration) == (0.0, cut.duration)
        assert cut.custom["song"]["source"] == song["source"]


def test_windows_line_up_with_the_models_cut(made):
    out = made["out"]
    _export(out, "webdataset", "export.audio=windows", dest=str(out.parent / "wds-windows"))
    by_song: dict[str, dict[int, tuple[AudioSample, np.ndarray]]] = {}
    for tar in sorted((out.parent / "wds-windows" / "data").glob("*.tar")):
        with tarfile.open(tar) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                record = AudioSample.model_validate_json(data)
                audio, rate = sf.read(io.BytesIO(members[name.replace(".json", ".flac")]), dtype="float32")
                by_song.setdefault(record.song_id, {})[record.window] = (record, audio)
    assert set(by_song) == set(made["songs"])
    for song_id, windows in by_song.items():
        song = made["songs"][song_id]
        decoded = load_mono(song["source"], RATE, max_seconds=song["processed_s"])
        assert sorted(windows) == list(range(len(split_windows(song["processed_s"]))))
        for i, (record, audio) in windows.items():
            assert record.key == f"{song_id}_w{i:02d}" and len(audio) == 30 * RATE  # every window: 30 s
            assert record.start_s == 30.0 * i
            expected = decoded[i * 30 * RATE:(i + 1) * 30 * RATE]  # the model's cut: [30 i, 30 (i + 1))
            assert record.audio_s == pytest.approx(len(expected) / RATE)
            np.testing.assert_allclose(audio[:len(expected)], expected, atol=1e-4)  # 16-bit FLAC
            assert not audio[len(expected):].any()  # the last window padded with silence


def test_an_item_naming_a_time_goes_with_its_window():
    song = {"source": "x.flac", "processed_s": 70.0}
    rows = [("mf_skills", {"id": "s:qa:0", "skill": "temporal", "question": "What changes at 1:02?", "answer": "a",
                           "options": []}),
            ("mf_skills", {"id": "s:qa:1", "skill": "temporal", "question": "From 0:20 to 0:40?", "answer": "b",
                           "options": []}),
            ("mf_think", {"id": "s:think:2", "skill": "attribute", "question": "Which key?", "answer": "C major",
                          "text": "<think>…</think><answer>C major</answer>", "options": []})]
    group = SongGroup(bucket=0, song_id="s", song=song, rows=rows)
    audio = np.zeros(70 * RATE, dtype=np.float32)
    (full, _), = song_samples(group, audio, AudioPlan("full", "flac", RATE))
    spans = {i.id: (i.scope, i.start, i.end) for i in full.items}
    assert spans == {"s:qa:0": ("time", 60.0, 70.0), "s:qa:1": ("time", 0.0, 60.0), "s:think:2": ("song", None, None)}
    windows = song_samples(group, audio, AudioPlan("windows", "flac", RATE))
    assert [[i.id for i in s.items] for s, _ in windows] == [
        ["s:qa:1", "s:think:2"], ["s:qa:1", "s:think:2"], ["s:qa:0", "s:think:2"]]
    last, clip = windows[-1]
    assert (last.start_s, last.end_s, last.audio_s, last.duration_s, len(clip)) == (60.0, 70.0, 10.0, 30.0, 30 * RATE)
    unpadded = song_samples(group, audio, AudioPlan("windows", "flac", RATE, pad_last_window=False))
    assert len(unpadded[-1][1]) == 10 * RATE


# ------------------------------------------------------------------ AF3 sound paths


def test_same_named_files_stay_two_sounds(made):
    out = copy_out(made["out"], made["out"].parent / "out-af3")
    store = OutputStore(out)
    written = af3.write(store, corpus.current_root(store), audio="copy")
    assert written["audio"]["songs"] == len(made["songs"]) and not written["audio"]["missing"]
    entries = json.loads((out / "export" / "af3" / "mf_skills.json").read_text())
    sounds = {e["id"].split(":")[0]: e["sound"] for e in entries}
    vocals = made["vocals"]  # song_id -> .../a/vocals.flac, .../b/vocals.flac
    assert len({sounds[sid] for sid in vocals}) == 2
    for sid, source in vocals.items():
        assert sounds[sid] == f"audio/{sid}.flac"
        assert (out / "export" / "af3" / sounds[sid]).read_bytes() == Path(source).read_bytes()
    # The default links the sources in place; a rerun keeps the same paths.
    written = af3.write(store, corpus.current_root(store), dest=str(out / "af3-linked"))
    for sid, source in vocals.items():
        assert os.readlink(out / "af3-linked" / "audio" / f"{sid}.flac") == source
    # And the training formats key them by song_id too: two samples, two keys.
    wds = _export(out, "webdataset", dest=str(out / "wds"))
    keys = [n for t in (out / "wds" / "data").glob("*.tar") for n in tarfile.open(t).getnames()]
    assert {f"{sid}.flac" for sid in vocals} <= set(keys) and len(keys) == len(set(keys)) == 2 * wds.manifest["samples"]


def test_a_song_whose_audio_is_gone_is_accounted_for(made):
    out = copy_out(made["out"], made["out"].parent / "out-gone")
    gone = made["timed"]

    def move_away(rows):
        for row in rows:
            if row["song_id"] == gone:
                row["source"] = str(out.parent / "moved-away.mp3")
        return rows

    _rewrite(out / "ingest", move_away)
    store = OutputStore(out)
    corpus.build(store, _settings(), RunInfo(run_id="20990101T000001-gone", config_hash="gone"))
    proc = run_mfpipe("export", str(out), "--format", "webdataset", "--set", "profile=cpu")
    assert "moved-away.mp3" in proc.stderr  # said, and the export went on
    manifest = json.loads((out / "export" / "webdataset" / "manifest.json").read_text())
    assert [f["song_id"] for f in manifest["failed"]] == [gone] and "moved-away.mp3" in manifest["failed"][0]["error"]
    assert manifest["songs"] == manifest["samples"] == len(made["songs"]) - 1
    assert "could not be decoded again" in (out / "export" / "README.md").read_text()
    written = af3.write(store, corpus.current_root(store))
    assert [m["song_id"] for m in written["audio"]["missing"]] == [gone]
    assert written["audio"]["songs"] == len(made["songs"])


# ------------------------------------------------------------------ interrupted, resumed, remote

KILL = """
import os, signal, sys
from mfpipe.curate import export as corpus
from mfpipe.curate.audio_export import export_audio
from mfpipe.pipeline.config import load_config
from mfpipe.store import OutputStore

def die(event, seq):
    if (event, seq) == (sys.argv[2], int(sys.argv[3])):
        os.kill(os.getpid(), signal.SIGKILL)

store = OutputStore(sys.argv[1])
cfg = load_config(None, ["profile=cpu", "export.audio_shard_max_mb=0.01"])
export_audio(store, corpus.current_root(store), "webdataset", cfg.export, on_event=die)
"""


def test_a_killed_export_resumes_without_duplicates(made):
    """A real process is killed (SIGKILL) at a deterministic point: after shard 1's tar was renamed into
    data/ and before its commit record was written (the `on_event` hook of `export_audio`)."""
    out = copy_out(made["out"], made["out"].parent / "out-kill")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL), str(out), "published", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == -9, proc.stderr[-2000:]
    folder = out / "export" / "webdataset"
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
    assert [p.name for p in (folder / "_progress").iterdir()] == ["000000.json"]
    assert not (folder / "manifest.json").exists()
    first = (folder / "data" / "shard-000000.tar").stat()

    proc = run_mfpipe("export", str(out), "--format", "webdataset", "--set", "profile=cpu",
                      "--set", "export.audio_shard_max_mb=0.01")
    said = proc.stdout + proc.stderr  # progress lines go to stderr
    assert "resuming after shard 0" in said and "removed 1 file(s)" in said
    tars = sorted((folder / "data").glob("*.tar"))
    assert len(tars) == len(made["songs"]) == len(list((folder / "_progress").iterdir()))
    assert (folder / "data" / "shard-000000.tar").stat().st_mtime_ns == first.st_mtime_ns  # not redone
    keys = [n.rsplit(".", 1)[0] for t in tars for n in tarfile.open(t).getnames() if n.endswith(".json")]
    assert sorted(keys) == sorted(made["songs"])  # every song once
    assert not (folder / "_staging").exists()
    # Complete: a rerun has nothing to do; other settings start over.
    assert _export(out, "webdataset", "export.audio_shard_max_mb=0.01").skipped
    said = []
    store = OutputStore(out)
    export_audio(store, corpus.current_root(store), "webdataset", _settings(), log=said.append)
    assert any("starting over" in line for line in said) and len(list((folder / "data").glob("*.tar"))) == 1


def test_remote_destination_commits_each_shard(made, monkeypatch):
    """An fsspec destination (in-memory filesystem: no rename there): each shard is one PUT, then its
    commit record; a shard without a record is removed by the next run, which resumes. The songs are
    spread over several buckets here, so the resumed order crosses buckets too."""
    import fsspec

    from mfpipe.curate import audio_export

    monkeypatch.setattr(audio_export, "ROWS_PER_BUCKET", 10)

    url = f"memory://mfpipe-audio-{uuid.uuid4().hex[:8]}/wds"
    stop = {"seq": 1}

    def die(event, seq):
        if (event, seq) == ("published", stop["seq"]):
            raise KeyboardInterrupt("killed")

    store = OutputStore(made["out"])
    cfg = _settings("export.audio_shard_max_mb=0.01")
    with pytest.raises(KeyboardInterrupt):
        export_audio(store, corpus.current_root(store), "webdataset", cfg, dest=url, on_event=die)
    fs, root = fsspec.core.url_to_fs(url)
    assert len(fs.ls(f"{root}/data")) == 2 and len(fs.ls(f"{root}/_progress")) == 1
    result = export_audio(store, corpus.current_root(store), "webdataset", cfg, dest=url)
    assert result.resumed_after == 1 and result.manifest["shards"] == len(made["songs"])
    commits = [json.loads(fs.cat(p)) for p in sorted(fs.ls(f"{root}/_progress", detail=False))]
    order = [(c["last_bucket"], c["last_song_id"]) for c in commits]
    assert order == sorted(order) and len({b for b, _ in order}) > 1
    keys = []
    for path in sorted(fs.ls(f"{root}/data", detail=False)):
        with fs.open(path, "rb") as fh, tarfile.open(fileobj=io.BytesIO(fh.read())) as tf:
            keys += [n for n in tf.getnames() if n.endswith(".json")]
    assert len(keys) == len(set(keys)) == len(made["songs"])
    assert json.loads(fs.cat(f"{root}/manifest.json"))["complete"] is True
