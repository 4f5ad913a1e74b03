"""Ingest: hash, decode and measure every input file; decide what the pipeline works on.

Outcomes, one per input (the README lists them for curators):
- processed: decodable audio, at least `min_duration_s` long, not silent;
- truncated + processed: longer than `max_duration_s` (Music Flamingo's 1200 s);
  later stages use the first `max_duration_s` and the row says so;
- rejected: empty file, not audio / undecodable, damaged (fewer frames decode
  than the header promises), too short, silent. Identical bytes under several
  names are one song: the runner writes the first and rejects the others as
  `duplicate`.
- fingerprinted (Chromaprint over the analysed span, in the row): the same
  recording under other bytes is one song (`near_duplicate`, naming the kept
  song_id), and a song holding a clip of an evaluation set is left out
  (`eval_contamination`, naming the clip). The decisions are made on the driver
  before the rows are committed (`mfpipe.screening`, the stage's corpus gate).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from mfpipe import audio
from mfpipe.dedup import ClipMatchSettings, NearDuplicateSettings
from mfpipe.fingerprint import FingerprintSink, chromaprint_version
from mfpipe.pipeline.inputs import discover
from mfpipe.pipeline.registry import register
from mfpipe.pipeline.stage import INPUTS, Resources, Stage, StageConfig, StageSettings
from mfpipe.schemas import IngestRecord, Reject, RunInfo, ToolVersion
from mfpipe.screening import Screening, load_exclusions
from mfpipe.store import OutputStore

AUDIO_EXTENSIONS = [".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff",
                    ".m4a", ".aac", ".wma", ".webm", ".mka"]


class IngestConfig(StageConfig):
    """Ingest: which inputs are songs, and what a song must be to go on."""

    resources: Resources = Field(default_factory=lambda: Resources(cpus=1, batch_size=8),
                                 description="What each worker asks Ray for.")
    max_duration_s: float = Field(1200.0, gt=0, description="Songs are truncated here: Music Flamingo reads at "
                                  "most 40 windows of 30 s (later stages use the first max_duration_s).")
    min_duration_s: float = Field(1.0, ge=0, description="Shorter files are rejected as too_short.")
    silence_dbfs: float = Field(-60.0, description="A file whose peak stays below this is rejected as silent.")
    extensions: list[str] = Field(default_factory=lambda: list(AUDIO_EXTENSIONS),
                                  description="File extensions a folder or glob input counts as audio.")
    ffmpeg: str = Field("ffmpeg", description="Used, when installed, for formats libsndfile cannot read.")
    fingerprint: bool = Field(True, description="A Chromaprint fingerprint of the analysed span in every row "
                              "(libchromaprint, from Debian's libchromaprint-tools); near_duplicates and exclude "
                              "need it. Without the library the stage fails and says what to install.")
    near_duplicates: NearDuplicateSettings = Field(default_factory=NearDuplicateSettings,
                                                   description=NearDuplicateSettings.__doc__)
    exclude: list[str] = Field(default_factory=list, description="Evaluation audio that must not be in the corpus: "
                               "folders, globs or manifests (like --input; `mfpipe run --exclude` adds to it). A song "
                               "that contains one of its clips is left out as eval_contamination, also a song ingested "
                               "by an earlier run. Clips are fingerprinted once (OUT/_cache/exclude/).")
    exclude_match: ClipMatchSettings = Field(default_factory=ClipMatchSettings,
                                             description=ClipMatchSettings.__doc__)


@register
class IngestStage(Stage):
    name = "ingest"
    record = IngestRecord
    requires = (INPUTS,)
    key = "source"
    config_model = IngestConfig
    reads = {"audio": audio.AudioConfig}
    summary = ("hash, decode, measure and fingerprint each file; one copy per recording, none holding evaluation "
               "audio; 30 s windows; truncation at 1200 s")

    @classmethod
    def banner_notes(cls, settings: StageSettings) -> list[str]:
        cfg = settings.own
        if not cfg.fingerprint:
            return ["no fingerprints (ingest.fingerprint=false): no near-duplicate groups, no exclusions"]
        return [f"leaves out songs holding clips of {', '.join(cfg.exclude)}"] if cfg.exclude else []

    @classmethod
    def corpus_gate(cls, settings: StageSettings, store: OutputStore, run: RunInfo,
                    withdrawn: set[str]) -> Screening | None:
        """Near-duplicate groups and evaluation contamination, decided before rows are committed."""
        cfg = settings.own
        if not cfg.fingerprint:
            return None
        sets = {spec: discover(spec, cfg.extensions).sources for spec in dict.fromkeys(cfg.exclude)}
        exclusions = load_exclusions(store, sets, cfg.exclude_match, run, cfg.ffmpeg)
        return Screening(store, run, cfg.near_duplicates, cfg.exclude_match, exclusions, withdrawn)

    def setup(self) -> None:
        self.ffmpeg = audio.ffmpeg_available(self.cfg.ffmpeg)
        if self.cfg.fingerprint:
            FingerprintSink()  # a missing libchromaprint fails the stage here, saying what to install

    def tool_versions(self) -> list[ToolVersion]:
        import soundfile

        tools = [ToolVersion(name="soundfile", version=soundfile.__version__),
                 ToolVersion(name="libsndfile", version=soundfile.__libsndfile_version__)]
        if self.cfg.fingerprint:
            tools.append(ToolVersion(name="chromaprint", version=chromaprint_version()))
        return tools

    def process_batch(self, rows: list[dict[str, Any]]) -> list[IngestRecord | Reject]:
        return [self._ingest(row) for row in rows]

    def _ingest(self, row: dict[str, Any]) -> IngestRecord | Reject:
        source = row["source"]
        try:
            size = audio.file_size(source)
        except FileNotFoundError:
            return self.reject(row, "missing", "file not found")
        except OSError as exc:
            return self.reject(row, "unreadable", f"cannot read the file: {exc}", retryable=True)
        if size == 0:
            return self.reject(row, "empty_file", "the file is empty (0 bytes)")
        song_id = audio.sha256_file(source)
        row = {**row, "song_id": song_id}
        sink = FingerprintSink(max_seconds=self.cfg.max_duration_s) if self.cfg.fingerprint else None
        try:
            scan = audio.scan_audio(source, self.cfg.ffmpeg, sink)
        except audio.AudioError as exc:
            return self.reject(row, exc.kind, exc.message)
        fingerprint = sink.results()[0].tolist() if sink else []
        return self._judge(row, size, scan, fingerprint)

    def _judge(self, row: dict[str, Any], size: int, scan: audio.AudioScan,
               fingerprint: list[int]) -> IngestRecord | Reject:
        cfg = self.cfg
        if scan.frames == 0:
            return self.reject(row, "no_audio", f"{scan.format} file with no audio frames")
        duration = scan.duration_s
        if scan.damage:
            return self.reject(row, "damaged", scan.damage)
        if duration < cfg.min_duration_s:
            return self.reject(row, "too_short", f"{duration:.2f} s of audio; the minimum is {cfg.min_duration_s:g} s")
        if scan.peak_dbfs < cfg.silence_dbfs:
            level = "digital silence" if scan.peak == 0 else f"peak {scan.peak_dbfs:.1f} dBFS"
            return self.reject(row, "silent", f"the file is silent ({level}; threshold {cfg.silence_dbfs:g} dBFS)")
        processed = min(duration, cfg.max_duration_s)
        truncated = duration > cfg.max_duration_s
        warnings = list(scan.warnings)
        if truncated:
            warnings.append(f"truncated: {duration:.1f} s long, only the first {cfg.max_duration_s:g} s are used")
        if scan.sample_rate < 16000:
            warnings.append(f"low sample rate ({scan.sample_rate} Hz): upsampled for the models, no content above "
                            f"{scan.sample_rate // 2} Hz")
        notes = [f"decoder: {scan.decoder}"]
        return IngestRecord(
            song_id=row["song_id"],
            source=row["source"],
            provenance=self.provenance(notes=notes),
            duration_s=round(duration, 4),
            processed_s=round(processed, 4),
            truncated=truncated,
            sample_rate=scan.sample_rate,
            channels=scan.channels,
            n_windows=max(1, math.ceil(processed / self.shared.audio.window_s - 1e-9)),
            format=scan.format,
            subtype=scan.subtype,
            size_bytes=size,
            peak_dbfs=round(scan.peak_dbfs, 2),
            decoder=scan.decoder,
            warnings=warnings,
            fingerprint=fingerprint,
        )
