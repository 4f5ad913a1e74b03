"""Settings of the MIR tools (madmom, essentia, Chordino), beside the tools they tune.

The mir stage's config section is `MirSettings` plus its resources
(`stages/mir.py`); `MirAnalyzer` takes `MirSettings` alone, so benchmarks and
tests run the tools without the pipeline.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import Section

# The names the song-form analysis guesses (mfpipe.mir.form).
NAMES = ("intro", "verse", "chorus", "bridge", "outro")


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


class FormConfig(Section):
    """Parameters of the song-form analysis (mfpipe.mir.form; defaults tuned on the form renders of the tests)."""

    enabled: bool = Field(True, description="Run the form analysis at all.")
    min_duration_s: float = Field(10.0, ge=0, description="Songs shorter than this get no sections (a note says why).")
    silence_dbfs: float = Field(-60.0, description="A song whose peak stays below this (dBFS) is silent: no sections.")
    # --- grid
    min_beats: int = Field(8, ge=2, description="Fewer beats than this: a fixed grid of fallback_bar_s instead.")
    fallback_beats_per_bar: int = Field(4, ge=1, description="Bar length (beats) when beats come without "
                                        "downbeats.")
    fallback_bar_s: float = Field(2.0, gt=0, description="Bar length (s) of the fixed grid used when there are no "
                                  "beats.")
    gap_fill_ratio: float = Field(1.5, gt=1.0, description="A gap between downbeats longer than this many median "
                                  "bars is filled with evenly spaced bars (and the song's ends extended at the "
                                  "median bar length).")
    max_units: int = Field(800, ge=16, description="At most this many analysis units: longer songs group consecutive "
                                                   "bars, so every matrix stays max_units x max_units.")
    # --- features
    feature_sample_rate: int = Field(11025, ge=4000, description="The audio is resampled to this rate for the "
                                     "features.")
    n_fft: int = Field(4096, ge=256, description="STFT size at feature_sample_rate.")
    hop_length: int = Field(1024, ge=64, description="STFT hop at feature_sample_rate.")
    feature_chunk_s: float = Field(60.0, ge=0, description="Spectra are computed this many seconds at a time "
                                                           "(memory bound for long songs); 0: the whole song at once.")
    n_mfcc: int = Field(13, ge=2, description="MFCCs (timbre) per frame, the 0th (energy) included.")
    n_mels: int = Field(64, ge=8, description="Mel bands the MFCCs are computed from.")
    slots_per_bar: int = Field(4, ge=1, description="Each bar is cut into this many equal slots; slot features are "
                                                    "stacked into the bar's vector.")
    timbre_weight: float = Field(3.0, ge=0, description="Weight of the (standardised) MFCC block against the chroma "
                                                        "block in a unit's vector.")
    chroma_embed_units: int = Field(2, ge=1, description="A unit's chroma is stacked with that of the next units "
                                                         "(delay embedding), this many in all.")
    # --- recurrence and Laplacian
    recurrence_k: int | None = Field(None, ge=1, description="Neighbours per unit in the recurrence matrix; None: "
                                                             "2*ceil(sqrt(units)) (librosa's default).")
    recurrence_width: int = Field(2, ge=1, description="Units closer than this in time are never neighbours.")
    lag_filter_units: int = Field(3, ge=1, description="Length of the median filter along the recurrence matrix's "
                                                       "diagonals (in units).")
    path_weight: float | None = Field(None, ge=0, le=1, description="Weight of the neighbour (path) graph against the "
                                                                    "recurrence graph; None: McFee & Ellis' degree "
                                                                    "balance.")
    eigen_smooth_units: int = Field(3, ge=1, description="Median filter over time of the Laplacian eigenvectors.")
    k_min: int = Field(2, ge=1, description="Fewest section types tried.")
    k_max: int = Field(8, ge=1, description="Most section types tried.")
    k_selection: Literal["eigengap", "fixed"] = Field("eigengap", description="How the number of clusters is chosen: "
                                                                              "largest eigengap in [k_min, k_max], or "
                                                                              "k_fixed.")
    k_fixed: int = Field(5, ge=1, description="Clusters when k_selection = fixed.")
    kmeans_restarts: int = Field(8, ge=1, description="k-means restarts (the best is kept); seeded, so deterministic.")
    # --- sections and labels
    novelty_half_units: int = Field(4, ge=1, description="Half-width (units) of the checkerboard kernel of the novelty "
                                                         "curve that boundaries are refined on.")
    refine_units: int = Field(2, ge=0, description="A boundary moves to the novelty peak within this many units "
                                                   "(0: no refinement).")
    prune_weak: bool = Field(True, description="Drop clustering boundaries whose two sides do not contrast by "
                                               "contrast_threshold (before the stripe boundaries are added).")
    stripes: bool = Field(True, description="Add the ends of repeated passages (diagonal stripes of the "
                                            "self-similarity) as boundaries.")
    stripe_similarity: float = Field(0.9, ge=0, le=1, description="Cosine at which a unit counts as repeating "
                                                                  "another (stripes).")
    stripe_min_bars: int = Field(6, ge=2, description="Shortest repeated passage (bars) whose ends count.")
    contrast_split: bool = Field(True, description="Split a segment where its two parts are unlike (the clustering "
                                                   "may lump a short intro with the verse).")
    contrast_threshold: float = Field(0.05, ge=0, le=2, description="A segment is split when its parts' mean inner "
                                                                    "similarity exceeds their cross similarity by "
                                                                    "this much (cosine units).")
    label_max_shift_units: int = Field(2, ge=0, description="Segments are compared at offsets up to this many units "
                                                            "(a boundary a bar early or late).")
    min_section_bars: int = Field(4, ge=1, description="Segments shorter than this (bars) are merged into a neighbour.")
    split_repeats: bool = Field(True, description="Split a segment that is its own first part played again (A A).")
    split_min_bars: int = Field(8, ge=2, description="Shortest part a repeated segment is split into (bars).")
    split_similarity: float = Field(0.9, ge=0, le=1, description="Mean cosine similarity of the aligned bars at which "
                                                                  "a segment counts as played twice.")
    repeat_similarity: float = Field(0.85, ge=0, le=1, description="Mean cosine similarity of aligned bars at which "
                                                                   "two segments get the same label.")
    # --- naming
    name_sections: bool = Field(True, description="Guess names (intro, verse, chorus, bridge, outro).")
    name_min_confidence: float = Field(0.5, ge=0, le=1, description="Names with a lower confidence are left null.")
    intro_max_bars: int = Field(12, ge=1, description="A first, unrepeated section up to this long may be the intro.")
    outro_max_bars: int = Field(16, ge=1, description="A last, unrepeated section up to this long may be the outro.")
    chorus_margin_db: float = Field(2.0, ge=0, description="Score lead (dB) over the other repeated labels that "
                                                           "makes the chorus guess fully confident.")
    chorus_count_bonus_db: float = Field(0.5, ge=0, description="Chorus score: a label's loudness (dB) plus this "
                                                                "much per occurrence.")


class MirSettings(Section):
    """The MIR tools, each with its own settings (one decode per song feeds them all)."""

    beats: MirBeatsConfig = Field(default_factory=MirBeatsConfig, description="madmom beats, downbeats, meter.")
    key: MirKeyConfig = Field(default_factory=MirKeyConfig, description="essentia key and mode.")
    chords: MirChordsConfig = Field(default_factory=MirChordsConfig, description="Chordino chords.")
    loudness: MirLoudnessConfig = Field(default_factory=MirLoudnessConfig, description="EBU R128 loudness.")
    form: FormConfig = Field(default_factory=FormConfig, description="Song form: sections on the downbeat grid, "
                             "repetition labels, named guesses (mfpipe.mir.form).")
