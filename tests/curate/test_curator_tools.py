"""The curator's commands on a real output folder: AF3 JSON, inspect, report (checked in Chromium)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mfpipe.curate import af3
from mfpipe.prompts import load_prompt
from mfpipe.rewards import accuracy_reward, format_reward
from support.fixtures_curate import copy_out
from support.helpers import run_mfpipe

# The session fixture runs the real CLI (ingest + MIR on the example songs, then export).
pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _rows(out: Path, table: str) -> dict[str, dict]:
    files = sorted((out / "export" / table).glob("part-*.parquet"))
    return {r["id"]: r for r in pq.read_table(files).to_pylist()}


# ------------------------------------------------------------------ AF3 JSON


def test_af3_json_round_trips(exported, tmp_path):
    out = copy_out(exported[0], tmp_path / "out")
    proc = run_mfpipe("export", str(out), "--format", "af3-json", "--sound-prefix", "audio/=/train/audio/")
    assert "mf_skills:" in proc.stdout and "mf_think:" in proc.stdout
    think_instruction = load_prompt("export_think").text
    for table in ("mf_skills", "mf_think"):
        path = out / "export" / "af3" / f"{table}.json"
        raw = json.loads(path.read_text())
        rows = _rows(out, table)
        assert len(raw) == len(rows) > 0
        for item in raw:
            assert set(item) == {"id", "sound", "duration", "conversations"}
            turns = item["conversations"]
            assert [t["from"] for t in turns] == ["human", "gpt"]
            assert turns[0]["value"].startswith("<sound>\n")
            assert sum(t["value"].count("<sound>") for t in turns) == 1
            assert item["sound"].startswith("/train/audio/")
        for back in af3.read(path, think_instruction=think_instruction):
            row = rows[back["id"]]
            assert back["duration"] == row["song"]["duration_s"]
            assert back["question"] == row["question"].strip()
            assert back["options"] == row["options"]
            if table == "mf_skills":
                assert back["answer"] == row["answer"]
                assert accuracy_reward(back["answer"], row["answer"], row["options"]) == 1.0
            else:
                assert back["answer"] == row["text"] and format_reward(back["answer"]) == 1.0
                assert accuracy_reward(back["answer"], row["reference_answer"], row["options"]) == 1.0


def test_af3_question_layout():
    text = af3.question_text("Which instrument leads?", ["piano", "violin"])
    assert text == ("Which instrument leads?\nChoose the correct option from the following options:\n"
                    "(A) piano\n(B) violin")
    assert af3.split_question(text) == ("Which instrument leads?", ["piano", "violin"])
    assert af3.split_question("Open question?") == ("Open question?", [])


# ------------------------------------------------------------------ inspect


def _inspect(out: Path, *args: str) -> str:
    return run_mfpipe("inspect", str(out), *args, env={"COLUMNS": "220"}).stdout


def test_inspect_summary_and_filters(exported):
    out, made = exported
    text = _inspect(out)
    for word in ("stages", "ingest", "mir", "synthesize", "filter", "think", "mf_skills", "mf_think", "total"):
        assert word in text
    rows = _rows(out, "mf_skills")

    temporal = _inspect(out, "--skill", "temporal", "--samples", "50")
    shown = [r for r in rows.values() if r["id"][:12] in temporal]
    assert "temporal" in temporal and "attribute " not in temporal.split("mf_skills:")[1].split("mf_think")[0]
    assert "harmony_theory" not in temporal

    song = made["synthesize"][1].song_id
    one = _inspect(out, "--song", song[:10], "--samples", "50")
    others = {s.song_id[:12] for s in made["synthesize"]} - {song[:12]}
    assert song[:12] in one and not any(o in one.split("mf_skills:")[1] for o in others)
    assert shown

    by_name = _inspect(out, "--song", "anna_waltz", "--rejected")
    assert "rejects:" in by_name and "items the filter dropped" in by_name

    rejected = _inspect(out, "--rejected")
    assert "not_a_song.wav" in rejected  # ingest's real reject
    assert "too_many_wrong_steps" in rejected
    verdicts = sum(not j.keep for f in made["filter"] for j in [f.caption, *f.qa])
    assert f"items the filter dropped: {verdicts}" in rejected
    assert "not true of the audio" in rejected

    nothing = _inspect(out, "--skill", "no_such_skill")
    assert "no rows match" in nothing


# ------------------------------------------------------------------ report, as a person sees it


@pytest.mark.slow
def test_report_renders_in_chromium(exported, tmp_path):
    from playwright.sync_api import sync_playwright

    out = copy_out(exported[0], tmp_path / "out")
    proc = run_mfpipe("report", str(out))
    page_path = out / "report.html"
    assert proc.stdout.strip().endswith("report.html") and page_path.stat().st_size > 20_000
    html = page_path.read_text()
    # Nothing to fetch: no src/href/url() pointing anywhere (XML namespace names are not fetched).
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", html)
    assert Path(CHROMIUM).exists(), "Debian chromium is missing (scripts/install.sh installs it)"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            messages, requests = [], []
            page.on("console", lambda m: messages.append((m.type, m.text)))
            page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            figures = page.locator("figure.plot")
            plots = {figures.nth(i).get_attribute("data-plot"): figures.nth(i) for i in range(figures.count())}
            drawn = {k for k, f in plots.items() if f.locator("svg").count() == 1}
            # Bars and histogram patches are SVG paths; a drawn plot has many.
            marks = {k: plots[k].locator("svg path").count() for k in drawn}
            sizes = {k: plots[k].locator("svg").bounding_box() for k in drawn}
            title = page.title()
            body = page.inner_text("body")
        finally:
            browser.close()
    assert not [m for m in messages if m[0] in ("error", "pageerror", "warning")], messages
    assert requests == [page_path.as_uri()]  # nothing else was fetched
    assert set(plots) == {"bpm", "keys", "meter", "sections", "section_length", "genres", "instruments", "skills",
                          "caption_words",
                          "pass_rates", "think", "rejects"}
    assert drawn == set(plots)  # every plot has data in this output
    assert all(n >= 5 for n in marks.values()), marks
    assert all(box and box["width"] > 300 and box["height"] > 150 for box in sizes.values()), sizes
    assert "Corpus report" in title and "random-weight stand-in models" in body
    from PIL import Image

    with Image.open(shot) as image:
        assert image.width == 1280 and image.height > 2000
        colours = image.convert("RGB").resize((64, 256)).getcolors(64 * 256)
        assert colours and len(colours) > 20  # not a blank page
