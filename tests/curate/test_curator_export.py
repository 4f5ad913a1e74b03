"""The export stage: what goes in, what stays out, readers, schema stability, atomic reruns, the card."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from mfpipe.curate import export as corpus
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import arrow_schema
from mfpipe.schemas.export import SkillsRow, ThinkRow
from mfpipe.store import OutputStore
from support.corpus import Plan, expected_counts, write_llm_stages
from support.fixtures_curate import copy_out

# The session fixture runs the real CLI (ingest + MIR on the example songs, then export).
pytestmark = pytest.mark.slow


def _rows(out: Path, table: str) -> list[dict]:
    files = sorted((out / "export" / table).glob("part-*.parquet"))
    return pq.read_table(files).to_pylist()


def _manifest(out: Path) -> dict:
    return json.loads((out / "export" / "manifest.json").read_text())


def _build(out: Path, run_id: str, *sets: str):
    cfg = load_config(None, ["profile=cpu", *sets])
    return corpus.build(OutputStore(out), cfg.export, RunInfo(run_id=run_id, config_hash=cfg.content_hash()))


# ------------------------------------------------------------------ content


def test_export_holds_kept_items_only(exported):
    out, made = exported
    want = expected_counts(made)
    skills, think = _rows(out, "mf_skills"), _rows(out, "mf_think")
    assert len(skills) == want["mf_skills"] > 0
    assert len(think) == want["mf_think"] > 0
    by_skill: dict[str, int] = {}
    for row in skills:
        SkillsRow.model_validate(row)  # every row is a valid record
        by_skill[row["skill"]] = by_skill.get(row["skill"], 0) + 1
        assert row["quality"]["status"] == "passed"
    assert by_skill == want["by_skill"]
    for row in think:
        ThinkRow.model_validate(row)
        assert row["action"] in ("kept", "rewritten")
        assert row["text"].startswith("<think>") and row["text"].endswith("</answer>")
    # Dropped items are counted, not exported.
    dropped = {f"{f.song_id}:qa:{j.index}" for f in made["filter"] for j in f.qa if not j.keep}
    assert dropped and not dropped & {r["id"] for r in skills}
    synth_time = {s.song_id: s.provenance.created_at for s in made["synthesize"]}
    fresh = {f.song_id for f in made["filter"] if f.provenance.created_at >= synth_time[f.song_id]}
    manifest = _manifest(out)
    assert sum(c["dropped"] for c in manifest["items"].values()) == len(
        [d for d in dropped if d.split(":")[0] in fresh])
    # The unjudged song (no filter verdict) and the stale one (verdict older than its text) are left out.
    exported_songs = {r["song_id"] for r in skills}
    assert len(exported_songs) == len(made["songs"]) - 2
    assert manifest["songs"]["stale_filter"] == 1
    assert manifest["think_chains"]["dropped"] == sum(t.dropped for t in made["think"])


def test_rows_carry_mir_facts_and_provenance(exported):
    out, _ = exported
    mir = {r["song_id"]: r for r in pq.read_table(sorted((out / "mir").glob("part-*.parquet"))).to_pylist()}
    for row in _rows(out, "mf_skills"):
        facts = row["song"]["mir"]
        assert facts["bpm"] == mir[row["song_id"]]["bpm"] and facts["key"] == mir[row["song_id"]]["key"]
        assert facts["chords"] and all(c["label"] != "N" for c in facts["chords"])
        stages = [p["stage"] for p in row["provenance"]]
        assert stages[:3] == ["export", "synthesize", "filter"] and "mir" in stages and "ingest" in stages
        assert row["song"]["duration_s"] > 0 and Path(row["song"]["source"]).exists()
        assert row["song"]["metadata"]["genre"]


def test_datasets_and_duckdb_read_the_export(exported, tmp_path):
    import datasets

    out, _ = exported
    manifest = _manifest(out)
    skills = datasets.load_dataset("parquet", data_files=str(out / "export" / "mf_skills" / "*.parquet"),
                                   split="train", cache_dir=str(tmp_path / "hf"))
    assert skills.num_rows == manifest["tables"]["mf_skills"]["rows"]
    assert skills.features["quality"]["status"].dtype == "string"
    # The card's YAML header makes the folder a dataset with two configs.
    think = datasets.load_dataset(str(out / "export"), "mf_think", split="train", cache_dir=str(tmp_path / "hf"))
    assert think.num_rows == manifest["tables"]["mf_think"]["rows"]
    glob = str(out / "export" / "mf_skills" / "*.parquet")
    counts = dict(duckdb.sql(f"SELECT skill, count(*) FROM '{glob}' GROUP BY skill").fetchall())
    assert counts == manifest["tables"]["mf_skills"]["by_skill"]
    bpm = duckdb.sql(f"SELECT min(song.mir.bpm) FROM '{glob}'").fetchall()[0][0]
    assert 50 < bpm < 200


def test_card_counts_equal_rows(exported):
    out, made = exported
    card = (out / "export" / "README.md").read_text()
    n_skills, n_think = len(_rows(out, "mf_skills")), len(_rows(out, "mf_think"))
    assert re.search(rf"^\| mf_skills \| {n_skills} \|", card, re.M)
    assert re.search(rf"^\| mf_think \| {n_think} \|", card, re.M)
    glob = str(out / "export" / "mf_skills" / "*.parquet")
    for skill, n in duckdb.sql(f"SELECT skill, count(*) FROM '{glob}' GROUP BY skill").fetchall():
        row = re.search(rf"^\| {skill} \(.*?\) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", card, re.M)
        assert row and int(row.group(4)) == n, skill
    # Rejects of every stage, by reason: ingest's real one and think's dropped chains.
    assert re.search(r"^\| ingest \| \w+ \| 1 \|", card, re.M)
    assert re.search(rf"^\| think \| too_many_wrong_steps \| {len(made['think_rejects'])} \|", card, re.M)
    # Models, tool versions, licences, and the plain warning about random weights.
    assert "random-weight stand-in models" in card and "prepared:music-flamingo-tiny" in card
    assert re.search(r"^\| mir \| madmom \| \S+ \|", card, re.M)
    for licence in ("CC BY-NC-SA 4.0", "AGPL-3.0", "GPL-2.0-or-later", "MIT", "Apache-2.0"):
        assert licence in card
    assert "configs:" in card.split("---")[1]


# ------------------------------------------------------------------ reruns


def test_schema_stable_and_reruns_swap_atomically(exported, tmp_path):
    out = copy_out(exported[0], tmp_path / "out")
    first = corpus.current_version(OutputStore(out))
    schemas = {t: pq.read_schema(next((out / "export" / t).glob("*.parquet"))) for t in corpus.TABLES}
    for name, schema in schemas.items():
        assert schema.equals(arrow_schema(corpus.TABLES[name]), check_metadata=False)

    # A reader keeps listing and reading the export while it is rewritten: every read sees
    # exactly one version's shards, complete.
    seen, errors, stop = set(), [], threading.Event()
    want_rows = len(_rows(out, "mf_skills"))

    def reader():
        while not stop.is_set():
            try:
                files = sorted((out / "export" / "mf_skills").glob("part-*.parquet"))
                runs = {f.name.rsplit("-", 1)[0] for f in files}
                rows = pq.read_table(files).num_rows
                if len(runs) != 1 or rows != want_rows:
                    errors.append((runs, rows))
                seen.update(runs)
            except FileNotFoundError:
                pass  # the previous version's folder was pruned under a slow reader: not a mix
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(4):
            _build(out, f"20990101T00000{i}-rerun")
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert len(seen) >= 2  # it did see the swaps
    store = OutputStore(out)
    assert corpus.current_version(store) == "20990101T000003-rerun"
    assert os.readlink(out / "export") == "_exports/20990101T000003-rerun"
    # Current + previous are kept, older ones pruned; the schema did not move.
    assert sorted(p.name for p in (out / "_exports").iterdir() if p.is_dir()) == [
        "20990101T000002-rerun", "20990101T000003-rerun"]
    for name, schema in schemas.items():
        assert pq.read_schema(next((out / "export" / name).glob("*.parquet"))).equals(schema)
    assert first not in os.listdir(out / "_exports")


def test_killed_export_leaves_nothing_visible(exported, tmp_path):
    out = copy_out(exported[0], tmp_path / "out")
    before = sorted(p.name for p in (out / "export" / "mf_skills").iterdir())
    half = out / "_exports" / "20990101T000000-killed" / "mf_skills"
    half.mkdir(parents=True)
    (half / "part-20990101T000000-killed-00000.parquet").write_bytes(b"PAR1 half written")
    # Not current: readers of OUT/export still see the old complete version.
    assert sorted(p.name for p in (out / "export" / "mf_skills").iterdir()) == before
    _build(out, "20990101T000001-next")
    assert not (out / "_exports" / "20990101T000000-killed").exists()


# ------------------------------------------------------------------ missing parts


def test_unfiltered_export_when_filter_never_ran(mir_out, tmp_path):
    out = copy_out(mir_out, tmp_path / "out")
    made = write_llm_stages(out, Plan(with_filter=False, with_think=False))
    # One song without MIR facts.
    mir = pq.read_table(sorted((out / "mir").glob("part-*.parquet")))
    for f in (out / "mir").glob("part-*.parquet"):
        f.unlink()
    pq.write_table(mir.slice(1), out / "mir" / "part-fixture-00000.parquet")
    no_mir = mir["song_id"][0].as_py()

    result = _build(out, "20990101T000000-unfiltered")
    skills = _rows(out, "mf_skills")
    generated = sum(1 + len(s.qa) for s in made["synthesize"])
    assert result.rows["mf_skills"] == len(skills) == generated
    assert {r["quality"]["status"] for r in skills} == {"unfiltered"}
    assert all(r["song"]["mir"] is None for r in skills if r["song_id"] == no_mir)
    assert all(r["song"]["mir"] is not None for r in skills if r["song_id"] != no_mir)
    # Synthesize's consistency flags travel with unfiltered items.
    flagged = [r for r in skills if r["quality"]["flags"]]
    assert len(flagged) == sum(1 for s in made["synthesize"] for f in s.flags if f.field == "caption")
    # No think output: an empty shard that still has the schema.
    think_files = list((out / "export" / "mf_think").glob("part-*.parquet"))
    assert len(think_files) == 1 and pq.read_table(think_files[0]).num_rows == 0
    assert pq.read_schema(think_files[0]).equals(arrow_schema(ThinkRow), check_metadata=False)
    card = (out / "export" / "README.md").read_text()
    assert "**Unfiltered:**" in card and "`mf_think` is empty" in card

    with pytest.raises(corpus.ExportError, match="allow_unfiltered"):
        _build(out, "20990101T000001-refused", "export.allow_unfiltered=false")
    assert corpus.current_version(OutputStore(out)) == "20990101T000000-unfiltered"


def test_shards_are_bounded(exported, tmp_path):
    out = copy_out(exported[0], tmp_path / "out")
    result = _build(out, "20990101T000000-small", "export.shard_max_rows=5")
    files = sorted((out / "export" / "mf_skills").glob("part-*.parquet"))
    assert len(files) == -(-result.rows["mf_skills"] // 5)
    assert all(pq.ParquetFile(f).metadata.num_rows <= 5 for f in files)


def test_the_card_says_what_a_song_cost(exported):
    """The runs' own cost rows (ingest and mir ran for real here) become the card's per-song costs."""
    out, _ = exported
    card = (out / "export" / "README.md").read_text()
    section = card.split("## What a song cost", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert {"ingest", "mir"} <= set(rows)
    cpu_per_song = float(rows["mir"].split("|")[4])
    assert cpu_per_song > 0  # the MIR tools took CPU time
