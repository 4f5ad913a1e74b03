"""A hallucination guard for ASR word lists, given the song's vocal regions.

`guard_words(words, regions, cfg)` takes song-absolute words (`[{word, start, end}]`,
dicts or objects with those attributes) and VAD regions (`[{start, end}]`; None when no
VAD ran) and applies, in order:

1. `outside_regions`: words that do not overlap any vocal region (widened by
   `region_tolerance_s`) are dropped: ASR output over instrumental passages.
2. `non_lexical`: tokens such as `[music]`, `(applause)`, `♪`, `*laughs*`.
3. `filler`: known ASR filler phrases (`filler_phrases`, wherever they occur;
   `filler_prefixes` such as "subtitles by", with the rest of that line;
   `filler_alone`, e.g. "you", "thank you", only when they are all a region holds).
4. `loop`: an n-gram (n <= `loop_max_n`) repeated `loop_min_repeats` or more times in a
   row inside ONE region with no pause longer than `loop_max_gap_s` anywhere in the run; the
   first `loop_keep` copies stay. A line that recurs across regions or sections (a chorus) is
   never a loop: runs stop at region boundaries and long gaps.
5. `long_word`: a word lasting more than `max_word_s`.
6. `word_rate`: a region whose words come faster than `max_words_per_s`.

Rules listed in `flag_only` keep their words but still report them. The result has the
kept words (same shape as given) and `removed`/`flagged` lists of
`{rule, text, start, end}` (adjacent words removed by the same rule are one entry).
Pure Python; linear in the number of words (times `loop_max_n`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from ..config import Section
from .vad import in_regions, span

Rule = Literal["outside_regions", "non_lexical", "filler", "loop", "long_word", "word_rate"]

DEFAULT_FILLERS = [
    "thank you for watching", "thanks for watching", "thank you so much for watching", "thank you for listening",
    "please subscribe", "like and subscribe", "subscribe to my channel", "don't forget to subscribe",
    "see you in the next video", "see you next time", "i'll see you next time", "www mooji org",
    "amara org", "the amara org community",
]
DEFAULT_PREFIXES = ["subtitles by", "subtitled by", "captions by", "captioning by", "transcribed by",
                    "transcription by", "translated by", "translation by", "sottotitoli creati dalla comunità",
                    "untertitel im auftrag", "untertitel der amara org community", "sous titres réalisés"]
DEFAULT_ALONE = ["you", "thank you", "thanks", "thank you very much", "bye", "bye bye", "so", "okay", "oh",
                 "uh", "um", "hmm", "music", "applause", "the end"]


class GuardConfig(Section):
    """Rules that drop (or flag) ASR words that are probably not sung."""


    enabled: bool = Field(True, description="Apply the guard; off: words pass unchanged.")
    drop_outside_regions: bool = Field(True, description="Drop words that overlap no vocal region.")
    region_tolerance_s: float = Field(
        0.5, ge=0.0, description="Regions are widened by this much on each side when checking a word (as much as "
                                 "VadConfig.asr_pad_s: the recogniser heard that padding, and VAD often starts a "
                                 "quiet line late).")
    filler_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FILLERS),
        description="Phrases removed wherever they occur (matched on lower-case words without punctuation).")
    filler_prefixes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PREFIXES),
        description="Phrases removed together with the rest of their line (e.g. 'subtitles by ...').")
    filler_alone: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALONE),
        description="Phrases removed only when they are all the words of a region (e.g. a lone 'you').")
    prefix_tail_s: float = Field(
        4.0, ge=0.0, description="After a filler prefix, following words within this many seconds go with it.")
    loop_max_n: int = Field(6, ge=1, description="Longest n-gram checked for loops.")
    loop_min_repeats: int = Field(
        4, ge=2, description="An n-gram (n >= 2) repeated this many times in a row inside one region is a loop.")
    loop_min_repeats_unigram: int = Field(
        8, ge=2, description="The same for a single word ('la la la la' is often real).")
    loop_max_gap_s: float = Field(
        2.0, ge=0.0, description="Copies further apart than this (end to start) do not continue a run.")
    loop_keep: int = Field(1, ge=0, description="Copies of a loop kept (the first ones).")
    max_word_s: float = Field(6.0, gt=0.0, description="A word lasting longer than this is implausible.")
    max_words_per_s: float = Field(
        8.0, gt=0.0, description="A region whose words come faster than this (words per second) is implausible.")
    word_rate_min_words: int = Field(6, ge=1, description="The word-rate rule looks only at regions with this many "
                                     "words.")
    flag_only: list[Rule] = Field(
        default_factory=list, description="Rules that only report their words and keep them.")


@dataclass
class GuardResult:
    words: list[Any]  # the kept words, as given
    removed: list[dict[str, Any]] = field(default_factory=list)  # {rule, text, start, end}
    flagged: list[dict[str, Any]] = field(default_factory=list)  # kept, but a flag_only rule matched

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.removed:
            out[entry["rule"]] = out.get(entry["rule"], 0) + entry["words"]
        return out


_PUNCT = re.compile(r"[^\w\s']", re.UNICODE)
_NON_LEXICAL = re.compile(r"^\s*([\[\(\*♪♫#].*[\]\)\*♪♫#]|[♪♫#\s]+|\[.*|.*\])\s*$")


def normalize(text: str) -> str:
    """Lower case, NFKC, punctuation (but apostrophes) removed, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return " ".join(_PUNCT.sub(" ", text).split())


def _get(w: Any, key: str) -> Any:
    return w[key] if isinstance(w, Mapping) else getattr(w, key)


@dataclass
class _W:
    index: int
    text: str
    norm: str
    start: float
    end: float
    region: int | None
    rule: str | None = None


def guard_words(words: Sequence[Any], regions: Sequence[Any] | None = None,
                cfg: GuardConfig | None = None) -> GuardResult:
    """Apply the rules (module docstring) to one song's words."""
    cfg = cfg or GuardConfig()
    if not cfg.enabled:
        return GuardResult(list(words))
    spans = sorted(span(r) for r in regions) if regions is not None else None
    ws = []
    for i, w in enumerate(words):
        text = str(_get(w, "word"))
        start, end = float(_get(w, "start")), float(_get(w, "end"))
        region = in_regions(start, end, spans, cfg.region_tolerance_s) if spans is not None else 0
        ws.append(_W(i, text, normalize(text), start, end, region))
    ws.sort(key=lambda w: (w.start, w.index))

    if spans is not None and cfg.drop_outside_regions:
        for w in ws:
            if w.region is None:
                w.rule = "outside_regions"
    for w in ws:
        if w.rule is None and (_NON_LEXICAL.match(w.text) or not w.norm):
            w.rule = "non_lexical"
    _fillers(ws, cfg)
    _loops(ws, cfg)
    for w in ws:
        if w.rule is None and w.end - w.start > cfg.max_word_s:
            w.rule = "long_word"
    _word_rate(ws, cfg)

    result = GuardResult([])
    flag_only = set(cfg.flag_only)
    for w in ws:
        if w.rule is None or w.rule in flag_only:
            result.words.append(words[w.index])
    result.removed = _entries([w for w in ws if w.rule and w.rule not in flag_only])
    result.flagged = _entries([w for w in ws if w.rule and w.rule in flag_only])
    return result


def _live(ws: list[_W]) -> list[_W]:
    return [w for w in ws if w.rule is None]


def _by_region(ws: list[_W]) -> dict[Any, list[_W]]:
    out: dict[Any, list[_W]] = {}
    for w in _live(ws):
        out.setdefault(w.region, []).append(w)
    return out


def _match_at(seq: list[_W], i: int, phrase: list[str]) -> bool:
    return i + len(phrase) <= len(seq) and all(seq[i + k].norm == phrase[k] for k in range(len(phrase)))


def _tokens(phrase: str) -> list[str]:
    return normalize(phrase).split()


def _fillers(ws: list[_W], cfg: GuardConfig) -> None:
    phrases = sorted((p for p in map(_tokens, cfg.filler_phrases) if p), key=len, reverse=True)
    prefixes = [p for p in map(_tokens, cfg.filler_prefixes) if p]
    alone = {tuple(p) for p in map(_tokens, cfg.filler_alone) if p}
    for seq in _by_region(ws).values():
        # Words are matched one token each; a token holding several words ("thank-you") is split by normalize.
        flat = [(w, t) for w in seq for t in w.norm.split()]
        toks = [_W(w.index, t, t, w.start, w.end, w.region) for w, t in flat]
        owners = [w for w, _ in flat]
        i = 0
        while i < len(toks):
            hit = next((p for p in prefixes if _match_at(toks, i, p)), None)
            if hit is not None:
                j = i + len(hit)
                prefix_end = toks[j - 1].end
                while j < len(toks) and toks[j].start - toks[j - 1].end <= 1.0 and \
                        toks[j].start - prefix_end <= cfg.prefix_tail_s:
                    j += 1
                for k in range(i, j):
                    owners[k].rule = "filler"
                i = j
                continue
            hit = next((p for p in phrases if _match_at(toks, i, p)), None)
            if hit is not None:
                for k in range(i, i + len(hit)):
                    owners[k].rule = "filler"
                i += len(hit)
                continue
            i += 1
        rest = [w for w in seq if w.rule is None]
        if rest and tuple(t for w in rest for t in w.norm.split()) in alone:
            for w in rest:
                w.rule = "filler"


def _loops(ws: list[_W], cfg: GuardConfig) -> None:
    for seq in _by_region(ws).values():
        i = 0
        while i < len(seq):
            best = None  # (covered words, n, copies)
            for n in range(1, cfg.loop_max_n + 1):
                if i + 2 * n > len(seq):
                    break
                if any(seq[k].start - seq[k - 1].end > cfg.loop_max_gap_s for k in range(i + 1, i + n)):
                    break  # the first copy itself spans a pause
                gram = [w.norm for w in seq[i:i + n]]
                copies = 1
                while True:
                    a = i + copies * n
                    if a + n > len(seq) or [w.norm for w in seq[a:a + n]] != gram:
                        break
                    if any(seq[k].start - seq[k - 1].end > cfg.loop_max_gap_s for k in range(a, a + n)):
                        break  # a pause inside the run: copies apart in time are not a loop
                    copies += 1
                need = cfg.loop_min_repeats_unigram if n == 1 else cfg.loop_min_repeats
                if copies >= need and (best is None or copies * n > best[0]):
                    best = (copies * n, n, copies)
            if best is None:
                i += 1
                continue
            _, n, copies = best
            for w in seq[i + cfg.loop_keep * n: i + copies * n]:
                w.rule = "loop"
            i += copies * n


def _word_rate(ws: list[_W], cfg: GuardConfig) -> None:
    for seq in _by_region(ws).values():
        if len(seq) < cfg.word_rate_min_words:
            continue
        length_s = max(w.end for w in seq) - seq[0].start
        if len(seq) / max(length_s, 1e-3) > cfg.max_words_per_s:
            for w in seq:
                w.rule = "word_rate"


def _entries(ws: list[_W]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for w in ws:
        last = out[-1] if out else None
        if last and last["rule"] == w.rule and last["_next"] == w.index and last["region"] == w.region:
            last["text"] += " " + w.text.strip()
            last["end"] = round(max(last["end"], w.end), 3)
            last["words"] += 1
            last["_next"] = w.index + 1
            continue
        out.append({"rule": w.rule, "text": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3),
                    "words": 1, "region": w.region, "_next": w.index + 1})
    for entry in out:
        del entry["_next"]
    return out
