"""Settings of the MIR tools (madmom, essentia, Chordino), beside the tools they tune.

The mir stage's config section is `MirSettings` plus its resources
(`stages/mir.py`); `MirAnalyzer` takes `MirSettings` alone, so benchmarks and
tests run the tools without the pipeline.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import Section
from .form import FormConfig


class MirBeatsConfig(Section):
    """madmom: one RNNDownBeatProcessor pass, then DBNDownBeatTrackingProcessor."""

    enabled: bool = Field(True, description="Run the beat and downbeat tracker.")
    min_duration_s: float = Field(6.0, ge=0, description="Shorter songs get no beats, tempo or meter (a note "
                                                         "says why).")
    beats_per_bar: list[int] = Field(default_factory=lambda: [3, 4], min_length=1,
                                     description="Bar lengths the downbeat tracker chooses between.")
    min_bpm: float = Field(55.0, gt=0, description="Slowest tempo the tracker considers.")
    max_bpm: float = Field(215.0, gt=0, description="Fastest tempo the tracker considers.")
    num_tempi: int = Field(60, ge=1, description="Tempo states of the DBN (its cost grows with them).")
    transition_lambda: float = Field(100.0, gt=0, description="DBN tempo-change penalty (higher: steadier tempo).")
    observation_lambda: float = Field(16.0, gt=0, description="DBN split of a beat period into beat / no-beat "
                                                              "states.")
    threshold: float = Field(0.05, ge=0, description="Decode only where the RNN's activation exceeds this.")
    min_beats: int = Field(4, ge=2, description="Fewer beats than this: no tempo, no meter.")
    chunk_s: float = Field(30.0, ge=0, description="The RNN's input features are computed this many seconds at a "
                           "time (0: the whole song at once): bounded worker memory for any song length.")
    dbn_segment_s: float = Field(60.0, ge=0, description="The DBN decodes longer songs in segments (its memory "
                                 "grows with frames x tempo states); 0: always the whole song.")
    dbn_overlap_s: float = Field(10.0, ge=0, description="Context per side of each DBN segment.")


class MirKeyConfig(Section):
    """essentia KeyExtractor."""

    enabled: bool = Field(True, description="Run the key estimator.")
    min_duration_s: float = Field(3.0, ge=0, description="Shorter songs get no key.")
    profile_type: str = Field("bgate", description="essentia key profile (bgate, temperley, edma, krumhansl, ...).")


class MirChordsConfig(Section):
    """Chordino (NNLS-Chroma Vamp plugin); defaults are the plugin's own."""

    enabled: bool = Field(True, description="Run the chord estimator.")
    min_duration_s: float = Field(3.0, ge=0, description="Shorter songs get no chords.")
    use_nnls: bool = Field(True, description="Approximate note transcription (NNLS) before the chroma.")
    rollon: float = Field(0.0, ge=0, le=5, description="Spectral roll-on: % of the spectrum ignored at the bottom.")
    tuning_mode: Literal["global", "local"] = Field("global", description="Tuning estimated once or per frame.")
    whitening: float = Field(1.0, ge=0, le=1, description="Spectral whitening.")
    spectral_shape: float = Field(0.7, ge=0.5, le=0.9, description="Spectral shape of the note templates.")
    boost_n: float = Field(0.1, ge=0, le=1, description="Boost of the likelihood of N (no chord).")


class MirLoudnessConfig(Section):
    """essentia LoudnessEBUR128 (integrated loudness, LUFS)."""

    enabled: bool = Field(True, description="Measure integrated loudness.")
    min_duration_s: float = Field(1.0, ge=0.4, description="Shorter songs get no loudness (EBU R128 gates "
                                                           "400 ms blocks).")


class MirSettings(Section):
    """The MIR tools, each with its own settings (one decode per song feeds them all)."""

    beats: MirBeatsConfig = Field(default_factory=MirBeatsConfig, description="madmom beats, downbeats, meter.")
    key: MirKeyConfig = Field(default_factory=MirKeyConfig, description="essentia key and mode.")
    chords: MirChordsConfig = Field(default_factory=MirChordsConfig, description="Chordino chords.")
    loudness: MirLoudnessConfig = Field(default_factory=MirLoudnessConfig, description="EBU R128 loudness.")
    form: FormConfig = Field(default_factory=FormConfig, description="Song form: sections on the downbeat grid, "
                             "repetition labels, named guesses (mfpipe.mir.form).")
