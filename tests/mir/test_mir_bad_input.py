"""Bad input never kills the stage: short or silent songs get null fields and a note, files that
no longer decode become reject rows."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from mfpipe.mir import SAMPLE_RATE, MirAnalyzer
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import MirRecord, Reject
from mfpipe.stages.mir import MirStage
from support.render_mir import TEST_SONGS, render

pytestmark = pytest.mark.slow


def _notes_for(facts, tool):
    return [n for n in facts.notes if n.startswith(f"{tool}:")]


def test_too_short_for_every_tool_but_loudness(analyzer):
    song = render(TEST_SONGS[0])[: int(2.5 * SAMPLE_RATE)]
    facts = analyzer.analyse(song)
    assert facts.bpm is None and facts.beats == [] and facts.meter is None
    assert facts.key is None and facts.mode is None and facts.chords == []
    assert facts.loudness_lufs is not None
    for tool in ("beats", "key", "chords"):
        (note,) = _notes_for(facts, tool)
        assert "shorter than" in note and f"mir.{tool}.min_duration_s" in note
    assert "beats" not in facts.cpu_s  # skipped tools cost nothing


def test_too_short_for_beats_only(analyzer):
    facts = analyzer.analyse(render(TEST_SONGS[0])[: 5 * SAMPLE_RATE])
    assert facts.bpm is None and _notes_for(facts, "beats")
    assert (facts.key, facts.mode) == ("C", "major")
    assert facts.chords and facts.chords[0]["label"] in ("N", "C")


def test_silence(analyzer):
    facts = analyzer.analyse(np.zeros(10 * SAMPLE_RATE, dtype=np.float32))
    assert facts.beats == [] and facts.bpm is None and facts.meter is None
    assert facts.key is None and "no tonal content" in _notes_for(facts, "key")[0]
    assert facts.loudness_lufs is None and "absolute gate" in _notes_for(facts, "loudness")[0]
    assert {c["label"] for c in facts.chords} == {"N"}
    assert "fewer than mir.beats.min_beats" in _notes_for(facts, "beats")[0]


def test_a_click_then_silence_has_no_tempo(analyzer):
    click = np.zeros(10 * SAMPLE_RATE, dtype=np.float32)
    click[:20] = 0.9
    facts = analyzer.analyse(click)
    assert facts.bpm is None and facts.meter is None and facts.downbeats == []
    assert _notes_for(facts, "beats")


def test_disabled_tools_are_not_loaded():
    cfg = load_config(overrides=["profile=cpu", "mir.beats.enabled=false", "mir.chords.enabled=false",
                                 "mir.form.enabled=false"]).mir
    analyzer = MirAnalyzer(cfg)
    assert set(analyzer.tools) == {"key", "loudness"}
    facts = analyzer.analyse(render(TEST_SONGS[1]))
    assert facts.beats == [] and facts.chords == [] and facts.key == "A" and facts.sections == []
    assert {t.name for t in analyzer.tool_versions()} == {"essentia"}


@pytest.fixture(scope="module")
def stage():
    config = load_config(overrides=["profile=cpu"])
    stage = MirStage.from_config(config, RunInfo(run_id="test", config_hash=config.content_hash()))
    stage.setup()
    return stage


def test_stage_rejects_files_it_cannot_read_and_keeps_going(stage, tmp_path):
    good = tmp_path / "good.flac"
    sf.write(good, render(TEST_SONGS[1]), SAMPLE_RATE)
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"not audio at all " * 100)
    rows = [
        {"song_id": "a", "source": str(tmp_path / "gone.flac"), "processed_s": 10.0, "truncated": False},
        {"song_id": "b", "source": str(garbage), "processed_s": 10.0, "truncated": False},
        {"song_id": "c", "source": str(good), "processed_s": 12.0, "truncated": True},
    ]
    results = {r.song_id: r for r in stage.process_safely(rows)}
    assert isinstance(results["a"], Reject) and results["a"].error == "missing" and results["a"].retryable
    assert isinstance(results["b"], Reject) and results["b"].error in ("not_audio", "decode_error")
    record = results["c"]
    assert isinstance(record, MirRecord)
    # Only `processed_s` seconds are analysed, and the row says the song was cut.
    assert max(record.beats) < 12.0 and record.chords[-1].end <= 12.0
    assert any("truncated" in n for n in record.provenance.notes)
    names = {t.name for t in record.provenance.tools}
    assert {"madmom", "onnxruntime", "essentia", "nnls-chroma:chordino"} <= names


def test_long_songs_are_decoded_in_segments_like_one_pass(analyzer):
    """Chunked features and segmented DBN decoding (bounded memory) give the beats of one pass."""
    from mfpipe.mir.analysis import BeatTracker
    from mfpipe.mir.config import MirBeatsConfig
    from mfpipe.mir.evaluate import matched_fraction
    from support.render_mir import SongSpec

    song = render(SongSpec(126, 4, "E", "minor", ["Em", "C", "D", "B7"], bars=50, seed=9))  # 96 s
    tracker = analyzer.tools["beats"]
    whole = BeatTracker(MirBeatsConfig(chunk_s=0, dbn_segment_s=0))
    features = tracker.rnn.processors[0]
    assert np.allclose(tracker.features(song, features), whole.features(song, features), atol=1e-5)
    activations = tracker.activations(song)
    segmented, meter = tracker.decode(activations)
    single, single_meter = whole.decode(activations)
    assert meter == single_meter == 4
    assert matched_fraction(segmented[:, 0].tolist(), single[:, 0].tolist(), 0.011) >= 0.99
    assert matched_fraction(single[:, 0].tolist(), segmented[:, 0].tolist(), 0.011) >= 0.99


def test_onnx_sessions_keep_no_arena(analyzer):
    """madmom's 8 downbeat networks must not each keep an arena sized by the longest song."""
    networks = analyzer.tools["beats"].rnn.processors[1].processors[0].processors
    assert len(networks) == 8
    assert not any(n._runtime.session_options.enable_cpu_mem_arena for n in networks)
