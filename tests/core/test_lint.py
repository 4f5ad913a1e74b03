"""The checks of `mfpipe.lint` on items written the way a strong LLM writes them: every planted defect
(a leaky question, a cited tool, an identity no fact gives, a time no fact measured, a bad distractor)
is flagged, and the clean versions of the same items pass."""

from __future__ import annotations

import pytest

from mfpipe.consistency import ConsistencyConfig
from mfpipe.lint import check_caption, check_item, check_qa, check_step, grounded_times

# A 3:12 pop song as the mir and lyrics stages describe it: 96 BPM, 4/4, D major, a chord every bar.
CHORDS = ["D", "A", "Bm", "G"]
POP = {
    "bpm": 96.0, "meter": 4, "key": "D", "mode": "major", "key_strength": 0.82, "duration_s": 192.0,
    "chords": [{"start": 2.5 * i, "end": 2.5 * (i + 1), "label": CHORDS[i % 4]} for i in range(76)],
    "sections": [{"start": 0.0, "end": 12.5, "label": "A", "name": "intro"},
                 {"start": 12.5, "end": 52.5, "label": "B", "name": "verse"},
                 {"start": 52.5, "end": 82.5, "label": "C", "name": "chorus"},
                 {"start": 82.5, "end": 122.5, "label": "B", "name": "verse"},
                 {"start": 122.5, "end": 152.5, "label": "C", "name": "chorus"},
                 {"start": 152.5, "end": 190.0, "label": "D", "name": "outro"}],
    "has_vocals": True,
    "vocal_regions": [{"start": 13.0, "end": 50.0}, {"start": 53.0, "end": 150.0}],
}
# The same song with a gap in its chords (a drum break 1:35-1:45) where times are not grounded by chords.
BREAK = {**POP, "chords": [c for c in POP["chords"] if not 95.0 <= c["start"] < 105.0],
         "vocal_regions": [{"start": 13.0, "end": 50.0}]}

CLEAN_CAPTION = (
    "This is a warm, mid-tempo pop-rock song that settles into a relaxed 96 BPM groove in 4/4, rooted "
    "firmly in D major. A clean electric guitar opens the track alone, arpeggiating the chords before a "
    "round, close-miked bass and brushed drums join. The lead vocal, a husky tenor with a conversational "
    "delivery, enters at 0:13 for the first verse, and the chorus lifts at 0:52 with stacked harmonies. "
    "Harmonically the song circles the familiar I-V-vi-IV loop (D, A, Bm, G), one chord to the bar, which "
    "gives it an open, hopeful feel; the move from G back to D at the end of each phrase acts as a gentle "
    "plagal release. The second chorus returns at 2:02 and the outro, from 2:32, strips back to guitar and "
    "voice before fading. The mix is spacious, with the guitars panned wide and the vocal dry and up front, "
    "and the dynamics build steadily from the sparse intro to a full final chorus. It draws on the "
    "singer-songwriter tradition of the American heartland.")

FLAGGED_CAPTIONS = [
    ("The beat tracker measured 96 BPM, and the key estimate (key strength 0.82) points to D major.",
     "tool_mention"),
    ("According to the transcript, the singer repeats the hook four times.", "tool_mention"),
    ("The window descriptions mention a synth pad in the first window.", "tool_mention"),
    ("The master is loud, at around -9 LUFS integrated.", "tool_mention"),
    ("No vocals were detected before the first chorus.", "tool_mention"),
    ("Released in 1987, the single shows its decade in the gated snare.", "unsupported_identity"),
    ("A song by Fleetwood Mac that leans on layered guitars.", "unsupported_identity"),
    ('The track "Harbor Lights" opens with a lone guitar.', "unsupported_identity"),
    ("It closes their debut album on a hopeful note.", "unsupported_identity"),
    ("A tambourine enters at 1:38, just before the second verse.", "ungrounded_time"),
    ("The final chord rings out until 3:40.", "ungrounded_time"),
]


def test_a_clean_rich_caption_passes_every_check():
    assert check_caption(CLEAN_CAPTION, POP) == []


@pytest.mark.parametrize("text,check", FLAGGED_CAPTIONS)
def test_each_planted_defect_in_a_caption_is_flagged(text, check):
    flags = check_caption(text, BREAK)
    assert check in {f.check for f in flags}, flags
    assert all(f.message for f in flags)


@pytest.mark.parametrize("text", [
    "A measured, stately pace keeps the verses calm.",  # "measured" as a word of music
    "The singer whispers the last line over a window of silence.",
    "A 1980s-style gated reverb on the snare.",  # a decade as a style, not a release year
    "Played by a small string section, the counter-melody answers the voice.",
    "Between 0:30 and 1:00 the guitar doubles the vocal line.",  # a window's range
    "The chorus returns at 2:02, louder than before.",  # a section boundary
    "The lyric 'carry me home' lands on the IV chord.",
])
def test_ordinary_music_writing_is_not_flagged(text):
    assert check_caption(text, POP) == []


CLEAN_QA = [
    ("Which chord acts as the dominant, pulling each phrase back home?", "A", ["A", "Em", "C", "F#m"]),
    ("What is the meter of the song?", "4/4", ["4/4", "3/4", "6/8", "5/4"]),
    ("At roughly what tempo does the groove sit?", "96 BPM", ["96 BPM", "72 BPM", "120 BPM", "150 BPM"]),
    ("In which key is the song?", "D major", ["D major", "E minor", "F major", "A minor"]),
    ("When does the lead vocal first come in?", "At 0:13, with the first verse.", []),
    ("Which instrument opens the song alone?", "A clean electric guitar.", []),
    ("Is the song in D major or B minor?", "D major", []),  # alternatives offered: a choice, not a leak
    ("When does the second chorus begin?", "At 2:02", ["At 2:02", "At 2:10", "At 0:52", "At 1:22"]),  # times
    ("In which bar does the bass first drop out?", "Bar 8", ["Bar 8", "Bar 9", "Bar 2", "Bar 16"]),
]


@pytest.mark.parametrize("question,answer,options", CLEAN_QA)
def test_clean_questions_pass(question, answer, options):
    assert check_qa(question, answer, options, POP) == []


LEAKY_QA = [
    ("In this D-major ballad, which chord is the dominant?", "A", ["A", "Em", "C", "F#m"]),
    ("This 96 BPM groove is in which meter?", "4/4", ["4/4", "3/4", "6/8", "5/4"]),
    ("Over the 4/4 pulse, which instrument carries the intro?", "Electric guitar", []),
    ("Which instrument plays the electric guitar riff in the intro?", "The electric guitar.", []),
]


@pytest.mark.parametrize("question,answer,options", LEAKY_QA)
def test_a_question_that_states_what_it_asks_is_leaky(question, answer, options):
    assert "leaky_question" in {f.check for f in check_qa(question, answer, options, POP)}


@pytest.mark.parametrize("answer,options,why", [
    ("96 BPM", ["96 BPM", "92 BPM", "130 BPM", "160 BPM"], "15 %"),
    ("96 BPM", ["96 BPM", "48 BPM", "130 BPM", "70 BPM"], "half or double"),
    ("D major", ["D major", "B minor", "F major", "A minor"], "relative"),
    ("A", ["A", "a cello", "Em", "C"], "type"),
])
def test_bad_distractors_are_flagged(answer, options, why):
    flags = check_qa("Pick the right one.", answer, options, POP)
    assert any(f.check == "distractor" and why in f.message for f in flags), flags


def test_a_wrong_option_the_facts_make_true_is_flagged():
    flags = check_qa("What key is the song in?", "B minor", ["B minor", "D major", "F major", "C minor"], POP)
    checks = {f.check for f in flags}
    assert "key" in checks  # the answer itself contradicts the measured key
    assert any("is the measured key" in f.message for f in flags)


def test_identity_the_facts_supply_is_allowed():
    text = 'The track "Harbor Lights", released in 1987 by The Night Owls, opens with a lone guitar.'
    known = {**POP, "title": "Harbor Lights", "artist": "The Night Owls", "year": 1987}
    assert check_caption(text, known) == []
    assert {f.check for f in check_caption(text, POP)} == {"unsupported_identity"}


def test_times_are_grounded_by_what_was_measured():
    times = grounded_times(BREAK)
    assert 12.5 in times and 13.0 in times and 30.0 in times and 192.0 in times  # section, voice, window, end
    assert not any(96.0 <= t <= 104.0 for t in times)  # the drum break has no chord change
    strict = ConsistencyConfig(time_tolerance_s=0.5)
    assert check_caption("A shaker enters at 0:31.", BREAK) == []
    assert check_caption("A shaker enters at 0:31.", BREAK, strict)[0].check == "ungrounded_time"
    assert check_caption("The outro begins at 3:50.", {"duration_s": 192.0})[0].check == "ungrounded_time"
    assert check_caption("A shaker enters at 0:31.", {}) == []  # nothing timed: nothing to hold it against


def test_steps_and_items_and_the_check_filter():
    assert check_step("The beat tracker confirms the 96 BPM pulse.", POP)[0].check == "tool_mention"
    assert check_step("The snare lands on beats 2 and 4.", POP) == []
    item = {"id": "x", "question": "In this D-major ballad, which chord is the dominant?", "answer": "A",
            "options": ["A", "Em", "C", "F#m"], "caption": "The beat tracker measured 96 BPM."}
    assert {f.check for f in check_item(item, POP)} == {"leaky_question", "tool_mention"}
    only = check_qa("In this D-major ballad, which chord is the dominant?", "A", [], POP, checks=["tool_mention"])
    assert only == []


def test_a_chord_named_with_a_time_must_sound_then():
    """D A Bm G, 2.5 s each: at 0:05 A and Bm sound (within the 2 s tolerance), G only from 0:07.5."""
    (flag,) = check_caption("At 0:05 the harmony lands on the G chord.", POP)
    assert flag.check == "chord" and "at 0:05.0" in flag.message and "Chordino heard A, Bm" in flag.message
    assert check_caption("At 0:08 the harmony lands on the G chord.", POP) == []
    assert check_caption("From 0:05 to 0:10 it moves through Bm and G.", POP) == []  # a range
    assert check_caption("The harmony lands on the G chord.", POP) == []  # no time: the song's chords


def test_open_answers_are_short():
    from mfpipe.schemas.synthesize import qa_draft

    model = qa_draft(1, 0, 4, answer_chars=100)
    model.model_validate({"open": [{"question": "Which instrument opens the song?", "answer": "A clean guitar."}]})
    with pytest.raises(ValueError, match="at most 100"):
        model.model_validate({"open": [{"question": "Which instrument opens the song?", "answer": "x" * 101}]})
