"""`mfpipe report OUT`: one self-contained HTML page with the corpus's numbers and plots.

Plots are drawn with matplotlib (Agg, no display) as SVG and inlined in the
page, text kept as text; the CSS is inline too. The page loads nothing from
anywhere: it can be mailed, archived or opened offline. It reads the stage
outputs themselves (so it works before an export exists) and the current
export's manifest when there is one.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from .. import screening
from ..review import agreement as review_agreement
from ..review import sections as review_sections
from . import facts as folder_facts
from .export import MANIFEST, current_root

PALETTE = ["#3b6ea5", "#e07b39", "#5a9e6f", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd"]
PITCHES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SKILL_ORDER = ("caption", "temporal", "attribute", "harmony_theory", "lyric_vocal", "comparative_structural")


# ------------------------------------------------------------------ data


def _column(store, stage: str, columns: list[str]) -> list[dict[str, Any]]:
    if not store.has_output(stage):
        return []
    return store.read_columns(store.stage_dir(stage), columns).to_pylist()  # only these; missing ones: null


def gather(store) -> dict[str, Any]:
    """Everything the page shows, as plain numbers."""
    mir = _column(store, "mir", ["bpm", "meter", "key", "mode", "sections"])
    synth = _column(store, "synthesize", ["song_id", "caption_words", "metadata", "qa"])
    filt = _column(store, "filter", ["caption", "qa"])
    think = _column(store, "think", ["chains", "dropped"])
    generated: Counter = Counter()
    for row in synth:
        generated["caption"] += 1
        generated.update(q["skill"] for q in row["qa"] or [])
    kept: Counter = Counter()
    dropped: Counter = Counter()
    for row in filt:
        judgements = [("caption", row["caption"])] + [(j["skill"], j) for j in row["qa"] or []]
        for skill, j in judgements:
            (kept if j["keep"] else dropped)[skill] += 1
    actions: Counter = Counter()
    for row in think:
        actions.update(c["action"] for c in row["chains"] or [])
        actions["dropped"] += row["dropped"] or 0
    meta = [r["metadata"] or {} for r in synth]
    root = current_root(store)
    manifest = None
    if root is not None and store.fs.exists(f"{root}/{MANIFEST}"):
        with store.fs.open(f"{root}/{MANIFEST}") as fh:
            manifest = json.load(fh)
    prov = folder_facts.provenance_summary(store)
    return {
        "bpm": [r["bpm"] for r in mir if r["bpm"]],
        "keys": Counter((r["key"], r["mode"]) for r in mir if r["key"]),
        "meters": Counter(f"{r['meter']} beats/bar" for r in mir if r["meter"]),
        "section_counts": [len(r["sections"]) for r in mir if r.get("sections")],
        "section_lengths": [s["end"] - s["start"] for r in mir for s in r.get("sections") or []],
        "genres": Counter((m.get("genre") or "").strip().lower() for m in meta if m.get("genre")),
        "instruments": Counter(i.strip().lower() for m in meta for i in m.get("instruments") or [] if i.strip()),
        "caption_words": [r["caption_words"] for r in synth],
        "generated": generated, "kept": kept, "dropped": dropped, "filter_ran": bool(filt),
        "think": actions, "think_ran": bool(think),
        "rejects": folder_facts.reject_summary(store),
        "stage_rows": folder_facts.stage_rows(store),
        "manifest": manifest, "provenance": prov, "licences": folder_facts.licences(prov),
        "reviews": review_agreement.overview(store),  # people's decisions and the filter against them
        "screening": screening.summary(store),  # near-duplicate groups, evaluation contamination
    }


# ------------------------------------------------------------------ plots


class ReportError(RuntimeError):
    pass


def _figure(width: float = 6.0, height: float = 3.2):
    try:
        import matplotlib
    except ImportError:
        raise ReportError("mfpipe report draws with matplotlib: pip install 'mfpipe[report]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 10,
                         "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#888",
                         "axes.grid": True, "grid.color": "#e5e5e5", "axes.axisbelow": True})
    fig, ax = plt.subplots(figsize=(width, height))
    return fig, ax


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)
    return text  # without the XML prolog, doctype and RDF block: the SVG goes inline


def plot_hist(values: list[float], xlabel: str, bins: int = 20, color: str = PALETTE[0]) -> str | None:
    if not values:
        return None
    fig, ax = _figure()
    ax.hist(values, bins=min(bins, max(1, len(set(values)))), color=color, edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("songs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _svg(fig)


def plot_bars(counts: dict[str, float], *, horizontal: bool = False, top: int = 20, ylabel: str = "songs",
              color: str = PALETTE[0], percent: bool = False) -> str | None:
    items = [(k, v) for k, v in counts.items() if k][:top] if percent else Counter(counts).most_common(top)
    if not items:
        return None
    labels, values = [k for k, _ in items], [v for _, v in items]
    fig, ax = _figure(height=max(2.6, 0.28 * len(items) + 0.9) if horizontal else 3.2)
    if horizontal:
        ax.barh(labels[::-1], values[::-1], color=color)
        ax.set_xlabel(ylabel)
        ax.grid(axis="y", visible=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        bars = ax.bar(labels, values, color=color, width=0.6)
        ax.set_ylabel(ylabel)
        ax.grid(axis="x", visible=False)
        ax.yaxis.get_major_locator().set_params(integer=True)
        if percent:
            ax.set_ylim(0, 105)
            ax.bar_label(bars, labels=[f"{v:.0f}%" for v in values], fontsize=9)
        if len(labels) > 4:
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
    return _svg(fig)


def plot_keys(keys: Counter) -> str | None:
    if not keys:
        return None
    import numpy as np

    fig, ax = _figure()
    x = np.arange(len(PITCHES))
    major = [keys.get((p, "major"), 0) for p in PITCHES]
    minor = [keys.get((p, "minor"), 0) for p in PITCHES]
    ax.bar(x - 0.2, major, 0.4, label="major", color=PALETTE[0])
    ax.bar(x + 0.2, minor, 0.4, label="minor", color=PALETTE[1])
    ax.set_xticks(x, PITCHES)
    ax.set_ylabel("songs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="x", visible=False)
    ax.legend(frameon=False)
    return _svg(fig)


def plot_skill_outcomes(data: dict[str, Any]) -> str | None:
    generated, kept, dropped = data["generated"], data["kept"], data["dropped"]
    skills = [s for s in SKILL_ORDER if generated.get(s)] + sorted(set(generated) - set(SKILL_ORDER))
    if not skills:
        return None
    import numpy as np

    fig, ax = _figure(height=3.4)
    x = np.arange(len(skills))
    if data["filter_ran"]:
        k = np.array([kept.get(s, 0) for s in skills])
        d = np.array([dropped.get(s, 0) for s in skills])
        u = np.array([generated.get(s, 0) for s in skills]) - k - d
        ax.bar(x, k, color=PALETTE[2], label="kept by the filter")
        ax.bar(x, d, bottom=k, color=PALETTE[3], label="dropped by the filter")
        ax.bar(x, np.maximum(u, 0), bottom=k + d, color=PALETTE[7], label="not judged")
    else:
        ax.bar(x, [generated.get(s, 0) for s in skills], color=PALETTE[0], label="generated (unfiltered)")
    ax.legend(frameon=False, fontsize=8, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xticks(x, [s.replace("_", " ") for s in skills], rotation=25, ha="right")
    ax.set_ylabel("items")
    ax.grid(axis="x", visible=False)
    return _svg(fig)


def plot_pass_rates(data: dict[str, Any]) -> str | None:
    if not data["filter_ran"]:
        return None
    kept, dropped = data["kept"], data["dropped"]
    rates = {s.replace("_", " "): 100.0 * kept.get(s, 0) / (kept.get(s, 0) + dropped.get(s, 0))
             for s in SKILL_ORDER if kept.get(s, 0) + dropped.get(s, 0)}
    return plot_bars(rates, percent=True, ylabel="kept (%)", color=PALETTE[2])


def plot_think(actions: Counter) -> str | None:
    counts = {k: actions.get(k, 0) for k in ("kept", "rewritten", "dropped")}
    if not any(counts.values()):
        return None
    fig, ax = _figure(height=2.8)
    bars = ax.bar(list(counts), list(counts.values()), color=[PALETTE[2], PALETTE[1], PALETTE[3]])
    ax.bar_label(bars, fontsize=9)
    ax.set_ylabel("chains")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="x", visible=False)
    return _svg(fig)


def plot_rejects(rejects: list[dict[str, Any]]) -> str | None:
    counts = {f"{r['stage']}: {r['error']}": r["count"] for r in rejects}
    return plot_bars(counts, horizontal=True, ylabel="rejects", color=PALETTE[3])


# ------------------------------------------------------------------ the page

CSS = """
:root { --ink:#1d2733; --muted:#5f6b7a; --line:#e3e7ec; --bg:#f5f7fa; --card:#fff; --accent:#3b6ea5; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; color:var(--ink);
       background:var(--bg); }
header { background:#1f3b57; color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header p { margin:0; color:#c9d6e3; font-size:13px; }
main { padding:24px 40px 48px; max-width:1400px; margin:0 auto; }
.stats { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px; margin-bottom:20px; }
.stat { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 16px; }
.stat b { display:block; font-size:24px; font-weight:600; color:var(--accent); }
.stat span { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.warn { background:#fff4e5; border:1px solid #f2c48d; border-left:5px solid #e07b39; border-radius:6px;
        padding:10px 14px; margin:0 0 12px; }
h2 { font-size:17px; margin:28px 0 12px; font-weight:600; }
.grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(520px,1fr)); gap:16px; }
figure.plot { margin:0; background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
figure.plot figcaption { font-weight:600; margin-bottom:4px; }
figure.plot figcaption small { display:block; font-weight:400; color:var(--muted); }
figure.plot svg { width:100%; height:auto; display:block; }
.empty { color:var(--muted); font-style:italic; padding:36px 0; text-align:center; }
table { border-collapse:collapse; width:100%; background:var(--card); border:1px solid var(--line); border-radius:8px;
        overflow:hidden; font-size:13px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef2f6; font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
footer { color:var(--muted); font-size:12px; margin-top:32px; }
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _plot(key: str, title: str, svg: str | None, note: str = "", empty: str = "no data yet") -> str:
    body = svg if svg else f'<div class="empty">{_esc(empty)}</div>'
    small = f"<small>{_esc(note)}</small>" if note else ""
    return (f'<figure class="plot" data-plot="{key}" data-empty="{str(svg is None).lower()}">'
            f"<figcaption>{_esc(title)}{small}</figcaption>{body}</figure>")


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{_esc(v)}</td>' if i in numeric else f"<td>{_esc(v)}</td>"
                                    for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body or '<tr><td>none</td></tr>'}</tbody></table>"


def render(data: dict[str, Any], title: str) -> str:
    manifest = data["manifest"]
    prov = data["provenance"]
    stats = [("songs ingested", data["stage_rows"].get("ingest", 0)),
             ("songs synthesized", data["stage_rows"].get("synthesize", 0)),
             ("items generated", sum(data["generated"].values())),
             ("MF-Skills rows", manifest["tables"]["mf_skills"]["rows"] if manifest else "–"),
             ("MF-Think rows", manifest["tables"]["mf_think"]["rows"] if manifest else "–"),
             ("rejects", sum(r["count"] for r in data["rejects"]))]
    warnings = []
    if prov.random_weight_models:
        names = ", ".join(sorted({f"{m['name']} ({m['stage']})" for m in prov.random_weight_models}))
        warnings.append(f"Rows were made with random-weight stand-in models: {names}. Their text is noise.")
    if data["generated"] and not data["filter_ran"]:
        warnings.append("The quality filter has not run: items are unfiltered.")
    if manifest is None:
        warnings.append("No export yet: run `mfpipe export OUT` for the MF-Skills / MF-Think shards.")
    words = data["caption_words"]
    plots = [
        _plot("bpm", "Tempo (BPM)", plot_hist(data["bpm"], "BPM (madmom)"), f"{len(data['bpm'])} songs with a tempo"),
        _plot("keys", "Key and mode", plot_keys(data["keys"]), "essentia key estimate"),
        _plot("meter", "Meter", plot_bars(dict(data["meters"])), "beats per bar (madmom downbeats)"),
        _plot("sections", "Sections per song", plot_hist(data["section_counts"], "sections (measured form)",
                                                         bins=max(1, min(20, len(set(data["section_counts"]))))),
              f"{len(data['section_counts'])} songs with a measured form"),
        _plot("section_length", "Section length", plot_hist(data["section_lengths"], "seconds", color=PALETTE[1]),
              f"{len(data['section_lengths'])} sections"),
        _plot("genres", "Genres", plot_bars(dict(data["genres"]), horizontal=True, top=15), "synthesize metadata"),
        _plot("instruments", "Instruments", plot_bars(dict(data["instruments"]), horizontal=True, top=20),
              "synthesize metadata, top 20"),
        _plot("skills", "Items per skill", plot_skill_outcomes(data), "captions and QA items, by filter outcome"),
        _plot("caption_words", "Rich caption length",
              plot_hist(words, "words per caption", color=PALETTE[4]),
              f"mean {sum(words) / len(words):.0f} words (the paper: ~452)" if words else ""),
        _plot("pass_rates", "Filter pass rate per skill", plot_pass_rates(data), "kept / judged",
              empty="the filter has not run"),
        _plot("think", "MF-Think chains", plot_think(data["think"]), "kept, rewritten, dropped (>30% wrong steps)",
              empty="the think stage has not run"),
        _plot("rejects", "Rejects by reason", plot_rejects(data["rejects"]), "every stage", empty="no rejects"),
    ]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>{_esc(title)}</h1><p>mfpipe report · "
             f"{_esc(manifest['version'] if manifest else 'no export')} · "
             f"made {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}</p></header><main>"]
    parts += [f'<div class="warn">{_esc(w)}</div>' for w in warnings]
    parts.append('<div class="stats">' + "".join(f'<div class="stat"><b>{_esc(v)}</b><span>{_esc(k)}</span></div>'
                                                 for k, v in stats) + "</div>")
    parts.append('<h2>Music</h2><div class="grid">' + "".join(plots[:5]) + "</div>")
    parts.append('<h2>Items and quality</h2><div class="grid">' + "".join(plots[5:]) + "</div>")
    parts.append(review_sections.report(data.get("reviews"), _table))
    parts.append("<h2>Stages</h2>" + _table(["stage", "rows"], [[k, v] for k, v in data["stage_rows"].items()], {1}))
    parts.append("<h2>Rejects</h2>" + _table(["stage", "error", "rejects", "retryable", "example"],
                                             [[r["stage"], r["error"], r["count"], r["retryable"],
                                               r["example"][:160]] for r in data["rejects"]], {2, 3}))
    parts.append(_screening(data.get("screening")))
    parts.append("<h2>Models</h2>" + _table(["stage", "role", "model", "random weights", "rows"],
                                            [[m["stage"], m["role"], m["name"], "yes" if m["random_weights"] else "no",
                                              m["rows"]] for m in prov.models], {4}))
    parts.append("<h2>Licences that bind the data</h2>" + _table(["what", "licence", "used by"],
                                                               [[e["what"], e["licence"], e["from"]]
                                                                for e in data["licences"]]))
    parts.append("<footer>Self-contained page: plots are inline SVG (matplotlib), nothing is fetched.</footer>")
    parts.append("</main></body></html>")
    return "".join(parts)


def _screening(screening: dict[str, Any] | None) -> str:
    """Near-duplicate groups (what was kept) and contaminations per excluded evaluation set."""
    if not screening:
        return ""
    dups, contam = screening["near_duplicates"], screening["contamination"]
    groups = _table(["kept", "copies left out", "largest bit-error rate"],
                    [[g["kept"] + (" (itself left out: evaluation audio)" if g["kept_left_out"] else ""),
                      "; ".join(g["copies"]), g["max_ber"]] for g in dups["table"]], {2})
    sets = _table(["excluded set", "clips", "clips unreadable", "songs left out"],
                  [[e["set"], e["clips"], e["unreadable"], e["songs"]] for e in contam["sets"]], {1, 2, 3})
    songs = _table(["song", "contains clip", "of set", "at (s)", "bit-error rate"],
                   [[c["song"], c["clip"], c["set"], c["start_s"], c["ber"]] for c in contam["table"]], {3, 4})
    return (f'<h2>Near-duplicates</h2><p>{dups["groups"]} group(s); {dups["left_out"]} copies left out, one '
            f'recording counted once.</p>{groups}<h2>Evaluation contamination</h2><p>{contam["left_out"]} '
            f"song(s) left out for holding a clip of an excluded evaluation set.</p>{sets}{songs}")


def write_report(output: str, dest: str | None = None) -> str:
    from ..store import OutputStore

    store = OutputStore(output)
    page = render(gather(store), f"Corpus report: {Path(store.root).name}")
    path = dest or store.join("report.html")
    with store.fs.open(path, "w", encoding="utf-8") as fh:
        fh.write(page)
    return path
