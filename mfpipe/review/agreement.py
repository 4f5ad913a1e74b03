"""The quality filter and the MIR rules measured against people, so thresholds can be set from data.

Over the items people reviewed (the decision that counts, on the current text):
a person *rejects* an item when they drop or edit it (the text as written was
not good enough), and *accepts* it when they keep it. Each automatic judge
predicts a rejection:
- `filter`: the quality filter dropped the item (`keep = false`), its verdict
  on this text (not an older one);
- `audio_lm`: the audio-LM's own part of that verdict, for the items it really
  judged (a score, a P(yes)): a drop with no MIR flag, or one whose summary
  line says the audio-LM did not confirm it;
- `mir`: the item contradicts the MIR facts (the filter's flags, or the ones
  synthesize recorded for this text).
Precision: of the items the judge rejected, the share people rejected too.
Recall: of the items people rejected, the share the judge caught. Both per
skill and over all items; an empty denominator gives no figure.
Cohen's kappa between two reviewers, over the items both reviewed (each one's
latest decision on the current text), on the same accept / reject verdict:
(p_o - p_e) / (1 - p_e); undefined when chance agreement is total.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import combinations
from typing import Any

from ..store import OutputStore
from .corpus import fresh, read_columns
from .decisions import DecisionStore, resolve
from .items import chain_items, synthesize_items

RULES = {"filter": "quality filter (keep = false)", "audio_lm": "audio-LM (its own part of the verdict)",
         "mir": "MIR rules (a contradiction flag)"}
AUDIO_LM_DROP = "audio-LM did not confirm"  # the filter's summary line when the audio-LM caused a drop
ALL = "all"


def rejects(action: str) -> bool:
    """A person's drop or edit rejects the text as written; a keep accepts it."""
    return action in ("drop", "edit")


def judge_verdicts(judgement: dict[str, Any] | None, synth_flags: list[str]) -> dict[str, bool | None]:
    """rule → True (it rejects the item), False (it accepts it), None (it made no call)."""
    if judgement is None:
        return {"filter": None, "audio_lm": None, "mir": bool(synth_flags)}
    dropped, flags = not judgement.get("keep"), list(judgement.get("flags") or [])
    heard = judgement.get("score") is not None or judgement.get("p_yes") is not None
    summary = " ".join((judgement.get("reasons") or [])[:1])
    audio_lm = (dropped and (not flags or AUDIO_LM_DROP in summary)) if heard else None
    return {"filter": dropped, "audio_lm": audio_lm, "mir": bool(flags or synth_flags)}


def reviewed_items(store: OutputStore, decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every item (caption, QA item, chain) with a decision, as it is now: kind, skill, the decision that
    counts (`human`: None when all are on an older text, `stale`), each reviewer's own, and for captions and QA
    items the judges' verdicts. Only the songs with decisions are read."""
    by_song: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in decisions:
        by_song[d["song_id"]].append(d)
    songs = sorted(by_song)
    if not songs:
        return []
    rows: dict[str, dict[str, dict[str, Any]]] = {"filter": {}, "think": {}}
    columns = {"filter": ["song_id", "caption", "qa", "provenance.created_at"],
               "think": ["song_id", "chains", "provenance.created_at"]}
    for stage, wanted in columns.items():
        for path in store.shards(store.stage_dir(stage)):
            for row in read_columns(store, path, wanted, songs).to_pylist():
                rows[stage][row["song_id"]] = row
    out = []
    for path in store.shards(store.stage_dir("synthesize")):
        wanted = ["song_id", "caption", "qa", "flags", "provenance.created_at"]
        for synth in read_columns(store, path, wanted, songs).to_pylist():
            sid = synth["song_id"]
            out += _song_items(synth, rows["filter"].get(sid), rows["think"].get(sid), by_song[sid])
    return out


def _song_items(synth: dict[str, Any], judged: dict[str, Any] | None, think: dict[str, Any] | None,
                decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One song's reviewed items (`decisions`: the song's own, oldest first)."""
    items = synthesize_items(synth)
    if think is not None and fresh(think.get("created_at"), synth.get("created_at")):
        items += chain_items(think)
    reviews = resolve(decisions, {i.key: i.sha256 for i in items})
    if judged is not None and not fresh(judged.get("created_at"), synth.get("created_at")):
        judged = None  # a verdict on an older text says nothing about this one
    by_index = {j["index"]: j for j in (judged or {}).get("qa") or []}
    flags: dict[str, list[str]] = defaultdict(list)
    for f in synth.get("flags") or []:
        flags[f["field"]].append(f["check"])
    out = []
    for item in items:
        review = reviews.get(item.key)
        if review is None:
            continue
        entry = {"key": item.key, "kind": item.kind, "skill": item.skill, "stale": review.current is None,
                 "human": review.current["action"] if review.current else None,
                 "reviewers": {name: d["action"] for name, d in review.by_reviewer.items()}, "judges": None}
        if item.kind != "chain":
            judgement = (judged or {}).get("caption") if item.kind == "caption" else by_index.get(item.index)
            field = "caption" if item.kind == "caption" else f"qa[{item.index}].answer"
            entry["judges"] = judge_verdicts(judgement, flags.get(field, []))
        out.append(entry)
    return out


def overview(store: OutputStore) -> dict[str, Any] | None:
    """For the report: decisions, reviewers, per kind and skill what people decided, and the agreement
    table. None when nobody has reviewed anything."""
    decisions = DecisionStore(store).load()
    if not decisions:
        return None
    items = reviewed_items(store, decisions)
    counts: dict[str, Counter] = defaultdict(Counter)
    for i in items:
        name = f"chain: {i['skill']}" if i["kind"] == "chain" else i["skill"]
        counts[name].update(["stale"] if i["stale"] else ["reviewed", i["human"]])
    return {"decisions": len(decisions), "reviewers": sorted({d["reviewer"] for d in decisions}),
            "counts": {k: dict(c) for k, c in sorted(counts.items())}, "agreement": measure(items)}


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def confusion(pairs: Iterable[tuple[bool, bool]]) -> dict[str, Any]:
    """(judge rejects, person rejects) pairs → counts, precision and recall."""
    c = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for judge, human in pairs:
        c[("t" if judge == human else "f") + ("p" if judge else "n")] += 1
    return {"items": sum(c.values()), **c, "precision": _ratio(c["tp"], c["tp"] + c["fp"]),
            "recall": _ratio(c["tp"], c["tp"] + c["fn"])}


def cohen_kappa(a: list[bool], b: list[bool]) -> float | None:
    """Cohen's kappa of two raters' yes/no verdicts on the same items (None: undefined)."""
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    return None if chance >= 1 else round((observed - chance) / (1 - chance), 4)


def measure(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The agreement table over the items with a decision on their current text: per judge and skill (and
    over all; captions and QA items, the ones the judges see), and kappa per pair of reviewers (chains too)."""
    items = [i for i in items if i.get("human") is not None]
    judged = [i for i in items if i.get("judges") is not None]
    rows = []
    skills = sorted({i["skill"] for i in judged}, key=lambda s: (s != "caption", s))
    for rule in RULES:
        for skill in [*skills, ALL]:
            pairs = [(i["judges"][rule], rejects(i["human"])) for i in judged
                     if (skill == ALL or i["skill"] == skill) and i["judges"][rule] is not None]
            if pairs:
                rows.append({"rule": rule, "skill": skill, **confusion(pairs)})
    pairs_out = []
    reviewers = sorted({name for i in items for name in i["reviewers"]})
    for a, b in combinations(reviewers, 2):
        both = [i["reviewers"] for i in items if a in i["reviewers"] and b in i["reviewers"]]
        if both:
            va, vb = [rejects(r[a]) for r in both], [rejects(r[b]) for r in both]
            pairs_out.append({"a": a, "b": b, "items": len(both), "agree": sum(x == y for x, y in zip(va, vb)),
                              "kappa": cohen_kappa(va, vb)})
    return {"reviewed_items": len(items), "rules": rows, "reviewer_pairs": pairs_out}


def agreement(store: OutputStore, decisions: list[dict[str, Any]]) -> dict[str, Any]:
    return measure(reviewed_items(store, decisions))


def table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The agreement table for the card and the report: headers and rows."""
    headers = ["judge", "skill", "items", "judge rejects, people too", "judge rejects, people keep",
               "people reject, judge keeps", "both keep", "precision", "recall"]
    rows = [[RULES[r["rule"]], r["skill"], r["items"], r["tp"], r["fp"], r["fn"], r["tn"],
             _pct(r["precision"]), _pct(r["recall"])] for r in summary.get("rules") or []]
    return headers, rows


def kappa_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["reviewer", "reviewer", "items both reviewed", "agree", "Cohen's kappa"]
    rows = [[p["a"], p["b"], p["items"], p["agree"], "undefined" if p["kappa"] is None else f"{p['kappa']:.2f}"]
            for p in summary.get("reviewer_pairs") or []]
    return headers, rows


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"
