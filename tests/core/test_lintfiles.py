"""`mfpipe check ITEMS.jsonl --facts FACTS` on an output folder and on one song's facts file: one JSON
line per item with its flags, items matched to their song by song_id or source, bad lines reported;
and the dataset card counting what synthesize's gate did."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mfpipe.pipeline.cli import app
from support.llm_data import EXAMPLES, TRUTH, write_upstream

WALTZ = next(s for s in TRUTH if s["file"] == "anna_waltz.flac")  # 90 BPM, 3/4, A minor, no vocals
HARBOR = next(s for s in TRUTH if s["file"] == "harbor_lights.mp3")  # 120 BPM, 4/4, C major, vocals


def check(tmp_path, items: list, facts: str, *extra: str) -> tuple[list[dict], str]:
    path = tmp_path / "items.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in items))
    out = tmp_path / "flags.jsonl"
    result = CliRunner().invoke(app, ["check", str(path), "--facts", facts, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()], result.output


def checks(row: dict) -> set[str]:
    return {f["check"] for f in row["flags"]}


def test_check_an_output_folder(tmp_path):
    out = tmp_path / "out"
    ids = write_upstream(out, injection=None)
    items = [
        {"id": "clean", "song_id": ids["anna_waltz.flac"], "caption": (
            "An instrumental classical waltz at 90 BPM in 3/4, in A minor: piano and cello trade a lilting tune "
            "over an i-iv-V7 loop (Am, Dm, E7), one chord to the bar.")},
        {"id": "wrong-facts", "song_id": ids["anna_waltz.flac"],
         "caption": "A brisk 120 BPM waltz in C major; a soft voice sings the verses."},
        {"id": "by-source", "source": str(EXAMPLES / "harbor_lights.mp3"),
         "question": "In this C-major pop song, what is the tempo?", "answer": "120 BPM",
         "options": ["120 BPM", "118 BPM", "60 BPM", "90 BPM"]},
        {"id": "by-file-name", "source": "some/other/place/harbor_lights.mp3",
         "question": "Which key is the song in?", "answer": "D major", "options": []},
        {"id": "tools", "source": "unknown.wav",
         "caption": "The beat tracker measured 100 BPM; released in 1987 by The Night Owls."},
        "{not json",
        {"id": "empty"},
    ]
    rows, output = check(tmp_path, items, str(out))
    by_id = {r["id"]: r for r in rows if "error" not in r}
    assert by_id["clean"]["flags"] == []
    assert checks(by_id["wrong-facts"]) == {"bpm", "key", "vocals"}
    assert checks(by_id["by-source"]) == {"leaky_question", "distractor"}
    assert checks(by_id["by-file-name"]) == {"key"}  # the facts of harbor_lights (C major)
    assert checks(by_id["tools"]) == {"tool_mention", "unsupported_identity"}  # no facts: no bpm check
    errors = [r for r in rows if "error" in r]
    assert [(r["line"], r["flags"]) for r in errors] == [(6, []), (7, [])]
    assert "not JSON" in errors[0]["error"] and "neither" in errors[1]["error"]
    assert all(set(f) == {"check", "message"} for r in rows for f in r["flags"])
    assert re.search(r"checked 5 item\(s\): 4 flagged .* 1 without facts; 2 unreadable", " ".join(output.split()))


def test_check_against_one_songs_facts_file(tmp_path):
    facts = {"bpm": 90.0, "meter": 3, "key": "A", "mode": "minor", "key_strength": 0.8, "has_vocals": False,
             "duration_s": 49.5, "title": "Waltz for Anna",
             "chords": [{"start": 2.0 * i, "end": 2.0 * i + 2.0, "label": ["Am", "Dm", "E7"][i % 3]}
                        for i in range(24)]}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    rows, _ = check(tmp_path, [
        {"id": 1, "caption": 'In "Waltz for Anna" the cello enters at 0:16 over the Dm chord.'},
        {"id": 2, "caption": "The cello enters at 0:08 over the E7 chord. A kazoo takes the tune at 1:20."},
    ], str(path))
    assert rows[0] == {"id": 1, "flags": []}  # the title is a fact; 0:16 is a chord change, Dm sounds then
    assert checks(rows[1]) == {"chord", "ungrounded_time"}  # Am and Dm sound at 0:08; 1:20 is past the end


def test_check_says_what_is_wrong_with_its_inputs(tmp_path):
    result = CliRunner().invoke(app, ["check", str(tmp_path / "none.jsonl"), "--facts", str(tmp_path / "no.json")])
    assert result.exit_code == 2 and "facts not found" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["check", str(tmp_path / "none.jsonl"), "--facts", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no mir or lyrics rows" in result.output


@pytest.mark.slow
def test_the_card_counts_what_the_gate_repaired_and_dropped(exported):
    out, _ = exported
    events = [e for part in (out / "synthesize").glob("*.parquet")
              for row in pq.read_table(part, columns=["gated"]).column("gated").to_pylist() for e in row]
    assert events, "the corpus has gated items"
    card = (out / "export" / "README.md").read_text()
    for check, outcome_counts in (("tool_mention", (len(events) // 2, 0)), ("leaky_question", (0, len(events) // 2))):
        assert re.search(rf"^\| {check} \| {outcome_counts[0]} \| {outcome_counts[1]} \|$", card, re.M), check
