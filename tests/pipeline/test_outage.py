"""An outage of the LLM server is not the songs' fault: the stage pauses while the server is down,
resumes when it is back, and fails with the cause (songs pending, never rejected) when it is not.
The server is the session's real vLLM server, stopped and started again."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from support.helpers import MFPIPE, read_dir
from support.llm_data import write_upstream

pytestmark = pytest.mark.slow


def _synthesize(out, url: str, *extra: str) -> list[str]:
    return [*MFPIPE, "run", "--stage", "synthesize", "--output", str(out), "--profile", "cpu",
            "--set", f"llm.base_url={url}", "--set", "synthesize.resources.batch_size=1",
            "--set", "synthesize.caption_min_ratio=0",  # every song gets its row (not a short-caption reject)
            *extra]


def _summary(out, stage: str) -> dict:
    runs = sorted((out / "_runs").glob("*/summary.json"))
    data = json.loads(runs[-1].read_text())
    return next(s for s in data["summary"] if s["stage"] == stage)


def test_the_stage_waits_out_a_server_restart_and_rejects_nothing(restartable_llm, tmp_path):
    out = tmp_path / "out"
    write_upstream(out)
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(_synthesize(out, restartable_llm.base_url, "--set", "run.outage_max_wait_s=300"),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(12)  # the stage has started on its songs
        restartable_llm.stop()
        time.sleep(8)
        assert proc.poll() is None, "the run ended while the server was down"
        restartable_llm.start()
        assert proc.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-4000:]
    finally:
        restartable_llm.ensure_running()
    assert len(read_dir(out / "synthesize")) == 4
    rejects = read_dir(out / "rejects" / "synthesize")
    assert rejects.empty or not rejects["error"].str.startswith("llm_").any()
    assert _summary(out, "synthesize")["deferred"] >= 1  # songs came back deferred, not rejected


def test_a_server_that_stays_down_fails_the_stage_and_the_rerun_completes(restartable_llm, tmp_path):
    out = tmp_path / "out"
    write_upstream(out)
    log = tmp_path / "run.log"
    proc = subprocess.Popen(_synthesize(out, restartable_llm.base_url, "--set", "run.outage_max_wait_s=15"),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        time.sleep(12)
        restartable_llm.stop()
        assert proc.wait(timeout=300) == 1
        text = " ".join(log.read_text().split())
        assert "has been down for" in text and "stay pending" in text
        summary = _summary(out, "synthesize")
        assert summary["pending"] >= 1 and summary["error"]
        rejects = read_dir(out / "rejects" / "synthesize")
        assert rejects.empty or not rejects["error"].str.startswith("llm_").any()  # none for the outage
        # Down before the stage starts: the check says so at once, with what to set.
        again = subprocess.run(_synthesize(out, restartable_llm.base_url), capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 1 and "cannot reach the LLM server" in " ".join(again.stderr.split())
    finally:
        restartable_llm.start()
    proc = subprocess.run(_synthesize(out, restartable_llm.base_url), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_dir(out / "synthesize")) == 4


def test_a_wrong_model_name_fails_fast_with_what_to_set(llm_server, tmp_path):
    out = tmp_path / "out"
    write_upstream(out)
    proc = subprocess.run(_synthesize(out, llm_server.base_url, "--set", "llm.model=openai/gpt-oss-120b"),
                          capture_output=True, text=True, timeout=300)
    text = " ".join(proc.stderr.split())
    assert proc.returncode == 1
    assert "does not serve 'openai/gpt-oss-120b'" in text and "--served-model-name" in text
    assert read_dir(out / "rejects" / "synthesize").empty and read_dir(out / "synthesize").empty
