"""Fixtures for the MIR tests: one analyser per session, songs with known truth rendered once."""

from __future__ import annotations

import pytest
import soundfile as sf

from mfpipe.audio import load_mono
from mfpipe.mir import SAMPLE_RATE, MirAnalyzer
from mfpipe.mir.config import MirSettings
from support.render_mir import TEST_SONGS, render


@pytest.fixture(scope="session")
def analyzer() -> MirAnalyzer:
    return MirAnalyzer(MirSettings())


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """The test songs as FLAC files, so the tests go through the same decode as the stage."""
    folder = tmp_path_factory.mktemp("mir_songs")
    for spec in TEST_SONGS:
        sf.write(folder / f"{spec.name}.flac", render(spec), SAMPLE_RATE, subtype="PCM_16")
    return folder


@pytest.fixture(scope="session")
def synth_results(analyzer, synth_dir):
    """name → (spec, facts) for every test song, analysed once."""
    results = {}
    for spec in TEST_SONGS:
        mono = load_mono(str(synth_dir / f"{spec.name}.flac"), SAMPLE_RATE)
        results[spec.name] = (spec, analyzer.analyse(mono))
    return results
