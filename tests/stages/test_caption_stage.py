"""The caption stage on its own (no Ray): window counts and spans, batching across songs, rejects."""

from __future__ import annotations

import json

import pytest

from mfpipe.schemas import CaptionRecord, Reject
from mfpipe.stages.caption import CaptionStage


@pytest.fixture(scope="module")
def caption_stage(audio_config, audio_run_info):
    stage = CaptionStage.from_config(audio_config, audio_run_info)
    stage.setup()
    return stage


def test_windows_for_10_70_and_over_1200_seconds(caption_stage, audio_ingest_rows):
    rows = [audio_ingest_rows[name] for name in ("ten", "seventy", "long")]
    assert rows[2]["truncated"] and rows[2]["processed_s"] == 1200.0
    ten, seventy, long = caption_stage.process_batch(rows)
    assert [(w.start, w.end) for w in ten.windows] == [(0.0, 10.0)]
    assert [(w.start, w.end) for w in seventy.windows] == [(0.0, 30.0), (30.0, 60.0), (60.0, 70.0)]
    assert len(long.windows) == 40 == rows[2]["n_windows"]
    assert long.windows[-1].start == 1170.0 and long.windows[-1].end == 1200.0
    for record, row in zip((ten, seventy, long), rows):
        assert isinstance(record, CaptionRecord) and record.song_id == row["song_id"]
        assert len(record.windows) == row["n_windows"]
        assert all(isinstance(w.text, str) for w in record.windows)
        assert all(a.end == b.start for a, b in zip(record.windows, record.windows[1:]))


def test_batched_across_songs_equals_song_by_song(caption_stage, audio_ingest_rows):
    rows = [audio_ingest_rows["ten"], audio_ingest_rows["seventy"]]
    together = caption_stage.process_batch(rows)
    alone = [caption_stage.process_batch([row])[0] for row in rows]
    assert [[w.text for w in r.windows] for r in together] == [[w.text for w in r.windows] for r in alone]


def test_a_song_that_cannot_be_decoded_is_rejected_alone(caption_stage, audio_ingest_rows):
    rows = [audio_ingest_rows["ten"], audio_ingest_rows["corrupt"], audio_ingest_rows["seventy"]]
    ten, corrupt, seventy = caption_stage.process_batch(rows)
    assert isinstance(corrupt, Reject) and corrupt.song_id == "corrupt-song"
    assert corrupt.error in ("not_audio", "decode_error") and corrupt.message
    assert isinstance(ten, CaptionRecord) and isinstance(seventy, CaptionRecord)


def test_provenance_names_model_prompt_settings_and_the_noise(caption_stage, audio_ingest_rows):
    (record,) = caption_stage.process_batch([audio_ingest_rows["ten"]])
    prov = record.provenance
    (model,) = prov.models
    assert model.role == "surface_captioner" and model.random_weights and model.revision
    assert prov.prompt.id == "caption_window" and prov.prompt.version == "v2" and len(prov.prompt.sha256) == 64
    settings = json.loads(prov.settings)
    assert settings["decoding"] == "greedy" and settings["max_new_tokens"] == 24
    assert any("NOISE" in note for note in prov.notes)
    assert {t.name for t in prov.tools} == {"transformers", "torch"}


def test_banner_warns_about_random_weights(audio_config):
    (note,) = CaptionStage.banner_notes(CaptionStage.settings_from(audio_config))
    assert "RANDOM-WEIGHT" in note and "noise" in note
    production = audio_config.model_copy(update={"caption": audio_config.caption.model_copy(
        update={"model": "nvidia/music-flamingo-2601-hf"})})
    assert CaptionStage.banner_notes(CaptionStage.settings_from(production)) == []
