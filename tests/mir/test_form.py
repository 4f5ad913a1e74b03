"""Song form (sections, repetition labels, names) on renders whose form is known.

Thresholds were measured on the renders of `tests/support/render_form.py` (bench/form.py
prints the figures) and are set with a margin below them: boundary F@3s and
pairwise label F measured 1.00 and >= 0.96 per render with the true beat grid,
1.00 and >= 0.96 with madmom's grid.
"""

from __future__ import annotations

import itertools
import time
import tracemalloc

import mir_eval
import numpy as np
import pytest

from mfpipe.mir.config import NAMES, FormConfig
from mfpipe.mir.form import analyse_form, bar_grid
from support import render_form as fs
from support.form_baseline import plain_laplacian
from support.render_mir import RATE

CFG = FormConfig()
RENDERS = {spec.name: spec for spec in (make() for make in fs.FORMS + fs.HELD_OUT)}


@pytest.fixture(scope="module")
def rendered():
    """name -> (spec, audio, result with the true beat grid); rendered and analysed once."""
    out = {}
    for name, spec in RENDERS.items():
        audio = fs.render_form(spec)
        result = analyse_form(audio, RATE, spec.beats(), spec.downbeats(), spec.duration_s, CFG)
        out[name] = (spec, audio, result)
    return out


def scores(spec: fs.FormSpec, sections: list[dict]) -> tuple[float, float]:
    ref_i, ref_l = spec.intervals_labels()
    est_i = np.array([[s["start"], s["end"]] for s in sections])
    est_l = [s["label"] for s in sections]
    f3 = mir_eval.segment.detection(ref_i, est_i, window=3)[2]
    pairwise = mir_eval.segment.pairwise(ref_i, ref_l, est_i, est_l)[2]
    return f3, pairwise


def assert_covers(sections: list[dict], duration_s: float) -> None:
    assert sections, "no sections"
    assert sections[0]["start"] == 0.0
    assert sections[-1]["end"] == pytest.approx(duration_s, abs=1e-3)
    for a, b in itertools.pairwise(sections):
        assert a["end"] == b["start"]
    for s in sections:
        assert s["end"] > s["start"]
        assert set(s) == {"start", "end", "label", "name", "confidence"}
        assert s["label"].isalpha() and s["label"].isupper()
        assert (s["name"] is None) == (s["confidence"] is None)
        assert s["name"] is None or (s["name"] in NAMES and CFG.name_min_confidence <= s["confidence"] <= 1)
    # Labels come in order of first appearance: A, then B, ...
    firsts = list(dict.fromkeys(s["label"] for s in sections))
    assert firsts == [chr(ord("A") + i) for i in range(len(firsts))]


def interior_boundaries(sections: list[dict]) -> list[float]:
    return [s["start"] for s in sections[1:]]


# ------------------------------------------------------------------ config and grid (fast)


def test_config_fields_are_described_and_strict():
    for name, info in FormConfig.model_fields.items():
        assert info.description, name
    with pytest.raises(ValueError):
        FormConfig(no_such_field=1)


def test_bar_grid_fills_gaps_and_extends_the_ends():
    notes: list[str] = []
    downbeats = [2.0, 4.0, 6.0, 12.0, 14.0]  # two bars missing between 6 and 12
    edges = bar_grid([], downbeats, 19.0, CFG, notes)
    assert edges[0] == 0.0 and edges[-1] == 19.0
    assert np.all(np.diff(edges) > 0)
    assert set(downbeats) <= set(np.round(edges, 6))
    np.testing.assert_allclose(edges, [0, 2, 4, 6, 8, 10, 12, 14, 16, 19])  # 18 is < half a bar from the end
    assert not notes


def test_bar_grid_without_downbeats_or_beats_says_why():
    notes: list[str] = []
    edges = bar_grid(np.arange(0, 30, 0.5), [], 30.0, CFG, notes)
    np.testing.assert_allclose(np.diff(edges[1:-1]), 2.0)
    assert "no downbeats" in notes[0]
    notes = []
    edges = bar_grid([], [], 30.0, CFG, notes)
    assert "fixed grid" in notes[0]
    np.testing.assert_allclose(np.diff(edges), CFG.fallback_bar_s)


# ------------------------------------------------------------------ bad input (fast)


def test_a_very_short_song_gets_no_sections_and_a_note():
    spec = fs.short_form(5)
    result = analyse_form(fs.render_form(spec), RATE, spec.beats(), spec.downbeats(), spec.duration_s, CFG)
    assert result.sections == []
    assert "shorter than form.min_duration_s" in result.notes[0]


def test_a_20_second_song_is_covered():
    spec = fs.short_form(20)
    result = analyse_form(fs.render_form(spec), RATE, spec.beats(), spec.downbeats(), spec.duration_s, CFG)
    assert_covers(result.sections, spec.duration_s)
    assert 1 <= len(result.sections) <= 3
    assert set(interior_boundaries(result.sections)) <= {round(t, 3) for t in spec.downbeats()}


def test_silence_gets_no_sections_and_a_note():
    result = analyse_form(np.zeros(RATE * 60, np.float32), RATE, [], [], 60.0, CFG)
    assert result.sections == [] and "silent" in result.notes[0]


def test_no_beats_falls_back_to_a_fixed_grid():
    spec = fs.short_form(40)
    audio = fs.render_form(spec)
    for beats in ([], np.array([])):
        result = analyse_form(audio, RATE, beats, np.array([]), spec.duration_s, CFG)
        assert_covers(result.sections, spec.duration_s)
        assert any("fixed grid" in n for n in result.notes)
    noise = (0.1 * np.random.default_rng(0).standard_normal(RATE * 45)).astype(np.float32)
    result = analyse_form(noise, RATE, [], [], 45.0, CFG)
    assert_covers(result.sections, 45.0)
    assert len({s["label"] for s in result.sections}) <= 2  # noise has no form to speak of


def test_disabled():
    result = analyse_form(np.zeros(RATE * 60, np.float32), RATE, [], [], 60.0, FormConfig(enabled=False))
    assert result.sections == [] and result.notes == ["form: disabled"]


# ------------------------------------------------------------------ quality on renders (true grid)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RENDERS))
def test_boundaries_and_labels_on_renders(rendered, name):
    spec, _, result = rendered[name]
    assert_covers(result.sections, spec.duration_s)
    f3, pairwise = scores(spec, result.sections)
    assert f3 >= 0.85, (f3, result.sections)
    assert pairwise >= 0.85, (pairwise, result.sections)
    # Every boundary is a downbeat of the grid it was given.
    downbeats = {round(t, 3) for t in spec.downbeats()}
    assert set(interior_boundaries(result.sections)) <= downbeats


@pytest.mark.slow
def test_mean_quality_and_better_than_the_textbook_baseline(rendered):
    tuned, plain = [], []
    for spec, audio, result in rendered.values():
        tuned.append(scores(spec, result.sections))
        plain.append(scores(spec, plain_laplacian(audio, RATE, spec.beats(), spec.duration_s).sections))
    tuned_mean, plain_mean = np.mean(tuned, axis=0), np.mean(plain, axis=0)
    assert tuned_mean[0] >= 0.95 and tuned_mean[1] >= 0.95, tuned_mean
    assert tuned_mean[0] >= plain_mean[0] + 0.2, (tuned_mean, plain_mean)


@pytest.mark.slow
def test_no_repetition_gives_all_different_labels_and_no_names(rendered):
    _, _, result = rendered["through_composed_d_minor_138"]
    labels = [s["label"] for s in result.sections]
    assert len(set(labels)) == len(labels) >= 5
    assert all(s["name"] is None for s in result.sections)


@pytest.mark.slow
def test_aaba_labels_and_names(rendered):
    _, _, result = rendered["aaba_a_minor_waltz_96"]
    assert [s["label"] for s in result.sections] == list("AABABA")
    assert [s["name"] for s in result.sections] == ["verse", "verse", "bridge", "verse", "bridge", "verse"]


@pytest.mark.slow
def test_pop_names(rendered):
    spec, _, result = rendered["pop_c_120"]
    assert [s["name"] for s in result.sections] == [s["name"] for s in spec.sections()]


@pytest.mark.slow
def test_deterministic(rendered):
    spec, audio, result = rendered["rock_g_84"]
    again = analyse_form(audio, RATE, spec.beats(), spec.downbeats(), spec.duration_s, CFG)
    assert again.sections == result.sections


# ------------------------------------------------------------------ a 20-minute song


@pytest.mark.slow
def test_a_20_minute_song_in_bounded_time_and_memory():
    spec = fs.long_form(20.0)
    audio = fs.render_form(spec)
    assert spec.duration_s >= 19 * 60
    analyse_form(audio[: RATE * 30], RATE, [], [], 30.0, CFG)  # one-time imports and JIT out of the way
    started = time.process_time()
    result = analyse_form(audio, RATE, spec.beats(), spec.downbeats(), spec.duration_s, CFG)
    cpu = time.process_time() - started
    assert cpu <= 0.01 * spec.duration_s, cpu  # measured ~0.0008 CPU-s per audio-s
    assert_covers(result.sections, spec.duration_s)
    f3, pairwise = scores(spec, result.sections)
    assert f3 >= 0.85 and pairwise >= 0.85, (f3, pairwise)
    # Memory: features are computed in chunks and every matrix is bars x bars.
    tracemalloc.start()
    try:
        analyse_form(audio, RATE, spec.beats(), spec.downbeats(), spec.duration_s, CFG)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 150 * 2 ** 20, peak / 2 ** 20  # measured ~25 MB (the audio itself not counted)
    # Very long songs are analysed in groups of bars: still covered, boundaries still on downbeats.
    grouped = analyse_form(audio, RATE, spec.beats(), spec.downbeats(), spec.duration_s, FormConfig(max_units=200))
    assert any("units of 4 bars" in n for n in grouped.notes)
    assert_covers(grouped.sections, spec.duration_s)
    assert set(interior_boundaries(grouped.sections)) <= {round(t, 3) for t in spec.downbeats()}


# ------------------------------------------------------------------ the real pipeline input


@pytest.mark.slow
@pytest.mark.parametrize("make", [fs.pop_form, fs.aaba_form], ids=["pop", "aaba_3_4"])
def test_on_the_madmom_grid(analyzer, make):
    """The MIR stage's analyzer: the form on its own decode and madmom's beat grid (the mir row's sections)."""
    spec = make()
    audio = fs.render_form(spec)
    facts = analyzer.analyse(audio)
    assert len(facts.downbeats) >= 0.8 * spec.bars, facts.notes
    assert_covers(facts.sections, facts.duration_s)
    f3, pairwise = scores(spec, facts.sections)
    assert f3 >= 0.85 and pairwise >= 0.85, (f3, pairwise, facts.sections)
    downbeats = np.asarray(facts.downbeats)
    for t in interior_boundaries(facts.sections):
        assert np.min(np.abs(downbeats - t)) < 1e-3, t
