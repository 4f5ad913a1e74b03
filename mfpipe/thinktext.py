"""The MF-Think training text: `<think>…</think><answer>…</answer>`, rendered and parsed.

One format for everything that writes or reads it (the think stage, the GRPO
format reward, the Audio-Flamingo export):

    <think>
    first step
    second step
    </think>
    <answer>
    the answer
    </answer>

One step per line inside `<think>`, the answer inside `<answer>`, the two
blocks separated by one newline, nothing before or after. `render` cleans its
inputs first (`clean`: whitespace runs become one space, so a step is one line;
any `<think>`/`</think>`/`<answer>`/`</answer>` inside the text is removed, so
the tags cannot be forged), so

    parse(render(steps, answer)) == ThinkText([clean(s) for s in steps if clean(s)], clean(answer))

`parse` reads a well-formed text back; it accepts any whitespace around the
tags and blank lines between steps, and raises `ThinkFormatError` (saying
what is wrong) for anything else: a missing, repeated or misplaced tag, text
outside the two blocks, an empty answer. `is_well_formed` is the strict check
(exactly what `render` writes) for a format reward; `parse(..., strict=True)`
raises on anything else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAG = re.compile(r"</?\s*(?:think|answer)\s*>", re.I)
_SPACE = re.compile(r"\s+")
_LAYOUT = re.compile(r"\A\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*\Z", re.S)


class ThinkFormatError(ValueError):
    """A text that is not one `<think>…</think><answer>…</answer>` pair."""


@dataclass(frozen=True)
class ThinkText:
    steps: list[str]  # the reasoning, one step per line of the think block
    answer: str

    @property
    def think(self) -> str:
        """The think block's content as rendered (steps joined by newlines)."""
        return "\n".join(self.steps)


def clean(text: str) -> str:
    """One line, no think/answer tags, trimmed."""
    return _SPACE.sub(" ", _TAG.sub(" ", str(text or ""))).strip()


def render(steps: Sequence[str], answer: str) -> str:
    """The training text for a chain of steps and its answer (inputs are `clean`ed; empty steps dropped)."""
    lines = [c for c in (clean(s) for s in steps) if c]
    final = clean(answer)
    if not final:
        raise ThinkFormatError("the answer is empty")
    think = "".join(f"{line}\n" for line in lines)
    return f"{THINK_OPEN}\n{think}{THINK_CLOSE}\n{ANSWER_OPEN}\n{final}\n{ANSWER_CLOSE}"


def parse(text: str, *, strict: bool = False) -> ThinkText:
    """The steps and the answer of a think/answer text (see the module doc for what is accepted)."""
    if not isinstance(text, str):
        raise ThinkFormatError(f"expected text, got {type(text).__name__}")
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        count = text.count(tag)
        if count != 1:
            raise ThinkFormatError(f"{tag} appears {count} times (exactly once expected)")
    match = _LAYOUT.match(text)
    if match is None:
        raise ThinkFormatError("expected <think>…</think> then <answer>…</answer> with nothing else around them")
    steps = [line.strip() for line in match["think"].splitlines() if line.strip()]
    answer = clean(match["answer"])
    if not answer:
        raise ThinkFormatError("the answer is empty")
    parsed = ThinkText(steps, answer)
    if strict and render(steps, answer) != text:
        raise ThinkFormatError("not in the exact rendered layout (tags on their own lines, one step per line)")
    return parsed


def is_well_formed(text: str) -> bool:
    """True when `text` is exactly what `render` writes (one think block, one answer, nothing else)."""
    try:
        parse(text, strict=True)
    except ThinkFormatError:
        return False
    return True


__all__ = ["ThinkText", "ThinkFormatError", "clean", "render", "parse", "is_well_formed"]
