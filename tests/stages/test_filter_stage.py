"""The filter stage in-process with the tiny audio-LM (real Music Flamingo architecture, random
weights): a row for every synthesized song, every item judged with readable reasons, MIR
contradictions dropped, the audio-LM's own answers to multiple-choice items, rejects."""

from __future__ import annotations

import json

import pytest

from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import FilterRecord, Reject
from mfpipe.stages.filter import FilterStage
from support.think_data import HARBOR, TRUTH, config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def judged(filter_stage, song_rows):
    names = list(TRUTH)
    return dict(zip(names, filter_stage.process_batch([song_rows[n] for n in names])))


def test_a_row_for_every_synthesized_song_with_every_item_judged(judged, song_rows):
    for name, record in judged.items():
        assert isinstance(record, FilterRecord), record
        assert record.song_id == song_rows[name]["song_id"]
        qa = song_rows[name]["synthesize"]["qa"]
        assert [q.index for q in record.qa] == list(range(len(qa)))
        assert [q.skill for q in record.qa] == [q["skill"] for q in qa]
        assert record.kept_items + record.dropped_items == 1 + len(qa)
        assert record.kept_items == record.caption.keep + sum(q.keep for q in record.qa)
        for item in [record.caption, *record.qa]:
            assert item.reasons and item.reasons[0].startswith("kept" if item.keep else "dropped")
            assert item.windows and all(0 <= w < song_rows[name]["n_windows"] for w in item.windows)


def test_an_answer_that_contradicts_mir_is_dropped_with_the_reason(judged):
    for _name, record in judged.items():
        right, wrong = record.qa[0], record.qa[1]
        assert not wrong.keep
        assert any(f.startswith("bpm:") and "beat tracker measured" in f for f in wrong.flags)
        assert "contradicts the MIR facts" in wrong.reasons[0]
        assert right.flags == []
        # the caption states the right tempo, key and chords
        assert record.caption.flags == []


def test_the_tiny_model_does_not_commit_so_items_are_unjudged_and_kept_here(judged):
    # cpu profile: keep_unjudged (the random-weight model puts ~1% on yes/no)
    record = judged[HARBOR]
    for item in (record.caption, record.qa[3]):
        assert item.keep and item.p_yes is None and item.score is None
        assert any("not judged by the audio-LM" in r and "filter.keep_unjudged" in r for r in item.reasons)
    # qa[0] answers the tempo, which MIR measured and confirms: MIR decides, not the audio-LM
    assert record.qa[0].keep and any(r.startswith("MIR decides") for r in record.qa[0].reasons)


def test_multiple_choice_items_are_answered_by_the_audio_lm(judged, song_rows):
    for name, record in judged.items():
        item = song_rows[name]["synthesize"]["qa"][2]
        choice = record.qa[2]
        assert choice.audio_lm_answer in item["options"]
        assert choice.audio_lm_correct == (choice.audio_lm_answer == item["answer"])
        assert 0.0 < choice.audio_lm_p <= 1.0
        assert any("the audio-LM chose" in r for r in choice.reasons)
        assert all(q.audio_lm_answer is None for i, q in enumerate(record.qa) if i != 2)


def test_without_keep_unjudged_only_confirmed_items_survive(tiny_audio_lm, song_rows):
    stage = FilterStage.from_config(config("filter.keep_unjudged=false", "filter.drop_on_mir_flags=false"),
                        RunInfo("test-think", "strict"))
    stage.setup()
    (record,) = stage.process_batch([song_rows[HARBOR]])
    # only what MIR covers and confirms survives: qa[0] (the tempo) and qa[2] (the key)
    assert [q.keep for q in record.qa] == [True, False, True, False] and not record.caption.keep
    unconfirmed = [record.caption, record.qa[1], record.qa[3]]
    assert all("only confirmed items are kept" in " ".join(i.reasons) for i in unconfirmed)
    wrong = record.qa[1]  # MIR flags are still reported, but no longer drop on their own
    assert wrong.flags and "did not confirm" in wrong.reasons[0] and "MIR" not in wrong.reasons[0]


def test_time_references_pick_the_windows_heard(filter_stage, song_rows):
    row = json.loads(json.dumps(song_rows[HARBOR]))
    row["synthesize"]["qa"] = [{"skill": "temporal", "question": "What enters at 0:40?", "answer": "A flute.",
                                "options": []}]
    (record,) = filter_stage.process_batch([row])
    assert record.qa[0].windows == [1]  # 0:40 lies in the second 30 s window


def test_provenance_names_the_judge_prompt_and_the_noise(judged):
    prov = judged[HARBOR].provenance
    (model,) = prov.models
    assert model.role == "judge" and model.random_weights
    assert prov.prompt.id == "filter" and prov.prompt.version == "v2" and len(prov.prompt.sha256) == 64
    settings = json.loads(prov.settings)
    assert settings["qa_min_p_yes"] == 0.5 and settings["keep_unjudged"] is True
    assert set(settings["answer_formats"]) == {"audiolm_score", "audiolm_yes_no", "audiolm_choice"}
    assert any("NOISE" in n for n in prov.notes)


def test_songs_without_synthesis_or_audio_are_rejected_alone(filter_stage, song_rows, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    rows = [{**song_rows[HARBOR], "synthesize": None},
            {**song_rows[HARBOR], "song_id": "broken", "source": str(broken)},
            song_rows[HARBOR]]
    missing, undecodable, fine = filter_stage.process_batch(rows)
    assert isinstance(missing, Reject) and missing.error == "no_synthesize" and missing.retryable
    assert isinstance(undecodable, Reject) and undecodable.song_id == "broken" and not undecodable.retryable
    assert isinstance(fine, FilterRecord)
