"""Export honours people: drops, edits (captions, QA items, chains), items brought back over the filter,
provenance; stale decisions are not applied; the card and the report count them and measure the filter
and the MIR rules against people, on a known set of decisions."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from mfpipe.curate import af3
from mfpipe.curate import export as corpus
from mfpipe.curate.report import write_report
from mfpipe.pipeline.config import load_config
from mfpipe.review.app import create_app
from mfpipe.review.decisions import DecisionStore, new_decision
from mfpipe.review.items import Item, chain_items, synthesize_items
from mfpipe.schemas import RunInfo, to_table
from mfpipe.schemas.synthesize import SynthesizeRecord
from mfpipe.store import OutputStore
from mfpipe.thinktext import render
from support.fixtures_review import copy_review_corpus

pytestmark = pytest.mark.slow  # the curator session's corpus (real ingest + MIR runs)

CAPTION_EDIT = "A slow pop song at 120 BPM in C major with acoustic guitar, bass and piano."
CHAIN_EDIT = render(["The tonic chord returns at every cadence.", "So the key is C major."], "C major")


def _rows(out: Path, table: str) -> dict[str, dict]:
    files = sorted((out / "export" / table).glob("part-*.parquet"))
    return {r["id"]: r for r in pq.read_table(files).to_pylist()}


def _export(out: Path, run_id: str) -> dict:
    cfg = load_config(None, ["profile=cpu"])
    return corpus.build(OutputStore(out), cfg.export, RunInfo(run_id=run_id, config_hash=cfg.content_hash())).manifest


def _items(out: Path, song_id: str) -> dict[str, Item]:
    synth = [r for r in pq.read_table(sorted((out / "synthesize").glob("*.parquet"))).to_pylist()
             if r["song_id"] == song_id]
    think = [r for r in pq.read_table(sorted((out / "think").glob("*.parquet"))).to_pylist()
             if r["song_id"] == song_id]
    return {i.key.split(":", 1)[1]: i for i in synthesize_items(synth[0]) + (chain_items(think[0]) if think else [])}


@pytest.fixture(scope="module")
def reviewed(review_corpus, tmp_path_factory):
    """The corpus with a known set of decisions by alice and bob, exported."""
    c = copy_review_corpus(review_corpus, tmp_path_factory.mktemp("review-export") / "out")
    _export(c.out, "review-0")  # the same corpus without decisions
    before = _rows(c.out, "mf_skills"), _rows(c.out, "mf_think")
    store = DecisionStore(OutputStore(c.out))
    f, h = _items(c.out, c.flagged), _items(c.out, c.hostile)
    qa1 = f["qa:1"]
    decisions = [
        ("bob", f["qa:0"], "drop", None), ("bob", f["qa:3"], "drop", None),  # bob first: alice's come later
        ("alice", f["caption"], "edit", {"text": CAPTION_EDIT}),
        ("alice", f["qa:0"], "drop", None),
        ("alice", qa1, "edit", {"question": "In which key is the song?", "answer": qa1.options[2],
                                "options": list(qa1.options)}),
        ("alice", f["qa:2"], "keep", None),  # the filter dropped it (every third QA item)
        ("alice", f["qa:3"], "keep", None),
        ("alice", f["qa:5"], "keep", None),  # dropped by the filter too
        ("alice", h["think:1"], "drop", None),
        ("alice", h["think:5"], "edit", {"text": CHAIN_EDIT}),
    ]
    for reviewer, item, action, edit in decisions:
        store.record(new_decision(reviewer, item, action, "wrong fact" if action == "drop" else None, edit))
    # A decision on a text that has been regenerated since (the hash of another answer): shown, not applied.
    older = Item(h["qa:4"].key, c.hostile, "qa", h["qa:4"].skill, h["qa:4"].question, "an older answer")
    store.record(new_decision("alice", older, "drop"))
    manifest = _export(c.out, "review-1")
    return c, f, h, before, manifest


def test_drops_edits_and_restores_reach_the_rows(reviewed):
    c, f, h, (skills_before, think_before), manifest = reviewed
    sid = c.flagged
    skills = _rows(c.out, "mf_skills")
    assert f"{sid}:qa:0" in skills_before and f"{sid}:qa:0" not in skills  # a person's drop
    caption = skills[f"{sid}:caption"]
    assert caption["answer"] == CAPTION_EDIT and caption["answer_words"] == len(CAPTION_EDIT.split())
    review = caption["provenance"][-1]
    assert review["stage"] == "review" and "edit" in review["notes"][0]
    assert json.loads(review["settings"])["reviewer"] == "alice"
    qa1 = skills[f"{sid}:qa:1"]
    assert (qa1["question"], qa1["answer"]) == ("In which key is the song?", f["qa:1"].options[2])
    for index in (2, 5):  # the filter dropped them, a person kept them: they are back
        row = skills[f"{sid}:qa:{index}"]
        assert f"{sid}:qa:{index}" not in skills_before and row["quality"]["status"] == "reviewed"
        assert "overruling the quality filter" in row["provenance"][-1]["notes"][0]
    kept = skills[f"{sid}:qa:3"]  # bob dropped it, alice kept it later: the latest decision counts
    assert kept["quality"]["status"] == "passed"
    assert kept["provenance"][-1]["notes"] == ["human review: kept as written"]
    stale = skills[f"{c.hostile}:qa:4"]  # the drop was for an older text
    assert stale == {**skills_before[f"{c.hostile}:qa:4"], "provenance": stale["provenance"]}
    assert all(p["stage"] != "review" for p in stale["provenance"])
    assert len(skills) == len(skills_before) - 1 + 2
    # Untouched rows are byte-for-byte what they were (but for the export's own provenance entry).
    other = f"{c.hostile}:qa:0"
    assert {k: v for k, v in skills[other].items() if k != "provenance"} == \
           {k: v for k, v in skills_before[other].items() if k != "provenance"}

    think = _rows(c.out, "mf_think")
    assert f"{c.hostile}:think:1" in think_before and f"{c.hostile}:think:1" not in think
    chain = think[f"{c.hostile}:think:5"]
    assert chain["text"] == CHAIN_EDIT and chain["answer"] == "C major"
    assert chain["provenance"][-1]["stage"] == "review"
    assert manifest["tables"]["mf_think"]["rows"] == len(think) == len(think_before) - 1
    assert sum(manifest["tables"]["mf_think"]["by_skill"].values()) == len(think)

    # Every format built from the rows follows: the AF3 JSON of this export.
    store = OutputStore(c.out)
    written = af3.write(store, corpus.current_root(store), None, think_instruction="Think step by step.")
    entries = {e["id"]: e for e in json.loads(Path(written["mf_skills"]["path"]).read_text())}
    assert f"{sid}:qa:0" not in entries and entries[f"{sid}:caption"]["conversations"][1]["value"] == CAPTION_EDIT


def test_card_counts_people_and_measures_the_filter(reviewed):
    c, *_ , manifest = reviewed
    items = manifest["reviews"]["items"]["mf_skills"]
    assert items["caption"] == {"reviewed": 1, "keep": 0, "drop": 0, "edit": 1, "restored": 0, "stale": 0}
    assert items["temporal"] == {"reviewed": 2, "keep": 0, "drop": 1, "edit": 1, "restored": 0, "stale": 0}
    assert items["attribute"] == {"reviewed": 2, "keep": 2, "drop": 0, "edit": 0, "restored": 1, "stale": 0}
    assert items["harmony_theory"] == {"reviewed": 1, "keep": 1, "drop": 0, "edit": 0, "restored": 1, "stale": 1}
    chains = manifest["reviews"]["items"]["mf_think"]
    assert sum(s["drop"] for s in chains.values()) == 1 and sum(s["edit"] for s in chains.values()) == 1
    card = (c.out / "export" / "README.md").read_text()
    assert "## Human review" in card and "11 decisions by 2 reviewer(s): alice, bob" in card
    assert re.search(r"^\| mf_skills \| attribute \| 2 \| 2 \| 0 \| 0 \| 1 \| 0 \|$", card, re.M)
    assert re.search(r"^\| mf_skills \| harmony_theory \| 1 \| 1 \| 0 \| 0 \| 1 \| 1 \|$", card, re.M)
    # The known set: people reject (drop or edit) the caption, qa:0 and qa:1 and accept qa:2, qa:3, qa:5.
    # The filter dropped qa:2 and qa:5 (accepted by people) and kept the three people rejected;
    # synthesize flagged the caption and qa:1 (rejected by people): MIR precision 100 %, recall 2 of 3.
    assert re.search(r"^\| quality filter \(keep = false\) \| all \| 6 \| 0 \| 2 \| 3 \| 1 \| 0% \| 0% \|$", card, re.M)
    assert re.search(r"^\| MIR rules \(a contradiction flag\) \| all \| 6 \| 2 \| 0 \| 1 \| 3 \| 100% \| 67% \|$",
                     card, re.M)
    assert re.search(r"^\| MIR rules \(a contradiction flag\) \| caption \| 1 \| 1 \| 0 \| 0 \| 0 \| 100% \| 100% \|$",
                     card, re.M)
    # alice and bob both judged qa:0 (both reject) and qa:3 (bob rejects, alice accepts): p_o 0.5 = p_e: kappa 0.
    assert re.search(r"^\| alice \| bob \| 2 \| 1 \| 0\.00 \|$", card, re.M)


def test_report_shows_the_agreement_table(reviewed):
    c, *_ = reviewed
    page = Path(write_report(str(c.out))).read_text()
    table = re.search(r'<div data-table="agreement">(.*?)</div>', page, re.S).group(1)
    cells = re.findall(r"<tr>(.*?)</tr>", table)
    row = next(r for r in cells if "MIR rules" in r and "<td>all</td>" in r)
    assert re.findall(r'<td class="num">([^<]*)</td>', row) == ["6", "2", "0", "1", "3", "100%", "67%"]
    assert 'data-table="kappa"' in page


def test_a_regenerated_text_makes_its_decision_stale(reviewed, tmp_path):
    c, f, *_ = reviewed
    out = copy_review_corpus(c, tmp_path / "out").out
    # synthesize runs again for the flagged song and writes another answer for qa[5] (the rest is the same).
    path = sorted((out / "synthesize").glob("part-*.parquet"))[0]
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if row["song_id"] == c.flagged:
            row["qa"][5]["answer"] = "A regenerated answer."
            row["provenance"]["created_at"] = dt.datetime.now(dt.UTC)
    pq.write_table(to_table([SynthesizeRecord(**r) for r in rows], SynthesizeRecord), path)
    manifest = _export(out, "review-2")
    skills = _rows(out, "mf_skills")
    # The filter's verdicts are now older than the song's text: its items are out unless a person's fresh
    # decision brings them back. qa:2's text is unchanged (alice's keep still applies); qa:5's changed.
    assert f"{c.flagged}:qa:2" in skills and f"{c.flagged}:qa:5" not in skills
    assert f"{c.flagged}:qa:0" not in skills and skills[f"{c.flagged}:caption"]["answer"] == CAPTION_EDIT
    assert manifest["reviews"]["items"]["mf_skills"]["harmony_theory"]["stale"] == 2
    # The song's page says so.
    with TestClient(create_app(str(out), "alice"), base_url="http://127.0.0.1") as client:
        page = client.get(f"/song/{c.flagged}").text
    card = re.search(rf'<article[^>]*data-key="{c.flagged}:qa:5".*?</article>', page, re.S).group(0)
    assert 'data-state="stale"' in card and "stale: alice chose keep on an older text" in card
