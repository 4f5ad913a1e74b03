"""`mfpipe run --stage synthesize` end to end in the cpu profile: the real runner on real Ray,
with the vLLM server the run starts itself (and stops at the end), over the example songs
with upstream caption/mir/lyrics outputs supplied by the fixture (one song's lyrics carry a
prompt-injection line)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import duckdb
import psutil
import pyarrow.parquet as pq
import pytest

from mfpipe.prompts import load_prompt
from mfpipe.schemas.synthesize import SKILLS, SynthesizeRecord
from support.helpers import run_mfpipe
from support.llm_data import EXAMPLES, INJECTED_FILE, INJECTION_MARK, TRUTH, RunningWatcher, write_upstream

pytestmark = pytest.mark.slow

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def servers_on(port: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "--port" in cmd and str(port) in cmd and any("vllm" in part for part in cmd):
            found.append(proc)
    return found


def mfpipe_run(out: Path, port: int) -> subprocess.CompletedProcess:
    return run_mfpipe("run", "--stage", "synthesize", "--input", str(EXAMPLES), "--output", str(out),
                      "--set", "profile=cpu", "--set", f"llm.server.port={port}",
                      # The 135M model sometimes writes captions shorter than the floor (a retryable
                      # caption_too_short reject, tested on its own): off here, so every song has its row.
                      "--set", "synthesize.caption_min_ratio=0",
                      "--set", f"llm.server.log_file={out / 'vllm.log'}", timeout=900, check=False)


@pytest.fixture(scope="module")
def run_once(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    ids = write_upstream(out)
    port = free_port()
    with RunningWatcher(f"http://127.0.0.1:{port}", every_s=0.2) as watcher:
        proc = mfpipe_run(out, port)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    return out, ids, port, proc, watcher


def records(out: Path) -> list[SynthesizeRecord]:
    table = pq.read_table(out / "synthesize")
    return [SynthesizeRecord.model_validate(row) for row in table.to_pylist()]


def test_every_example_song_gets_a_schema_valid_row(run_once):
    out, ids, _, proc, _ = run_once
    rows = records(out)
    assert sorted(r.song_id for r in rows) == sorted(ids.values())
    assert not list((out / "rejects" / "synthesize").glob("*.parquet")) or \
        pq.read_table(out / "rejects" / "synthesize").num_rows == 0
    prompt = load_prompt("synthesize")
    for r in rows:
        assert r.caption.strip() and r.caption_words == len(r.caption.split())
        assert r.inputs == ["caption", "mir", "lyrics"]
        assert r.provenance.prompt.id == "synthesize" and r.provenance.prompt.sha256 == prompt.sha256
        assert [m.name for m in r.provenance.models] == ["smollm2-135m-instruct"]
        settings = json.loads(r.provenance.settings)
        assert settings["endpoint"].startswith("http://127.0.0.1:") and settings["temperature"] == 0.3
        song = next(s for s in TRUTH if ids[s["file"]] == r.song_id)
        # bpm/key/meter are the MIR facts (grounded), whatever the small model wrote
        assert r.metadata.bpm == float(song["bpm"])
        assert r.metadata.key == f"{song['key']} {song['mode']}"
    # the outputs open in DuckDB like any Parquet dataset
    count = duckdb.sql(f"select count(*) from read_parquet('{out}/synthesize/*.parquet')").fetchall()[0][0]
    assert count == len(TRUTH)


def test_all_five_skills_with_the_configured_counts(run_once):
    """One open and one multiple-choice item per skill (the cpu profile's counts), less what the notes
    account for: items the gate's checks dropped (each a `gated` event), items with repeated options,
    a QA part whose answer failed for good (its skill left out)."""
    for r in records(run_once[0]):
        for skill in SKILLS:
            items = [q for q in r.qa if q.skill == skill]
            notes = [n.split(":", 1)[1] for n in r.provenance.notes if n.startswith(f"qa/{skill}:")]
            if any(n.startswith(" left out") for n in notes):
                assert items == []
                continue
            lost = sum(int(re.search(r"\d+", n).group()) for n in notes if "dropped" in n)
            assert len(items) == 2 - lost, (r.source, skill, notes)
            assert len([q for q in items if not q.options]) <= 1 and len([q for q in items if q.options]) <= 1
            for q in items:
                assert not q.options or (len(q.options) == 4 and q.answer in q.options)
            gated = {e.field for e in r.gated if e.field.startswith(f"qa/{skill} ") and e.outcome == "dropped"}
            by_gate = sum(int(re.search(r"\d+", n).group()) for n in notes if "dropped by the checks" in n)
            assert len(gated) == by_gate


def test_prompt_injection_changes_nothing_and_stays_in_its_song(run_once):
    out, ids, *_ = run_once
    rows = records(out)
    injected = ids[INJECTED_FILE]
    columns = pq.read_schema(next((out / "synthesize").glob("*.parquet"))).names
    assert columns == list(SynthesizeRecord.model_fields)
    for r in rows:
        if r.song_id == injected:
            continue
        text = json.dumps(r.model_dump(mode="json"))
        assert INJECTION_MARK not in text and "pwned" not in text.lower()


def test_the_server_was_used_concurrently_and_stopped_at_the_end(run_once):
    _, _, port, proc, watcher = run_once
    assert "starting the vLLM server" in proc.stderr
    assert watcher.samples > 0, "never saw the server's metrics"
    assert watcher.peak >= 2, f"the server never ran two requests at once (peak {watcher.peak})"
    assert servers_on(port) == []
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more


def test_a_rerun_has_nothing_to_do_and_starts_no_server(run_once):
    out, _, port, *_ = run_once
    proc = mfpipe_run(out, port)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting the vLLM server" not in proc.stderr
    assert len(records(out)) == len(TRUTH)
