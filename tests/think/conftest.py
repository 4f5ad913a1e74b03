"""Fixtures for the filter and MF-Think tests: the example songs with MIR rows from
examples/truth.json, hand-written synthesize rows whose statements are right or wrong against
those facts, the tiny audio-LM (`mfpipe models prepare`'s build) and the session's real vLLM
server (`llm_server`, tests/fixtures_vllm.py)."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.stage import RunInfo

EXAMPLES = Path(str(files("mfpipe.examples")))
TRUTH = {song["file"]: song for song in json.loads((EXAMPLES / "truth.json").read_text())}
HARBOR = "harbor_lights.mp3"  # 120 BPM, 4/4, C major, chords C G Am F, 57.5 s (two windows)


def mir_row(song: dict) -> dict:
    """The MIR columns as the runner nests them under row["mir"]."""
    return {"bpm": float(song["bpm"]), "meter": song["meter"], "key": song["key"], "mode": song["mode"],
            "key_strength": 0.8, "chords": song["chord_timeline"], "loudness_lufs": -14.0}


def synth_row(song: dict) -> dict:
    """A synthesize row (nested) whose statements are checkable against the song's MIR facts:
    qa[0] right, qa[1] contradicts the tempo, qa[2] multiple choice, qa[3] a harmony item."""
    bpm, key = song["bpm"], f"{song['key']} {song['mode']}"
    chords = song["chords"]
    return {
        "caption": f"A {song['genre']} piece at {bpm} BPM in {key}, built on the chords "
                   f"{', '.join(chords[:-1])} and {chords[-1]}.",
        "qa": [
            {"skill": "attribute", "question": "What is the tempo?", "answer": f"About {bpm} BPM.", "options": []},
            {"skill": "attribute", "question": "How fast is it?", "answer": f"The tempo is {bpm + 40} BPM.",
             "options": []},
            {"skill": "harmony_theory", "question": "Which key is the song in?", "answer": key,
             "options": [f"{song['key']} {'minor' if song['mode'] == 'major' else 'major'}", key, "F# major",
                         "Bb minor"]},
            {"skill": "comparative_structural", "question": "How does the second half relate to the first?",
             "answer": "It repeats the same progression.", "options": []},
        ],
        "flags": [],
    }


@pytest.fixture(scope="session")
def tiny_audio_lm() -> str:
    """The cpu profile's tiny random-weight Music Flamingo (built once; a no-op when it exists)."""
    from mfpipe.localmodels.music_flamingo import prepare_tiny_music_flamingo
    from mfpipe.localmodels import models_dir

    return str(prepare_tiny_music_flamingo(models_dir()))


def config(*overrides: str):
    return load_config(None, ["profile=cpu", *overrides])


@pytest.fixture(scope="session")
def ingest_rows() -> dict[str, dict]:
    """Ingest's rows for the example songs (the real ingest stage measures them)."""
    from mfpipe.stages.ingest import IngestStage

    stage = IngestStage.from_config(config(), RunInfo("test-think", "ingest"))
    stage.setup()
    rows = {}
    for name in TRUTH:
        (record,) = stage.process_batch([{"source": str(EXAMPLES / name)}])
        rows[name] = record.model_dump(exclude={"provenance"})
    return rows


@pytest.fixture(scope="session")
def song_rows(ingest_rows) -> dict[str, dict]:
    """The rows filter sees: ingest columns + nested synthesize and mir."""
    return {name: {**row, "synthesize": synth_row(TRUTH[name]), "mir": mir_row(TRUTH[name])}
            for name, row in ingest_rows.items()}


@pytest.fixture(scope="session")
def filter_stage(tiny_audio_lm):
    from mfpipe.stages.filter import FilterStage

    stage = FilterStage.from_config(config(), RunInfo("test-think", "filter"))
    stage.setup()
    return stage


@pytest.fixture(scope="session")
def think_stage(tiny_audio_lm, llm_server):
    from mfpipe.stages.think import ThinkStage

    stage = ThinkStage.from_config(config(f"llm.base_url={llm_server.base_url}"),
                       RunInfo("test-think", "think"))
    stage.setup()
    yield stage
    stage.teardown()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny model gains nothing from threads; on a shared 2-core box they only spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
