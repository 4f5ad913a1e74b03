"""Golden renders: each current prompt version rendered with one fixed song, compared with the checked-in
text under golden/. A wording change shows up here as a diff (regenerate with MFPIPE_UPDATE_GOLDEN=1 and
read it); so does a Jinja whitespace slip such as think.v1's options glued together ("A. AmB. DmC.")."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mfpipe.prompts import load_prompt
from mfpipe.songfacts import song_inputs

GOLDEN = Path(__file__).parent / "golden"
ROW = {"song_id": "s1", "source": "/music/The Night Owls - Harbor Lights (1987).mp3", "processed_s": 48.0,
       "mir": {"bpm": 90.0, "meter": 3, "key": "A", "mode": "minor", "key_strength": 0.8, "loudness_lufs": -15.0,
               "chords": [{"start": 2.0 * i, "end": 2.0 * (i + 1), "label": ["Am", "Dm", "E7"][i % 3]}
                          for i in range(24)],
               "sections": [{"start": 0.0, "end": 24.0, "label": "A", "name": "verse"},
                            {"start": 24.0, "end": 48.0, "label": "B", "name": None}]},
       "caption": {"windows": [{"start": 0.0, "end": 30.0, "text": "A cello waltz with a soft piano."},
                               {"start": 30.0, "end": 48.0, "text": "The violin takes the tune."}]},
       "lyrics": {"has_vocals": True, "vocal_regions": [{"start": 6.0, "end": 20.0}], "language": "en",
                  "outcome": "ok", "words": [{"word": w, "start": 6.0 + i, "end": 6.5 + i}
                                             for i, w in enumerate("dance with me tonight".split())]}}
SONG = song_inputs(ROW, max_lyrics_chars=800, max_caption_windows=8, max_chord_changes=16, min_chord_s=1.0,
                   key_hedge_below=0.5)
SKILL_BRIEFS = ["temporal", "attribute", "harmony_theory", "lyric_vocal", "lyric_vocal.instrumental",
                "comparative_structural", "comparative_structural.single"]


def synthesize_v3() -> list[tuple[str, str]]:
    p = load_prompt("synthesize.v3")
    song = p.call("song", facts=SONG.facts, untrusted_json=SONG.untrusted_json())
    out = [("system", p.call("system")), ("song", song),
           ("task_caption", p.call("task_caption", target_words=470, min_words=420, max_words=520)),
           ("task_metadata", p.call("task_metadata", instrumental=False)),
           ("task_metadata instrumental", p.call("task_metadata", instrumental=True))]
    out += [(f"task_qa {brief}", p.call("task_qa", skill=brief, n_open=2, n_choice=1, n_options=4))
            for brief in SKILL_BRIEFS]
    out.append(("repair_items", p.call("repair_items", problems=[
        "qa/harmony_theory open question 1: leaky_question: the question gives away 'A minor'",
        "caption: tool_mention: cites 'beat tracker'"])))
    return out


def think_v2() -> list[tuple[str, str]]:
    p = load_prompt("think.v2")
    options = ["Am", "Dm", "E7", "C"]
    song = p.call("song", facts=SONG.facts, untrusted_json=SONG.untrusted_json())
    return [("system", p.call("system")), ("song", song),
            ("task_chain choice", p.call("task_chain", question="Which chord pulls each phrase home?",
                                         options=options, reference="C. E7", min_steps=3, max_steps=8)),
            ("task_chain open", p.call("task_chain", question="Where does the voice come in?", options=[],
                                       reference="At 0:06.", min_steps=3, max_steps=8)),
            ("task_fix", p.call("task_fix", flagged=[{"number": 2, "text": "The tempo is 120 BPM.",
                                                      "reason": "the beat sits at 90 BPM"}],
                                answer_problem="it answers 'At 0:10'; the confirmed answer is 'At 0:06.'",
                                has_options=False)),
            ("step", p.call("step", text="A cello carries the melody.", span="0:30 to 1:00"))]


def filter_v2() -> list[tuple[str, str]]:
    p = load_prompt("filter.v2")
    return [("caption_agrees", p.call("caption_agrees", claims=["A cello waltz in A minor.",
                                                                "At 0:24 a violin takes the tune."],
                                      span="0:00 to 0:30")),
            ("qa", p.call("qa", question="Which instrument leads?", answer="The cello.", span="0:30 to 1:00")),
            ("choice", p.call("choice", question="Which instrument leads?", span="0:30 to 1:00"))]


def caption_window_v2() -> list[tuple[str, str]]:
    return [("text", load_prompt("caption_window.v2").text.strip())]


RENDERS = {"synthesize.v3": synthesize_v3, "think.v2": think_v2, "filter.v2": filter_v2,
           "caption_window.v2": caption_window_v2}


def rendered(name: str) -> str:
    return "".join(f"=== {part}\n{text}\n" for part, text in RENDERS[name]())


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_the_prompt_renders_as_its_golden_file(name):
    path = GOLDEN / f"{name}.txt"
    text = rendered(name)
    if os.environ.get("MFPIPE_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} renders differently from {path}"


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_no_whitespace_slips(name):
    text = rendered(name)
    assert "\n\n\n" not in text and not re.search(r"[ \t]+\n", text)
    assert not re.search(r"\b[A-H]\. [^\n]*?[a-z0-9)][A-H]\. ", text), "options glued on one line"
    assert "{{" not in text and "{%" not in text


def test_the_current_versions_are_the_golden_ones():
    for name in RENDERS:
        pid, version = name.split(".")
        assert load_prompt(pid).version == version, f"{pid} has a newer version: add its golden render"


def test_think_v2_lists_the_options_one_per_line():
    block = dict(think_v2())["task_chain choice"]
    assert "QUESTION: Which chord pulls each phrase home?\nA. Am\nB. Dm\nC. E7\nD. C\n" in block
    # think.v1 stays loadable for the rows it made, glitch and all
    assert load_prompt("think.v1").call("question_block", question="Q?", options=["Am", "Dm"]) == \
        "QUESTION: Q?\nA. AmB. Dm"
