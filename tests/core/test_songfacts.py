"""What the LLM is told about a song (`mfpipe.songfacts`): no file name, chords per section with their
time and Roman numerals and no passing chords, a weak key hedged, the voice as known (or not analysed),
and the per-song item plan."""

from __future__ import annotations

from mfpipe.songfacts import measured, roman_numeral, skill_plan, song_inputs

SECTIONS = [{"start": 0.0, "end": 8.0, "label": "A", "name": "intro"},
            {"start": 8.0, "end": 16.0, "label": "B", "name": None}]
CHORDS = [{"start": 0.0, "end": 2.0, "label": "C"}, {"start": 2.0, "end": 4.0, "label": "G"},
          {"start": 4.0, "end": 4.7, "label": "Abmaj7"},  # 0.7 s: a passing (or mis-heard) chord
          {"start": 4.7, "end": 6.0, "label": "Am"}, {"start": 6.0, "end": 8.0, "label": "F"},
          {"start": 8.0, "end": 12.0, "label": "Dm7"}, {"start": 12.0, "end": 16.0, "label": "G7"}]
ROW = {"song_id": "s1", "source": "/music/The Night Owls - Harbor Lights (1987).mp3", "processed_s": 16.0,
       "mir": {"bpm": 120.0, "meter": 4, "key": "C", "mode": "major", "key_strength": 0.8, "chords": CHORDS,
               "loudness_lufs": -11.0, "sections": SECTIONS},
       "caption": {"windows": [{"start": 0.0, "end": 16.0, "text": "A bright pop tune with piano."}]},
       "lyrics": {"has_vocals": True, "vocal_regions": [{"start": 8.0, "end": 15.0}], "language": "en",
                  "words": [{"word": "hello", "start": 8.2, "end": 8.6}], "outcome": "ok"}}


def inputs(row=ROW, **kw):
    return song_inputs(row, max_lyrics_chars=800, max_caption_windows=8, max_chord_changes=16,
                       **{"min_chord_s": 1.0, "key_hedge_below": 0.5, **kw})


def test_no_file_name_reaches_the_prompt():
    song = inputs()
    text = "\n".join(song.facts) + song.untrusted_json()
    assert "Night Owls" not in text and "1987" not in text and "Harbor" not in text and ".mp3" not in text
    assert "file_name" not in song.untrusted


def test_chords_per_section_with_time_numerals_and_no_passing_chords():
    facts = inputs().facts
    (intro,) = [f for f in facts if f.startswith("Chords in section A")]
    assert "C (I) 2.0 s, first at 0:00.0" in intro and "G (V) 2.0 s, first at 0:02.0" in intro
    assert "Am (vi)" in intro and "F (IV)" in intro and "Order: C-G-Am-F" in intro
    assert "Abmaj7" not in "\n".join(facts)  # 0.7 s < min_chord_s: left out, with a note
    assert any("shorter than 1 s" in n for n in inputs().notes)
    (second,) = [f for f in facts if f.startswith("Chords in section B")]
    assert "Dm7 (ii7)" in second and "G7 (V7)" in second and "about 2 bars" in second
    assert "Tempo: 120.0 BPM" in facts and "Key: C major" in facts
    assert not any("strength" in f or "LUFS" in f for f in facts)  # no confidences, no meter readings
    assert "Overall level: loud, a compressed modern master" in facts


def test_a_weak_key_is_hedged_and_loses_its_numerals():
    weak = {**ROW, "mir": {**ROW["mir"], "key_strength": 0.3}}
    facts = inputs(weak).facts
    (key,) = [f for f in facts if f.startswith("Key:")]
    assert key.startswith("Key: uncertain") and "centred on C" in key and "C major" not in key
    assert not any("(I)" in f for f in facts)


def test_the_voice_as_known():
    assert any(f.startswith("Vocals: voice heard at 0:08.0-0:15.0") for f in inputs().facts)
    instrumental = {**ROW, "lyrics": {"has_vocals": False, "vocal_regions": [], "words": [], "text": ""}}
    assert any(f.startswith("Vocals: none, an instrumental") for f in inputs(instrumental).facts)
    unknown = {**ROW, "lyrics": None}
    assert any(f.startswith("Vocals: not analysed") for f in inputs(unknown).facts)


def test_roman_numerals():
    cases = {("E7", "A", "minor"): "V7", ("Bbmaj7", "C", "major"): "bVIImaj7", ("Bdim", "C", "major"): "vii°",
             ("Bm7b5", "C", "major"): "viiø7", ("Fm", "C", "major"): "iv", ("G/B", "C", "major"): "V",
             ("Am", None, None): None}
    for (label, key, mode), numeral in cases.items():
        assert roman_numeral(label, key, mode) == numeral


def test_item_plan_falls_back_for_instrumentals_and_one_section_songs():
    plan = {p.skill: p for p in skill_plan(ROW, 2, 2, 1, 1)}
    assert [(p.brief, p.n_open, p.n_choice) for p in plan.values()][-2:] == [
        ("lyric_vocal", 2, 2), ("comparative_structural", 2, 2)]
    one_section = {**ROW, "mir": {**ROW["mir"], "sections": [{**s, "label": "A"} for s in SECTIONS]},
                   "lyrics": {"has_vocals": False, "vocal_regions": []}}
    plan = {p.skill: p for p in skill_plan(one_section, 2, 2, 1, 0)}
    assert (plan["lyric_vocal"].brief, plan["lyric_vocal"].n_open, plan["lyric_vocal"].n_choice) == \
        ("lyric_vocal.instrumental", 1, 0)
    assert plan["comparative_structural"].brief == "comparative_structural.single"
    assert plan["temporal"].n_open == 2  # the other skills keep their counts


def test_measured_facts_carry_the_voice_and_duration():
    facts = measured(ROW)
    assert facts["has_vocals"] is True and facts["duration_s"] == 16.0 and facts["words"][0]["start"] == 8.2
