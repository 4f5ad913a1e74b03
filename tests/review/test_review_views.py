"""The song list's filters, sort and pages, and the pages through the app, on a small synthetic corpus
(stage rows written with the real record schemas; no audio behind them)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from mfpipe.review import views
from mfpipe.review.app import create_app
from mfpipe.review.corpus import CorpusIndex
from mfpipe.review.decisions import DecisionStore, new_decision
from mfpipe.review.items import synthesize_items
from mfpipe.review.media import AudioFiles, browser_type
from mfpipe.store import OutputStore
from support.corpus import Plan, fake_songs, write_llm_stages
from support.helpers import tone_song


@pytest.fixture
def small(tmp_path):
    out = tmp_path / "out"
    fake_songs(out, 6)
    write_llm_stages(out, Plan(unjudged=1, stale=1))
    return out, CorpusIndex(OutputStore(out)).refresh()


def _ids(listing: dict) -> list[str]:
    return [r["song"].song_id for r in listing["rows"]]


def test_filters_sort_and_pages(small, monkeypatch):
    out, index = small
    everything = views.song_list(index, [], views.ListQuery())
    assert everything["matched"] == 6 and len(everything["rows"]) == 6
    judged = {v: _ids(views.song_list(index, [], views.ListQuery(judged=v))) for v in ("yes", "no", "stale")}
    assert [len(judged[v]) for v in ("yes", "no", "stale")] == [4, 1, 1]
    # Every third QA item is dropped by the filter; only songs with a fresh verdict have dropped items.
    dropped = _ids(views.song_list(index, [], views.ListQuery(skill="attribute", verdict="dropped")))
    assert sorted(dropped) == sorted(judged["yes"])
    assert _ids(views.song_list(index, [], views.ListQuery(think="none"))) == \
        [s for s in _ids(everything) if s in judged["no"] + judged["stale"]]
    # A person's decision shows up in the review filter.
    song = index.songs[judged["yes"][0]]
    synth = [r for r in pq.read_table(sorted((out / "synthesize").glob("*.parquet"))).to_pylist()
             if r["song_id"] == song.song_id][0]
    item = synthesize_items(synth)[3]
    store = DecisionStore(OutputStore(out))
    store.record(new_decision("ana", item, "drop"))
    decisions = store.load()
    assert _ids(views.song_list(index, decisions, views.ListQuery(review="drop"))) == [song.song_id]
    assert _ids(views.song_list(index, decisions, views.ListQuery(review="reviewed", skill=item.skill))) == \
        [song.song_id]
    assert _ids(views.song_list(index, decisions, views.ListQuery(review="drop", skill="caption"))) == []
    first = views.song_list(index, decisions, views.ListQuery(sort="unreviewed"))["rows"]
    assert first[-1]["song"].song_id in (song.song_id, *judged["no"])  # fewest items left to review last
    # Pages: the list shows PAGE_SIZE songs at a time, next / previous keep the filters.
    monkeypatch.setattr(views, "PAGE_SIZE", 4)
    one = views.song_list(index, [], views.ListQuery(sort="duration"))
    two = views.song_list(index, [], views.ListQuery(sort="duration", page="2"))
    assert (one["pages"], len(one["rows"]), len(two["rows"])) == (2, 4, 2)
    assert one["next_page"] == "sort=duration&page=2" and two["prev_page"] == "sort=duration"
    durations = [r["song"].duration_s for r in one["rows"] + two["rows"]]
    assert durations == sorted(durations, reverse=True)


def test_pages_render_and_missing_audio_is_a_404(small):
    out, index = small
    song_id = index.order[0]
    with TestClient(create_app(str(out), "ana"), base_url="http://127.0.0.1") as client:
        listing = client.get("/", params={"judged": "yes"})
        assert listing.status_code == 200 and listing.text.count('<tr class="song') == 4
        page = client.get(f"/song/{song_id}")
        assert page.status_code == 200 and page.text.count("<article") == len(index.songs[song_id].items)
        assert "content-security-policy" in page.headers and "'unsafe-eval'" not in page.headers[
            "content-security-policy"]
        missing = client.get(f"/audio/{song_id}")  # the synthetic songs have no files behind them
        assert missing.status_code == 404 and "no longer there" in missing.text
        assert client.get("/song/" + "f" * 64).status_code == 404


def test_the_app_works_on_an_object_store_output(small):
    """The same corpus on an fsspec filesystem (memory://, committed the way runs commit on object stores):
    the pages read it and a decision is committed there."""
    out, index = small
    remote = OutputStore(f"memory://review-{uuid.uuid4().hex[:8]}/out")
    for path in sorted(out.rglob("part-*.parquet")):
        folder = remote.join(*path.parent.relative_to(out).parts)
        remote.fs.makedirs(folder, exist_ok=True)
        remote.write_table_atomic(folder, path.name, pq.read_table(path))
    song_id = next(s for s in index.order if index.songs[s].judged == "yes")
    with TestClient(create_app(remote.url, "ana"), base_url="http://127.0.0.1") as client:
        assert client.get("/").text.count('<tr class="song') == 6
        page = client.get(f"/song/{song_id}").text
        key = re.search(r'<meta name="review-key" content="([^"]+)"', page).group(1)
        item, sha = re.search(r'data-key="([^"]+:qa:2)" data-sha="([0-9a-f]+)"', page).groups()
        body = {"item": item, "sha256": sha, "action": "keep", "reason": "other"}
        assert client.post("/api/decision", json=body).status_code == 403  # not from the page
        saved = client.post("/api/decision", json=body, headers={"X-Review-Key": key})
        assert saved.status_code == 200 and saved.json()["review"]["state"] == "keep"
        changed = client.post("/api/decision", json={**body, "sha256": "0" * 64}, headers={"X-Review-Key": key})
        assert changed.status_code == 409 and "reload" in changed.json()["error"]
        edit = client.post("/api/decision", headers={"X-Review-Key": key},
                           json={**body, "action": "edit", "edit": {"question": "Q?", "answer": ""}})
        assert edit.status_code == 409 and "answer is empty" in edit.json()["error"]
    (decision,) = DecisionStore(OutputStore(remote.url)).load()
    assert (decision["item"], decision["reviewer"], decision["reason"]) == (item, "ana", "other")
    assert remote.fs.exists(remote.join("reviews", "decisions", "_committed"))


def test_remote_audio_is_copied_or_transcoded_for_the_player(tmp_path):
    """Sources on an fsspec filesystem: a FLAC is served as a local copy of its bytes, an AIFF decoded by the
    pipeline's decoder into 16-bit WAV; both kept in the app's small cache."""
    root = f"memory://review-audio-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    for name, fmt in (("song.flac", "FLAC"), ("tape.aiff", "AIFF")):
        local = tone_song(tmp_path / name, 3.0, sr=16000, fmt=fmt, seed=1)
        fs.pipe_file(f"{root}/{name}", local.read_bytes())
    files = AudioFiles(max_cached=1)
    try:
        path, media = files.file("a" * 64, f"{root}/song.flac", "PCM_16", 16000)
        assert media == "audio/flac" and open(path, "rb").read() == (tmp_path / "song.flac").read_bytes()
        path, media = files.file("b" * 64, f"{root}/tape.aiff", "PCM_16", 16000)
        data, rate = sf.read(path)
        assert media == "audio/wav" and rate == 16000 and abs(len(data) - 3 * 16000) < 2
        assert sf.info(path).subtype == "PCM_16"
        assert len(list(Path(path).parent.iterdir())) == 1  # the cache keeps max_cached files
    finally:
        files.close()
    assert browser_type("x.wav", "PCM_24") == "audio/wav" and browser_type("x.wav", "ULAW") is None
    assert browser_type("x.MP3", None) == "audio/mpeg" and browser_type("x.wma", None) is None
