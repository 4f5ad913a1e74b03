"""Fixtures for the review tests (`mfpipe review`): a corpus with the situations a curator meets, the
review server in a thread, and one headless Chromium per test module.

The corpus is a copy of the curator session's `exported` folder, plus:
- two songs ingested by the real CLI: one whose file name is HTML (hostile), one AIFF (a browser cannot
  play it, so the server transcodes it);
- MIR contradictions on one song (`flagged`): its caption states "999 BPM" and a QA answer a wrong key,
  both flagged in the synthesize row as the consistency checks flag them;
- hostile text from the "LLM" and the "ASR" on another song (`hostile`): script and markup in its
  caption, a question, an option and a lyric word.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mfpipe.schemas import LyricsRecord, to_table
from mfpipe.schemas.synthesize import ConsistencyFlag, SynthesizeRecord
from support.fixtures_curate import copy_out
from support.helpers import run_mfpipe, tone_song

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTILE_NAME = '<img src=x onerror="window.__pwned=1"> & co.wav'
HOSTILE_TEXT = ' <script>window.__xss=1</script> "quoted" & <b>bold</b>'
HOSTILE_QUESTION = '<img src=x onerror="window.__xss=2">Which instrument leads?'
HOSTILE_WORD = "<svg/onload=window.__xss=3>"


@dataclass
class ReviewCorpus:
    out: Path
    flagged: str  # song_id: a caption span and a QA answer contradict the MIR facts
    hostile: str  # song_id: markup and script in its texts and lyrics
    hostile_name: str  # song_id: a file named like HTML (ingest only)
    aiff: str  # song_id: an AIFF file (ingest only)
    bpm_flag: str  # the caption span the bpm flag marks
    key_flag_index: int  # the QA item whose answer the key flag marks


def _rewrite(path: Path, model: type, rows: list[dict]) -> None:
    pq.write_table(to_table([model(**r) for r in rows], model), path)


def _one(out: Path, stage: str) -> Path:
    (path,) = sorted((out / stage).glob("part-*.parquet"))
    return path


def build_review_corpus(out: Path, songs_dir: Path) -> ReviewCorpus:
    extra = songs_dir.parent / "review-extra"
    extra.mkdir(exist_ok=True)
    tone_song(extra / HOSTILE_NAME, 4.0, seed=3)
    tone_song(extra / "tape.aiff", 5.0, seed=4, fmt="AIFF", channels=2)
    run_mfpipe("run", "--stage", "ingest", "--input", str(extra), "--output", str(out), "--set", "profile=cpu")
    ingest = pq.read_table(sorted((out / "ingest").glob("part-*.parquet"))).to_pylist()
    by_name = {Path(r["source"]).name: r["song_id"] for r in ingest}
    filtered = {r["song_id"] for r in pq.read_table(_one(out, "filter")).to_pylist()}
    thought = {r["song_id"] for r in pq.read_table(_one(out, "think")).to_pylist()}
    synth_path = _one(out, "synthesize")
    synth = pq.read_table(synth_path).to_pylist()
    judged = sorted((r for r in synth if r["song_id"] in filtered & thought), key=lambda r: r["source"])
    flagged, hostile = judged[0], judged[1]
    # MIR contradictions, as synthesize's checks record them (the span the flag quotes is in the text).
    bpm = f"{flagged['metadata']['bpm']} BPM"
    flagged["caption"] = flagged["caption"].replace(bpm, "999 BPM")
    flagged["flags"] = [
        ConsistencyFlag(field="caption", check="bpm", stated="999 BPM", expected=bpm,
                        message=f"says 999 BPM; the beat tracker measured {bpm}").model_dump(),
        ConsistencyFlag(field="qa[1].answer", check="key", stated=flagged["qa"][1]["answer"], expected="A minor",
                        message=f"says {flagged['qa'][1]['answer']}; the key estimate is A minor").model_dump(),
    ]
    hostile["caption"] += HOSTILE_TEXT
    hostile["qa"][0]["question"] = HOSTILE_QUESTION
    hostile["qa"][1]["options"][3] = "<i>B minor</i>"
    _rewrite(synth_path, SynthesizeRecord, synth)
    lyrics_path = _one(out, "lyrics")
    lyrics = pq.read_table(lyrics_path).to_pylist()
    for row in lyrics:
        if row["song_id"] == hostile["song_id"]:
            row["words"] = row["words"] + [{"word": HOSTILE_WORD, "start": 2.0, "end": 2.4}]
    _rewrite(lyrics_path, LyricsRecord, lyrics)
    return ReviewCorpus(out=out, flagged=flagged["song_id"], hostile=hostile["song_id"],
                        hostile_name=by_name[HOSTILE_NAME], aiff=by_name["tape.aiff"], bpm_flag="999 BPM",
                        key_flag_index=1)


@pytest.fixture(scope="session")
def review_corpus(tmp_path_factory, exported, songs_dir) -> ReviewCorpus:
    """The review corpus (kept pristine: tests copy it with `copy_review_corpus`)."""
    out = copy_out(exported[0], tmp_path_factory.mktemp("review") / "out")
    return build_review_corpus(out, songs_dir)


def copy_review_corpus(corpus: ReviewCorpus, dest: Path) -> ReviewCorpus:
    return ReviewCorpus(**{**corpus.__dict__, "out": copy_out(corpus.out, dest)})


# ------------------------------------------------------------------ the server, in a thread


@contextlib.contextmanager
def review_server(out: Path, reviewer: str = "alice", host: str = "127.0.0.1") -> Iterator[str]:
    """The real app on uvicorn, on a free port, in a background thread; yields the URL it prints."""
    from mfpipe.review.serve import prepare, server

    served = prepare(str(out), reviewer, host, 0)
    uv = server(served)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [served.sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the review server did not start"
        time.sleep(0.05)
    try:
        yield served.url
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


# ------------------------------------------------------------------ the browser


def chrome():
    """Headless Debian Chromium through Selenium, with the Debian chromedriver (Selenium Manager is never asked
    to download anything) and a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), \
        "Debian chromium and chromium-driver are missing (scripts/install.sh installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="mfpipe-chrome-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.profile_dir = profile
    return driver


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module."""
    driver = chrome()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(driver.profile_dir, ignore_errors=True)
