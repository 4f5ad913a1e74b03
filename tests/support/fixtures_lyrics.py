"""Fixtures for the lyrics tests: models loaded once, spoken-line mixes rendered once."""

from __future__ import annotations

import pytest

from support import render_voice as testaudio

LOUDNESS_DB = (3.0, 0.0, -6.0)  # voice RMS relative to the music's


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def vad():
    from mfpipe.lyrics.vad import VoiceActivity

    _single_thread()
    return VoiceActivity()


@pytest.fixture(scope="session")
def espeak():
    if not testaudio.espeak_available():
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")


@pytest.fixture(scope="session")
def mixes(espeak):
    """voice_db -> the three English test lines over the first test song."""
    return {db: testaudio.render_voice_mix(voice_db=db) for db in LOUDNESS_DB}


@pytest.fixture(scope="session")
def debian_music(tmp_path_factory):
    """Real instrumental recordings (Debian asc-music); skipped when apt cannot fetch them."""
    files = testaudio.fetch_debian_music()
    if not files:
        pytest.skip("Debian package asc-music could not be fetched here")
    return files
