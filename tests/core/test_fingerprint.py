"""Chromaprint fingerprints: the raw array `fpcalc -raw` prints, over the analysed span, and a clear
error when the library is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mfpipe.fingerprint import ITEM_S, FingerprintUnavailable, fingerprint_source
from mfpipe.pipeline.config import load_config
from mfpipe.schemas import RunInfo


def _fpcalc(path) -> np.ndarray:
    # fpcalc 1.5.1 with FFmpeg 5 exits non-zero at the end of some files after printing the fingerprint.
    out = subprocess.run(["fpcalc", "-raw", "-json", "-length", "1200", str(path)], capture_output=True, text=True)
    return np.array(json.loads(out.stdout)["fingerprint"], dtype=np.uint32)


@pytest.mark.parametrize("which", ["original", "mp3 128k"])
def test_fingerprint_is_what_fpcalc_raw_prints(screening_songs, which):
    path = screening_songs.original if which == "original" else screening_songs.copies[which]
    (ours,), scan = fingerprint_source(str(path))
    assert len(ours) > 200
    np.testing.assert_array_equal(ours, _fpcalc(path))


def test_only_the_analysed_span_is_fingerprinted(screening_songs):
    (full,), _ = fingerprint_source(str(screening_songs.original))
    (head,), scan = fingerprint_source(str(screening_songs.original), max_seconds=10.0)
    assert scan.duration_s > 30  # the scan still measures the whole file
    assert abs((len(full) - len(head)) * ITEM_S - (scan.duration_s - 10.0)) < 0.5  # the rest was left out
    assert np.mean(head == full[: len(head)]) > 0.9


def test_grid_phases_are_the_same_audio_shifted(screening_songs):
    """A clip fingerprinted at 4 phases of Chromaprint's frame step: each phase is the same music."""
    phases, _ = fingerprint_source(str(screening_songs.clips / "eval_clip.mp3"), phases=4)
    assert len(phases) == 4 and all(len(p) > 40 for p in phases)
    assert not np.array_equal(phases[0], phases[2])
    for p in phases[1:]:
        errors = np.bitwise_count(phases[0][: len(p)] ^ p[: len(phases[0])]).mean() / 32
        assert errors < 0.15


def test_missing_chromaprint_stops_ingest_with_what_to_install(monkeypatch):
    from mfpipe.stages.ingest import IngestStage

    monkeypatch.setitem(sys.modules, "chromaprint", None)  # what `import chromaprint` does without the library
    config = load_config(overrides=["profile=cpu"])
    stage = IngestStage.from_config(config, RunInfo(run_id="t", config_hash="t"))
    with pytest.raises(FingerprintUnavailable, match="apt-get install libchromaprint-tools"):
        stage.setup()
    off = IngestStage.from_config(load_config(overrides=["profile=cpu", "ingest.fingerprint=false"]),
                                  RunInfo(run_id="t", config_hash="t"))
    off.setup()  # without fingerprints the stage needs no Chromaprint
