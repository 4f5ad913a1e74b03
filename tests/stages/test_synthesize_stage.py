"""The synthesize stage in-process: the prompts it builds (untrusted text stays data), how it
assembles records, and what it does when the server fails."""

from __future__ import annotations

import json
import re

import pytest

from mfpipe.pipeline.stage import Deferred, RunInfo
from mfpipe.prompts import load_prompt
from mfpipe.schemas import Reject
from mfpipe.schemas.synthesize import SKILLS, qa_draft
from mfpipe.stages.synthesize import SynthesizeStage
from support.fault_proxy import FaultProxy
from support.llm_data import INJECTED_FILE, INJECTION, TRUTH, cpu_config, song_row

BY_FILE = {song["file"]: song for song in TRUTH}


def make_stage(*overrides: str, url: str = "http://127.0.0.1:9/v1") -> SynthesizeStage:
    stage = SynthesizeStage.from_config(cpu_config(f"llm.base_url={url}", *overrides), RunInfo("test-run", "test-hash"))
    stage.setup()
    return stage


@pytest.fixture
def stage():
    stage = make_stage()
    yield stage
    stage.teardown()


def data_block(message: str) -> str:
    match = re.search(r"<<<DATA\n(.*)\nDATA>>>", message, re.S)
    assert match, "the untrusted data block is missing"
    return match.group(1)


def test_one_request_per_part_sharing_a_prefix(stage):
    requests = stage.requests(song_row(BY_FILE["anna_waltz.flac"]))
    assert [r.part for r in requests] == ["caption", "metadata", *(f"qa/{s}" for s in SKILLS)]
    systems = {r.messages[0]["content"] for r in requests}
    assert len(systems) == 1
    users = [r.messages[1]["content"] for r in requests]
    prefix = users[0].split("TASK:")[0]
    assert all(u.startswith(prefix) for u in users)  # the server's prefix cache reads the song once
    assert "Tempo: 90.0 BPM" in prefix and "Key: A minor" in prefix and "Meter: 3 beats per bar (3/4)" in prefix


def test_injected_lyrics_stay_quoted_data(stage):
    row = song_row(BY_FILE[INJECTED_FILE], injection=INJECTION)
    for request in stage.requests(row):
        system, user = (m["content"] for m in request.messages)
        assert "ZEBRAFISH" not in system
        block = data_block(user)
        outside = user.replace(block, "")
        assert "ZEBRAFISH" not in outside and "IGNORE ALL" not in outside
        data = json.loads(block)  # still one JSON document: the text could not break out of it
        lyrics = " ".join(data["lyrics"])
        assert "IGNORE ALL PREVIOUS INSTRUCTIONS" in lyrics
        assert "</DATA>" not in block and "DATA>>>" not in block  # delimiters cannot be forged
        assert request.model.model_json_schema() == stage.requests(song_row(BY_FILE["slow_tide.flac"]))[
            [r.part for r in stage.requests(row)].index(request.part)].model.model_json_schema()


def test_one_songs_data_never_reaches_another_songs_prompt(stage):
    rows = [song_row(song, injection=INJECTION if song["file"] == INJECTED_FILE else None) for song in TRUTH]
    for row in rows:
        text = json.dumps([r.messages for r in stage.requests(row)])
        others = [s for s in TRUTH if s["file"] != row["source"].rsplit("/", 1)[-1]]
        assert all(s["file"] not in text for s in others)
        if not row["source"].endswith(INJECTED_FILE):
            assert "ZEBRAFISH" not in text


def test_song_without_upstream_is_a_retryable_reject(stage):
    row = song_row(BY_FILE["slow_tide.flac"])
    row.update(mir=None, caption=None, lyrics=None)
    [result] = stage.process_batch([row])
    assert isinstance(result, Reject)
    assert result.error == "no_upstream" and result.retryable


def test_choice_answers_are_options_in_a_stable_shuffled_order(stage):
    model = qa_draft(1, 2, 4)
    draft = model.model_validate({
        "open": [{"question": "When do the vocals enter?", "answer": "At 0:08."}],
        "multiple_choice": [
            {"question": "What is the meter?", "options": ["4/4", "3/4", "6/8", "5/4"], "correct": "A"},
            {"question": "Which chord follows C?", "options": ["F", "G", "Am", "Dm"], "correct": "B"}]})
    row = {"song_id": "abc"}
    items = stage._qa_items(row, "attribute", draft)
    assert [i.options for i in items][0] == []
    assert items[1].answer == "4/4" and sorted(items[1].options) == ["3/4", "4/4", "5/4", "6/8"]
    assert items[2].answer == "G" and items[2].answer in items[2].options
    assert [i.options for i in stage._qa_items(row, "attribute", draft)] == [i.options for i in items]


def test_duplicate_options_do_not_validate():
    model = qa_draft(0, 1, 4)
    with pytest.raises(ValueError, match="different"):
        model.model_validate({"multiple_choice": [
            {"question": "Tempo?", "options": ["120", "120 ", "90", "60"], "correct": "A"}]})


def test_the_prompt_is_versioned():
    prompt = load_prompt("synthesize")
    assert prompt.id == "synthesize" and prompt.version == "v3" and len(prompt.sha256) == 64
    assert "Write as a listener" in prompt.text  # v3: no tools, no file name, grounded times
    assert load_prompt("synthesize.v1").version == "v1"  # old rows keep their prompt


@pytest.mark.parametrize("version", ["synthesize.v1", "synthesize.v2"])
def test_older_prompt_versions_still_render(version):
    stage = make_stage(f"synthesize.prompt={version}")
    try:
        requests = stage.requests(song_row(BY_FILE["anna_waltz.flac"]))
    finally:
        stage.teardown()
    assert [r.part for r in requests] == ["caption", "metadata", *(f"qa/{s}" for s in SKILLS)]
    assert all("TASK:" in r.messages[1]["content"] for r in requests)


@pytest.mark.slow
def test_server_errors_defer_the_song_to_the_runner(llm_server):
    """A 500 on every request says nothing about the song: it comes back deferred (the runner checks
    the server and pauses; a song that keeps failing while the server answers is rejected there)."""
    with FaultProxy(llm_server.root_url) as proxy:
        proxy.default = "500"
        stage = make_stage("llm.max_retries=1", "llm.backoff_s=0.01", "llm.backoff_max_s=0.05", url=proxy.url)
        try:
            [result] = stage.process_batch([song_row(BY_FILE["night_drive.ogg"])])
        finally:
            stage.teardown()
    assert isinstance(result, Deferred) and result.service == "llm"
    assert "InternalServerError" in result.message
    assert proxy.posts == 7 * 2  # seven parts, each tried twice


def test_repeated_options_drop_that_item_not_the_song(stage):
    from mfpipe.backends.llm import Result

    raw = json.dumps({"open": [{"question": "Which instrument leads?", "answer": "The cello."}],
                      "multiple_choice": [{"question": "Tempo?", "options": ["90", "90", "60", "120"],
                                           "correct": "A"}]})
    request = next(r for r in stage.requests(song_row(BY_FILE["anna_waltz.flac"])) if r.part == "qa/attribute")
    notes: list[str] = []
    draft = stage._salvage(request, Result(error="invalid_output", message="x", raw=raw), notes)
    assert [q.question for q in draft.open] == ["Which instrument leads?"]
    assert draft.multiple_choice == []
    assert notes == ["qa/attribute: dropped 1 multiple-choice item(s) whose options repeat"]
    assert stage._salvage(request, Result(error="invalid_output", message="x", raw="{"), []) is None
    assert stage._salvage(request, Result(error="timeout", message="x"), []) is None


@pytest.mark.slow
def test_a_caption_too_short_to_be_rich_gets_one_repair_then_a_reject(llm_server):
    """40 words are asked for within 160 characters: the model cannot, the repair cannot either."""
    stage = make_stage("synthesize.target_words=40", "synthesize.caption_chars_per_word=4",
                       "synthesize.caption_min_ratio=1", url=llm_server.base_url)
    try:
        [result] = stage.process_batch([song_row(BY_FILE["night_drive.ogg"])])
    finally:
        stage.teardown()
    assert isinstance(result, Reject) and result.error == "caption_too_short" and result.retryable
    assert "at least 40" in result.message and "after one repair request" in result.message
