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


def test_an_outage_pauses_the_stage_gives_up_after_its_limit_and_the_rerun_completes(restartable_llm, tmp_path):
    """Two runs on the same real server, which is stopped under them and started again (one restart for
    both): the patient one (outage_max_wait_s 300) waits the outage out and rejects nothing; the impatient
    one (15 s) fails the stage with the cause, its songs pending, never rejected; while the server is down a
    new run fails at once with what to set; after the restart the impatient one's rerun completes."""
    patient, impatient = tmp_path / "patient", tmp_path / "impatient"
    for out in (patient, impatient):
        write_upstream(out)
    logs = {name: tmp_path / f"{name}.log" for name in ("patient", "impatient")}
    runs = {"patient": subprocess.Popen(_synthesize(patient, restartable_llm.base_url,
                                                    "--set", "run.outage_max_wait_s=300"),
                                        stdout=open(logs["patient"], "w"), stderr=subprocess.STDOUT),
            "impatient": subprocess.Popen(_synthesize(impatient, restartable_llm.base_url,
                                                      "--set", "run.outage_max_wait_s=15"),
                                          stdout=open(logs["impatient"], "w"), stderr=subprocess.STDOUT)}
    try:
        time.sleep(12)  # both stages have started on their songs
        restartable_llm.stop()
        assert runs["impatient"].wait(timeout=300) == 1, logs["impatient"].read_text()[-3000:]
        assert runs["patient"].poll() is None, "the patient run ended while the server was down"
        text = " ".join(logs["impatient"].read_text().split())
        assert "has been down for" in text and "stay pending" in text
        summary = _summary(impatient, "synthesize")
        assert summary["pending"] >= 1 and summary["error"]
        rejects = read_dir(impatient / "rejects" / "synthesize")
        assert rejects.empty or not rejects["error"].str.startswith("llm_").any()  # none for the outage
        # Down before the stage starts: the check says so at once, with what to set.
        again = subprocess.run(_synthesize(impatient, restartable_llm.base_url), capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 1 and "cannot reach the LLM server" in " ".join(again.stderr.split())
        restartable_llm.start()
        assert runs["patient"].wait(timeout=600) == 0, logs["patient"].read_text()[-4000:]
    finally:
        restartable_llm.ensure_running()
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
    assert len(read_dir(patient / "synthesize")) == 4
    rejects = read_dir(patient / "rejects" / "synthesize")
    assert rejects.empty or not rejects["error"].str.startswith("llm_").any()
    assert _summary(patient, "synthesize")["deferred"] >= 1  # songs came back deferred, not rejected
    rerun = subprocess.run(_synthesize(impatient, restartable_llm.base_url), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(read_dir(impatient / "synthesize")) == 4


def test_a_wrong_model_name_fails_fast_with_what_to_set(llm_server, tmp_path):
    out = tmp_path / "out"
    write_upstream(out)
    proc = subprocess.run(_synthesize(out, llm_server.base_url, "--set", "llm.model=openai/gpt-oss-120b"),
                          capture_output=True, text=True, timeout=300)
    text = " ".join(proc.stderr.split())
    assert proc.returncode == 1
    assert "does not serve 'openai/gpt-oss-120b'" in text and "--served-model-name" in text
    assert read_dir(out / "rejects" / "synthesize").empty and read_dir(out / "synthesize").empty
