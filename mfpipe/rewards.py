"""The three GRPO rewards of the Music Flamingo paper, as plain functions.

- `format_reward(text)`: 1.0 when the completion is exactly
  `<think>…</think><answer>…</answer>` (whitespace around and between the two
  blocks allowed, both non-empty, no other tags, nothing outside), else 0.0.
- `accuracy_reward(text, reference, options)`: 1.0 when the answer (the
  `<answer>` block, or the whole text when there is none) matches the
  reference after normalisation (case, punctuation, articles, spacing). For
  multiple choice the answer may be the option's text or its letter ("B",
  "(B)", "B) piano"); naming a different option, or several, scores 0.
- `structured_thinking_reward(caption, metadata)`: the fraction of the song's
  metadata categories (genre, bpm, key, meter, structure, instruments, vocal
  character, lyric themes, theory, mix notes, dynamics) that a generated
  caption gets right. Categories the metadata leaves empty do not count. How a
  category is judged (`category_scores` gives each verdict):
  - bpm, key, meter: the caption states one (read with `mfpipe.consistency`,
    the checks synthesize uses) and every statement agrees with the metadata
    (tempo within max(2 BPM, 4 %); key = same tonic and mode, enharmonics equal;
    meter = same beats-per-bar family);
  - genre: every word of the genre appears ("synth-pop" matches "synth pop");
  - structure, instruments, lyric themes: at least half of the listed items
    are named (an item is named when all its words appear);
  - vocal character, theory, mix notes, dynamics (free text): at least half
    of the content words (4+ letters, not stop words) appear.

Words are compared without a plural "s": "drums" names "drum".
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import thinktext
from .consistency import (
    ConsistencyConfig,
    bpm_agrees,
    meter_agrees,
    parse_key,
    stated_keys,
    stated_meters,
    stated_tempi,
)

# ------------------------------------------------------------------ <think>/<answer> text

_ANSWER = re.compile(r"<answer>(?P<answer>.*?)</answer>", re.S)


def parse_think_answer(text: str) -> tuple[str, str] | None:
    """(think, answer) when `text` is exactly one non-empty think block then one answer block, else None
    (the layout `mfpipe.thinktext` parses; the reward also wants some reasoning)."""
    try:
        parsed = thinktext.parse(text)
    except thinktext.ThinkFormatError:
        return None
    return (parsed.think, parsed.answer) if parsed.steps else None


def extract_answer(text: str) -> str:
    """The answer block's content when there is exactly one, else the whole text."""
    found = _ANSWER.findall(text or "")
    return found[0].strip() if len(found) == 1 else (text or "").strip()


# ------------------------------------------------------------------ format


def format_reward(text: str) -> float:
    return 1.0 if parse_think_answer(text) is not None else 0.0


# ------------------------------------------------------------------ accuracy

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "–—‘’“”…"})
# A letter alone ("B", "(B)"), or marked as a letter ("(B) piano", "B) piano", "B. piano", "B: piano");
# "A piano" is an article, not a letter.
_LETTER = re.compile(r"^(?:\(([A-Fa-f])\)|([A-Fa-f])[.):]|([A-Fa-f])$)\s*(.*)$", re.S)
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is|:)?\s*", re.I)


def normalise(text: str | None) -> str:
    """Lower case, ♯/♭ spelled as #/b, punctuation and articles dropped, spaces collapsed."""
    t = (text or "").replace("♯", "#").replace("♭", "b").casefold()
    t = t.replace("#", " sharp ")
    t = re.sub(r"\b([a-g])b\b", r"\1 flat", t)  # "Bb" = "B flat"
    t = t.translate(_PUNCT)
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


def _choice(answer: str, options: list[str]) -> int | None:
    """Which option an answer names (by letter or by text), or None when none or several."""
    stripped = _ANSWER_PREFIX.sub("", answer.strip())
    norm_options = [normalise(o) for o in options]
    m = _LETTER.match(stripped)
    if m:
        index = "abcdef".index((m.group(1) or m.group(2) or m.group(3)).lower())
        rest = normalise(m.group(4))
        # A letter alone, or a letter followed by its own option's text; anything else contradicts itself.
        if index < len(options) and (not rest or rest == norm_options[index]):
            return index
        return None
    said = normalise(stripped)
    exact = [i for i, o in enumerate(norm_options) if said == o]
    if exact:
        return exact[0]
    named = [i for i, o in enumerate(norm_options) if o and re.search(rf"(?<!\S){re.escape(o)}(?!\S)", said)]
    # Options can contain one another ("C major" in "C major 7"): keep the longest names only.
    named = [i for i in named if not any(j != i and norm_options[i] in norm_options[j] for j in named)]
    return named[0] if len(named) == 1 else None


def accuracy_reward(text: str, reference: str, options: list[str] | None = None) -> float:
    answer = extract_answer(text)
    if options:
        picked = _choice(answer, list(options))
        ref = _choice(reference, list(options))
        if ref is None:
            return float(normalise(answer) == normalise(reference))
        return float(picked == ref)
    return float(bool(normalise(reference)) and normalise(answer) == normalise(reference))


# ------------------------------------------------------------------ structured thinking

CATEGORIES = ("genre", "bpm", "key", "meter", "structure", "instruments", "vocal_character", "lyric_themes",
              "theory", "mix_notes", "dynamics")
_STOP = {"with", "that", "this", "from", "into", "over", "under", "very", "some", "more", "most", "less", "than",
         "then", "their", "there", "they", "them", "have", "has", "been", "being", "were", "will", "would",
         "which", "while", "when", "where", "song", "track", "music", "sound", "sounds", "piece", "also", "only",
         "just", "like", "each", "throughout", "across", "slightly", "mostly", "quite", "rather", "about"}


def _words(text: str) -> list[str]:
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
            for w in normalise(text).split()]


def _mentions(caption_words: set[str], item: str) -> bool:
    words = _words(item)
    return bool(words) and all(w in caption_words for w in words)


def _content_words(text: str) -> list[str]:
    return [w for w in dict.fromkeys(_words(text)) if len(w) >= 4 and w not in _STOP]


@dataclass(frozen=True)
class CategoryScore:
    category: str
    right: bool
    why: str


def _meter_beats(meter: str | None) -> int | None:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*\d+\s*", meter or "")
    return int(m.group(1)) if m else None


def category_scores(caption: str, metadata: Mapping[str, Any] | Any,
                    tolerance: ConsistencyConfig = ConsistencyConfig()) -> list[CategoryScore]:
    """One verdict per category the metadata fills (see the module doc for the rules)."""
    meta = metadata.model_dump() if hasattr(metadata, "model_dump") else dict(metadata or {})
    caption = caption or ""
    words = set(_words(caption))
    out: list[CategoryScore] = []
    for cat in CATEGORIES:
        value = meta.get(cat)
        if value in (None, "", []):
            continue
        if cat == "bpm":
            stated = [bpm for bpm, _, _ in stated_tempi(caption)]
            ok = bool(stated) and all(bpm_agrees(s, float(value), tolerance) for s in stated)
            out.append(CategoryScore(cat, ok, f"states {stated or 'no tempo'}; metadata {value}"))
        elif cat == "key":
            key = parse_key(value)
            stated = [(pc, mode) for pc, mode, _ in stated_keys(caption)]
            ok = key is not None and bool(stated) and all(pc == key[0] and (key[1] is None or mode == key[1])
                                                          for pc, mode in stated)
            out.append(CategoryScore(cat, ok, f"states {len(stated)} key(s); metadata {value}"))
        elif cat == "meter":
            beats = _meter_beats(value)
            stated = [n for n, _ in stated_meters(caption)]
            ok = beats is not None and bool(stated) and all(meter_agrees(n, beats) for n in stated)
            out.append(CategoryScore(cat, ok, f"states {stated or 'no meter'}; metadata {value}"))
        elif cat == "genre":
            ok = _mentions(words, str(value))
            out.append(CategoryScore(cat, ok, f"genre {value!r} {'named' if ok else 'not named'}"))
        elif isinstance(value, list):
            items = [v for v in value if str(v).strip()]
            named = [v for v in items if _mentions(words, str(v))]
            ok = bool(items) and 2 * len(named) >= len(items)
            out.append(CategoryScore(cat, ok, f"names {len(named)} of {len(items)}: {named}"))
        else:
            content = _content_words(str(value))
            hit = [w for w in content if w in words]
            ok = bool(content) and 2 * len(hit) >= len(content)
            out.append(CategoryScore(cat, ok, f"{len(hit)} of {len(content)} content words"))
    return out


def structured_thinking_reward(caption: str, metadata: Mapping[str, Any] | Any,
                               tolerance: ConsistencyConfig = ConsistencyConfig()) -> float:
    """Fraction of the metadata's (non-empty) categories the caption gets right; 0.0 when none."""
    scores = category_scores(caption, metadata, tolerance)
    return sum(s.right for s in scores) / len(scores) if scores else 0.0
