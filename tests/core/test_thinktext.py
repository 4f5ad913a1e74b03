"""The MF-Think training text: render, parse back, and refuse what is not the format."""

from __future__ import annotations

import pytest

from mfpipe.thinktext import ThinkFormatError, ThinkText, clean, is_well_formed, parse, render

STEPS = ["The tempo is about 120 BPM.", "The chords C, G, Am and F repeat every four bars.",
         "A flute enters at 0:30 over the piano.", "So the flute carries the second half."]


def test_rendered_text_has_the_exact_tags_and_parses_back():
    text = render(STEPS, "B. flute")
    assert text.startswith("<think>\n") and text.endswith("\n</answer>")
    assert text.count("<think>") == text.count("</think>") == text.count("<answer>") == text.count("</answer>") == 1
    assert text.index("</think>") < text.index("<answer>")
    assert parse(text) == ThinkText(STEPS, "B. flute")
    assert parse(text).think == "\n".join(STEPS)
    assert is_well_formed(text)


def test_messy_steps_are_cleaned_and_still_round_trip():
    steps = ["  two\nlines  ", "", "tabs\tand   spaces", "<think>forged</think> tags </answer>", "<ANSWER>x"]
    text = render(steps, " the\nanswer <answer> ")
    parsed = parse(text)
    assert parsed.steps == ["two lines", "tabs and spaces", "forged tags", "x"]
    assert parsed.steps == [clean(s) for s in steps if clean(s)]
    assert parsed.answer == "the answer" == clean(" the\nanswer <answer> ")
    assert render(parsed.steps, parsed.answer) == text  # parse ∘ render is the identity on clean input


@pytest.mark.parametrize("text, problem", [
    ("<answer>\nA\n</answer>", "<think> appears 0 times"),
    ("<think>\na\n</think>\n<think>\nb\n</think>\n<answer>\nA\n</answer>", "<think> appears 2 times"),
    ("<answer>\nA\n</answer>\n<think>\na\n</think>", "nothing else"),
    ("Sure! <think>\na\n</think>\n<answer>\nA\n</answer>", "nothing else"),
    ("<think>\na\n</think>\n<answer>\n  \n</answer>", "empty"),
    ("<think>a</think><answer>A</answer> trailing", "nothing else"),
])
def test_malformed_texts_are_refused_with_the_reason(text, problem):
    with pytest.raises(ThinkFormatError, match=problem):
        parse(text)
    assert not is_well_formed(text)


def test_lenient_parse_accepts_other_whitespace_strict_does_not():
    compact = "<think>step one\n\nstep two</think> <answer>A</answer>"
    assert parse(compact) == ThinkText(["step one", "step two"], "A")
    with pytest.raises(ThinkFormatError, match="exact rendered layout"):
        parse(compact, strict=True)
    assert not is_well_formed(compact)


def test_an_empty_answer_cannot_be_rendered():
    with pytest.raises(ThinkFormatError):
        render(["a step"], "  ")


def test_a_chain_record_holds_the_answer_its_text_renders():
    """An option with a double space or a line break (an LLM writes them) is the chain's answer as the
    training text renders it, so `parse(chain.text).answer == chain.answer` for every kept chain."""
    from mfpipe.factcheck import Check
    from mfpipe.think.chains import ChainMaker, Job
    from mfpipe.think.select import Item

    options = ["three  voices\n(one echoed)", "two voices", "one voice", "four voices"]
    for answer, reference, expected in (("A", options[0], "three voices (one echoed)"),
                                          ("The  tempo is\nabout 120 BPM.", "About 120  BPM.", "About 120 BPM.")):
        item = Item(index=0, skill="harmony_theory", question="How many voices?", reference=reference,
                    options=options if answer == "A" else [], because="test")
        job = Job(song=0, item=item, messages=[], steps=["One step.", "Two  steps."], answer=answer,
                  checks=[Check("correct", "mir"), Check("correct", "mir")])
        chain = ChainMaker.chain(job, 0.0)
        assert chain.answer == expected == parse(chain.text).answer and is_well_formed(chain.text)
