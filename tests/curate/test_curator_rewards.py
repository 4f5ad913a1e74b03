"""The three GRPO rewards on hand-made edge cases."""

from __future__ import annotations

import pytest

from mfpipe.rewards import (
    accuracy_reward,
    category_scores,
    extract_answer,
    format_reward,
    parse_think_answer,
    structured_thinking_reward,
)

# ------------------------------------------------------------------ format


@pytest.mark.parametrize("text", [
    "<think>The bass walks down.</think><answer>B</answer>",
    "  <think>a</think>\n\n<answer>b</answer>\n",
    "<think>multi\nline\nreasoning</think><answer>C major</answer>",
])
def test_format_accepts_exact_blocks(text):
    assert format_reward(text) == 1.0


@pytest.mark.parametrize("text", [
    "",
    "C major",
    "<think>a</think>",  # no answer
    "<answer>b</answer>",  # no reasoning
    "<answer>b</answer><think>a</think>",  # wrong order
    "<think></think><answer>b</answer>",  # empty reasoning
    "<think>a</think><answer>  </answer>",  # empty answer
    "So: <think>a</think><answer>b</answer>",  # text before
    "<think>a</think><answer>b</answer> hope that helps",  # text after
    "<think>a</think><answer>b</answer><answer>c</answer>",  # two answers
    "<think>a<think>b</think><answer>c</answer>",  # nested tag
    "<think>a</think>between<answer>b</answer>",  # text between the blocks
    "<THINK>a</THINK><ANSWER>b</ANSWER>",  # tags are case-sensitive
    "<think>a</think><answer>b",  # unclosed
])
def test_format_rejects_everything_else(text):
    assert format_reward(text) == 0.0


def test_parse_and_extract():
    assert parse_think_answer("<think> x </think><answer> y </answer>") == ("x", "y")
    assert extract_answer("<think>x</think><answer>Piano</answer>") == "Piano"
    assert extract_answer("just Piano") == "just Piano"
    assert extract_answer("<answer>a</answer><answer>b</answer>") == "<answer>a</answer><answer>b</answer>"


# ------------------------------------------------------------------ accuracy

OPTIONS = ["acoustic guitar", "piano", "synth lead", "violin"]


@pytest.mark.parametrize("said", [
    "piano", "Piano.", "  PIANO ", "the piano", "B", "(B)", "B)", "b. piano", "B) piano",
    "<think>It is struck.</think><answer>B</answer>", "The answer is B", "Answer: piano",
    "It is the piano.",
])
def test_multiple_choice_right(said):
    assert accuracy_reward(said, "piano", OPTIONS) == 1.0


@pytest.mark.parametrize("said", [
    "violin", "D", "(A)", "A) piano",  # letter and text disagree
    "piano or violin",  # two options named
    "E",  # a letter with no option
    "", "<think>x</think><answer></answer>", "keyboard",
])
def test_multiple_choice_wrong(said):
    assert accuracy_reward(said, "piano", OPTIONS) == 0.0


def test_options_that_contain_each_other():
    options = ["C major", "C major 7", "A minor"]
    assert accuracy_reward("C major", "C major", options) == 1.0
    assert accuracy_reward("C major 7", "C major", options) == 0.0
    assert accuracy_reward("it resolves to C major 7", "C major 7", options) == 1.0


@pytest.mark.parametrize("said,reference,expected", [
    ("F# minor", "F sharp minor", 1.0),
    ("F♯ minor", "f# minor", 1.0),
    ("Bb major", "B-flat major", 1.0),
    ("3/4", "3/4", 1.0),
    ("The chorus.", "chorus", 1.0),
    ("chorus", "the second chorus", 0.0),
    ("", "", 0.0),  # nothing matches nothing
    ("<think>x</think><answer>120 BPM</answer>", "120 bpm", 1.0),
])
def test_open_answers(said, reference, expected):
    assert accuracy_reward(said, reference) == expected


# ------------------------------------------------------------------ structured thinking

METADATA = {
    "genre": "synth-pop", "bpm": 128.0, "key": "E minor", "meter": "4/4",
    "structure": ["intro", "verse", "chorus", "outro"],
    "instruments": ["drums", "synth bass", "electric piano", "synth lead"],
    "vocal_character": None, "lyric_themes": [],
    "theory": "i-iv-V7 progression with a borrowed chord", "mix_notes": "wide stereo synths, punchy kick",
    "dynamics": "builds steadily into the chorus",
}


def _verdicts(caption, metadata=METADATA):
    return {s.category: s.right for s in category_scores(caption, metadata)}


def test_a_caption_that_gets_everything_right():
    caption = ("A synth pop track at 128 BPM in E minor, in 4/4 time. Drums, a synth bass, an electric piano and a "
               "synth lead carry an intro, verse, chorus and outro. The harmony is an i-iv-V7 progression with a "
               "borrowed chord; the mix has wide stereo synths and a punchy kick, and the song builds steadily.")
    assert structured_thinking_reward(caption, METADATA) == 1.0
    # Empty categories (vocal character, lyric themes) do not count.
    assert set(_verdicts(caption)) == {"genre", "bpm", "key", "meter", "structure", "instruments", "theory",
                                       "mix_notes", "dynamics"}


def test_wrong_facts_score_zero_on_their_category():
    caption = ("A synth pop track at 96 BPM in G major, in 3/4 time, with drums, synth bass, electric piano and "
               "synth lead.")
    v = _verdicts(caption)
    assert v["genre"] and v["instruments"]
    assert not v["bpm"] and not v["key"] and not v["meter"]
    assert structured_thinking_reward(caption, METADATA) == pytest.approx(2 / 9)


def test_relative_key_and_contradicting_tempi_are_wrong():
    assert not _verdicts("It is in G major, the relative major.")["key"]  # a relative key is another key
    assert not _verdicts("At 128 BPM, later 140 BPM.")["bpm"]  # one right and one wrong statement
    assert _verdicts("At 129 BPM.")["bpm"]  # within tolerance
    assert _verdicts("Written in common time.")["meter"]
    assert not _verdicts("The song is in E major.")["key"]  # same tonic, other mode


def test_partial_lists_need_half():
    half = _verdicts("Drums and synth bass; intro and verse.")
    assert half["instruments"] and half["structure"]
    quarter = _verdicts("Only drums, and an intro.")
    assert not quarter["instruments"] and not quarter["structure"]


def test_empty_inputs():
    assert structured_thinking_reward("", METADATA) == 0.0
    assert structured_thinking_reward("A pop song.", {}) == 0.0
    assert structured_thinking_reward("A pop song.", {"genre": "pop"}) == 1.0
    assert structured_thinking_reward("Jazz.", {"genre": "pop", "bpm": None, "instruments": []}) == 0.0


def test_accepts_the_pydantic_metadata():
    from mfpipe.schemas.synthesize import SongMetadata

    meta = SongMetadata(genre="folk", bpm=90.0, key="D major", meter="3/4")
    assert structured_thinking_reward("A folk waltz in D major at 90 BPM, in 3/4.", meta) == 1.0
