"""What the review pages show, as plain data (the templates only lay it out, escaped).

`song_list`: every song with its state, filtered and sorted as the list's
query asks; `song_page`: one song's audio facts, its timeline lanes (positions
in % of the song), its items with the filter's verdicts, flags and people's
decisions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlencode

from ..audio import AudioConfig
from ..curate.export import mir_facts
from ..schemas.synthesize import SKILLS
from ..songfacts import clock
from .corpus import STAGES, VERDICTS, CorpusIndex, SongSummary, song_rows
from .decisions import REASONS, ItemReview, resolve
from .items import chain_items, synthesize_items

SKILL_CHOICES = ("caption", *SKILLS)
REVIEW_STATES = ("unreviewed", "reviewed", "keep", "drop", "edit", "stale")
SORTS = {"name": "file name", "flags": "most MIR flags", "dropped": "most items dropped by the filter",
         "unreviewed": "most items to review", "duration": "longest"}
PAGE_SIZE = 200  # songs per page of the list
MAX_BEATS = 4000  # beyond this, the beat lane shows downbeats only
WINDOW_S = AudioConfig().window_s


@dataclass
class ListQuery:
    """The song list's filters (all optional; the song page carries them for next / previous)."""

    flag: str = ""  # any | none | a check (bpm, key, ...)
    skill: str = ""  # songs with an item of this skill (with the verdict / review filters below)
    verdict: str = ""  # kept | dropped | unjudged: the filter's verdict on an item
    judged: str = ""  # yes | no | stale: the filter's verdict on the song's current text
    think: str = ""  # kept | rewritten | none: the song's MF-Think chains
    genre: str = ""
    review: str = ""  # one of REVIEW_STATES, for an item
    q: str = ""  # text search: file name, caption, QA, chains, lyrics
    sort: str = "name"
    page: str = "1"  # of the list (PAGE_SIZE songs a page)

    @classmethod
    def from_params(cls, params: Any) -> ListQuery:
        return cls(**{f.name: str(params.get(f.name) or "").strip()[:200] for f in fields(cls)
                      if params.get(f.name)})

    def encoded(self, **change: str) -> str:
        values = {f.name: change.get(f.name, getattr(self, f.name)) for f in fields(self)}
        return urlencode({f.name: v for f in fields(self) if (v := values[f.name]) and v != f.default})

    @property
    def page_number(self) -> int:
        return int(self.page) if self.page.isdigit() and int(self.page) > 0 else 1


def _item_state_matches(state: str, wanted: str) -> bool:
    return wanted == state or (wanted == "reviewed" and state in ("keep", "drop", "edit"))


def _matches(song: SongSummary, q: ListQuery, reviews: dict[str, ItemReview], found: set[str] | None) -> bool:
    if q.flag and not (q.flag == "any" and song.flags or q.flag == "none" and not song.flags
                       or q.flag in song.flags):
        return False
    if q.judged and song.judged != q.judged:
        return False
    if q.think and not (q.think in song.chain_actions or q.think == "none" and not song.chain_actions):
        return False
    if q.genre and song.genre != q.genre:
        return False
    if found is not None and song.song_id not in found:
        return False
    if q.skill or q.verdict or q.review:
        return any((not q.skill or i.skill == q.skill) and (not q.verdict or i.verdict == q.verdict)
                   and (not q.review or _item_state_matches(_state(reviews, i.key), q.review))
                   for i in song.items)
    return True


def _state(reviews: dict[str, ItemReview], key: str) -> str:
    review = reviews.get(key)
    return review.state if review else "unreviewed"


def _row(song: SongSummary, reviews: dict[str, ItemReview]) -> dict[str, Any]:
    states = Counter(_state(reviews, i.key) for i in song.items)
    verdicts = Counter(i.verdict for i in song.items if i.verdict)
    return {"song": song, "stages": [(s, s in song.shards) for s in STAGES],
            "rejects": song.rejects, "verdicts": verdicts, "states": states,
            "reviewed": sum(states[s] for s in ("keep", "drop", "edit")), "n_items": len(song.items)}


def song_list(index: CorpusIndex, decisions: list[dict[str, Any]], q: ListQuery, paged: bool = True
              ) -> dict[str, Any]:
    reviews = resolve(decisions, index.all_shas())
    found = index.search(q.q) if q.q else None
    rows = [_row(index.songs[k], reviews) for k in index.order
            if _matches(index.songs[k], q, reviews, found)]
    sort = {"flags": lambda r: -len(r["song"].flags), "dropped": lambda r: -r["verdicts"]["dropped"],
            "unreviewed": lambda r: -(r["n_items"] - r["reviewed"]),
            "duration": lambda r: -(r["song"].duration_s or 0.0)}.get(q.sort)
    if sort:
        rows.sort(key=sort)  # stable: file name order within equal keys
    songs = index.songs.values()
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(q.page_number, pages)
    shown = rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE] if paged else rows
    return {"rows": shown, "matched": len(rows), "query": q, "total": len(index.songs), "page": page, "pages": pages,
            "prev_page": q.encoded(page=str(page - 1)) if page > 1 else None,
            "next_page": q.encoded(page=str(page + 1)) if page < pages else None,
            "choices": _choices(songs)}


def _choices(songs: Iterable[SongSummary]) -> dict[str, list[tuple[str, str]]]:
    """(value, label) of every filter's options."""
    songs = list(songs)
    same = {"flag": sorted({f for s in songs for f in s.flags}), "genre": sorted({s.genre for s in songs if s.genre}),
            "skill": SKILL_CHOICES, "verdict": VERDICTS, "review": REVIEW_STATES,
            "think": ("kept", "rewritten", "none"), "judged": ("yes", "no", "stale")}
    out = {name: [(v, v) for v in values] for name, values in same.items()}
    out["flag"] = [("any", "with contradictions"), ("none", "without"), *out["flag"]]
    out["sort"] = list(SORTS.items())
    return out


def neighbours(index: CorpusIndex, decisions: list[dict[str, Any]], q: ListQuery,
               song_id: str) -> tuple[str | None, str | None]:
    """The previous and next song of the filtered list (song pages of songs with audio only)."""
    order = [r["song"].song_id for r in song_list(index, decisions, q, paged=False)["rows"] if r["song"].has_audio]
    if song_id not in order:
        return None, order[0] if order else None
    at = order.index(song_id)
    return (order[at - 1] if at > 0 else None), (order[at + 1] if at + 1 < len(order) else None)


# ------------------------------------------------------------------ one song


def _pct(t: float, duration: float) -> float:
    return round(100.0 * max(0.0, min(t, duration)) / duration, 4) if duration > 0 else 0.0


def _span(start: float, end: float, duration: float, **extra: Any) -> dict[str, Any]:
    left = _pct(start, duration)
    return {"start": round(float(start), 3), "end": round(float(end), 3), "left": left,
            "width": max(0.05, round(_pct(end, duration) - left, 4)), "clock": clock(start), **extra}


def timeline(rows: dict[str, dict[str, Any]], duration: float) -> dict[str, list[dict[str, Any]]]:
    mir, lyrics, caption = rows.get("mir") or {}, rows.get("lyrics") or {}, rows.get("caption") or {}
    downbeats = {round(float(t), 3) for t in mir.get("downbeats") or []}
    beats = [float(t) for t in mir.get("beats") or []]
    if len(beats) > MAX_BEATS:
        beats = sorted(downbeats)
    facts = mir_facts(mir) or {}
    return {
        "beats": [{"t": round(t, 3), "left": _pct(t, duration), "down": round(t, 3) in downbeats} for t in beats],
        "sections": [_span(s["start"], s["end"], duration, label=s["label"], name=s.get("name"))
                     for s in mir.get("sections") or []],
        "chords": [_span(c["start"], c["end"], duration, label=c["label"]) for c in facts.get("chords") or []],
        "vocals": [_span(r["start"], r["end"], duration) for r in lyrics.get("vocal_regions") or []],
        "words": [_span(w["start"], w["end"], duration, word=w["word"]) for w in lyrics.get("words") or []],
        "windows": [_span(w["start"], w["end"], duration, text=w["text"]) for w in caption.get("windows") or []],
    }


def highlighted(text: str, flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The text in segments; a segment that states what a flag contradicts carries the flag's message."""
    marks: list[tuple[int, int, str]] = []
    for f in flags:
        stated = (f.get("stated") or "").strip()
        if stated:
            marks += [(m.start(), m.end(), f["message"]) for m in re.finditer(re.escape(stated), text, re.I)]
    segments, at = [], 0
    for start, end, message in sorted(marks):
        if start < at:
            continue  # overlaps a span already marked
        if start > at:
            segments.append({"text": text[at:start], "flag": None})
        segments.append({"text": text[start:end], "flag": message})
        at = end
    if at < len(text):
        segments.append({"text": text[at:], "flag": None})
    return segments


def review_view(review: ItemReview | None, reviewer: str) -> dict[str, Any]:
    review = review or ItemReview()
    current = review.current
    return {"state": review.state, "current": current, "mine": review.by_reviewer.get(reviewer),
            "others": [d for name, d in sorted(review.by_reviewer.items()) if name != reviewer],
            "stale": review.stale, "edit": (current or {}).get("edit") if (current or {}).get("action") == "edit"
            else None}


def _verdict(j: dict[str, Any] | None) -> dict[str, Any] | None:
    if j is None:
        return None
    return {"keep": bool(j.get("keep")), "score": j.get("score"), "p_yes": j.get("p_yes"),
            "reasons": list(j.get("reasons") or []), "flags": list(j.get("flags") or []),
            "windows": list(j.get("windows") or []), "audio_lm_answer": j.get("audio_lm_answer")}


def song_page(index: CorpusIndex, song: SongSummary, decisions: list[dict[str, Any]],
              reviewer: str) -> dict[str, Any]:
    rows = song_rows(index.store, song)
    ingest = rows.get("ingest") or {}
    duration = float(ingest.get("duration_s") or song.duration_s or 0.0)
    synth, judged, think = rows.get("synthesize"), rows.get("filter"), rows.get("think")
    stale_verdict = song.judged == "stale"
    by_index = {j["index"]: j for j in (judged or {}).get("qa") or []} if not stale_verdict else {}
    reviews = resolve(decisions, index.shas(song.song_id))
    flags_by_field: dict[str, list[dict[str, Any]]] = {}
    for f in (synth or {}).get("flags") or []:
        flags_by_field.setdefault(f["field"], []).append(f)
    items = []
    for item in synthesize_items(synth) if synth else []:
        field = "caption" if item.kind == "caption" else f"qa[{item.index}].answer"
        j = ((judged or {}).get("caption") if item.kind == "caption" else by_index.get(item.index))
        j = None if stale_verdict else j
        windows = list((j or {}).get("windows") or [])
        items.append({"item": item, "sha256": item.sha256, "flags": flags_by_field.get(field, []),
                      "segments": highlighted(item.answer, flags_by_field.get(field, [])),
                      "verdict": _verdict(j), "t": windows[0] * WINDOW_S if windows else (0.0 if item.kind ==
                                                                                         "caption" else None),
                      "review": review_view(reviews.get(item.key), reviewer)})
    qa_time = {i["item"].index: i["t"] for i in items if i["item"].kind == "qa"}
    chains = []
    chains_fresh = any(i.kind == "chain" for i in song.items)  # the index leaves out chains older than the text
    if think and chains_fresh:
        raw = think.get("chains") or []
        for item, chain in zip(chain_items(think), raw):
            chains.append({"item": item, "sha256": item.sha256, "chain": chain,
                           "t": qa_time.get(item.index), "review": review_view(reviews.get(item.key), reviewer)})
    other_flags = [f for k, fs in flags_by_field.items() if k != "caption" and not k.startswith("qa[") for f in fs]
    return {"song": song, "ingest": ingest, "duration": duration, "rows": rows, "lanes": timeline(rows, duration),
            "synth": synth, "metadata": (synth or {}).get("metadata") or {}, "other_flags": other_flags,
            "judged": song.judged, "items": items, "chains": chains, "think": think, "lyrics": rows.get("lyrics"),
            "chains_stale": bool(think and think.get("chains") and not chains_fresh),
            "reasons": REASONS, "stages": [(s, s in song.shards) for s in STAGES]}
