"""Audio decode shared by the stages: soundfile first, ffmpeg for what libsndfile lacks.

Stages never import each other, so the one decode path lives here. Sources may
be local paths or fsspec URLs; remote files are read through fsspec (soundfile
reads file objects; ffmpeg gets a local temporary copy).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import soundfile as sf
import soxr
from pydantic import Field

from .config import Section

BLOCK_FRAMES = 1 << 18  # ~6 s at 44.1 kHz: bounded memory for any file length
# Called with each decoded block, float32 (frames, channels), and the sample rate (e.g. a fingerprinter).
BlockSink = Callable[[np.ndarray, int], None]
# Makes a fresh BlockSink for each decode attempt (when libsndfile fails part-way, ffmpeg starts over).
SinkFactory = Callable[[], BlockSink]


class AudioConfig(Section):
    """How songs are cut for the audio-LM; shared by ingest (window counts) and every stage that listens."""

    window_s: float = Field(30.0, gt=0, description="Length of one audio window in seconds: Music Flamingo's "
                                                     "encoder reads 30 s windows.")


class AudioError(Exception):
    """A file that cannot be used as audio. `kind` is the short reject class."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class AudioScan:
    """What a full streaming decode of a file tells: real length, format, level."""

    frames: int
    sample_rate: int
    channels: int
    format: str
    subtype: str | None
    peak: float
    decoder: str
    header_frames: int | None = None
    # Why the file looks damaged or cut off (None: it decoded cleanly).
    damage: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def peak_dbfs(self) -> float:
        return 20.0 * math.log10(self.peak) if self.peak > 0 else -math.inf


def is_local(source: str) -> bool:
    return "://" not in source or source.startswith("file://")


def local_path(source: str) -> str:
    return source[len("file://"):] if source.startswith("file://") else source


@contextlib.contextmanager
def _open_binary(source: str):
    if is_local(source):
        with open(local_path(source), "rb") as fh:
            yield fh
    else:
        with fsspec.open(source, "rb") as fh:
            yield fh


@contextlib.contextmanager
def _open_sound(source: str):
    """A soundfile handle; local paths go straight to libsndfile (no Python I/O callbacks)."""
    if is_local(source):
        with sf.SoundFile(local_path(source)) as snd:
            yield snd
    else:
        with fsspec.open(source, "rb") as fh, sf.SoundFile(fh) as snd:
            yield snd


def file_size(source: str) -> int:
    if is_local(source):
        return Path(local_path(source)).stat().st_size
    fs, path = fsspec.core.url_to_fs(source)
    return int(fs.size(path))


def sha256_file(source: str, chunk: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with _open_binary(source) as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _local_copy(source: str) -> Iterator[str]:
    """A local path for tools that need one (ffmpeg); remote files are copied once."""
    if is_local(source):
        yield local_path(source)
        return
    suffix = Path(source).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        with fsspec.open(source, "rb") as src:
            shutil.copyfileobj(src, tmp)
        tmp.flush()
        yield tmp.name


def ffmpeg_available(binary: str = "ffmpeg") -> bool:
    return shutil.which(binary) is not None


# ---------------------------------------------------------------- scanning ---


# libsndfile's header log: "data : 882000 (should be 440978)" when a WAV/AIFF is cut off.
_SHOULD_BE = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Frames a decoder may legitimately miss against the header (MP3 encoder delay/padding).
_SLACK_SECONDS = 0.5
_SLACK_FRACTION = 0.01
# Streaming writers leave these sizes in the header on purpose: not damage.
_STREAMING_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF - 8}


def _header_damage(log: str, bytes_per_second: float) -> str | None:
    """What libsndfile's own header log says about a cut-off file."""
    match = _SHOULD_BE.search(log)
    if match:
        promised, actual = int(match.group(1)), int(match.group(2))
        if promised not in _STREAMING_SIZES and actual < promised and bytes_per_second > 0:
            return (f"cut-off file: its header promises {promised / bytes_per_second:.1f} s of audio "
                    f"but the file holds {actual / bytes_per_second:.1f} s")
    if "Last page lacks an end-of-stream bit" in log:
        return "cut-off file: the Ogg stream ends without its end-of-stream page"
    return None


def _scan_soundfile(source: str, on_block: BlockSink | None = None) -> AudioScan:
    with _open_sound(source) as snd:
        log = snd.extra_info
        header_frames = snd.frames if snd.frames and snd.frames > 0 else None
        peak = 0.0
        frames = 0
        nonfinite = False
        # read() until it comes back short: blocks() would trust the header's frame count
        # and pad a cut-off file with whatever is in its buffer.
        while (block := snd.read(BLOCK_FRAMES, dtype="float32", always_2d=True)).shape[0]:
            frames += block.shape[0]
            if not np.isfinite(block).all():
                nonfinite = True
                block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
            if block.size:
                peak = max(peak, float(np.abs(block).max()))
            if on_block is not None:
                on_block(block, int(snd.samplerate))
        scan = AudioScan(
            frames=frames,
            sample_rate=int(snd.samplerate),
            channels=int(snd.channels),
            format=str(snd.format),
            subtype=str(snd.subtype) if snd.subtype else None,
            peak=peak,
            decoder="soundfile",
            header_frames=header_frames,
        )
    block_align = _bytes_per_frame(scan.subtype, scan.channels)
    scan.damage = _header_damage(log, block_align * scan.sample_rate)
    if scan.damage is None and header_frames and header_frames - frames > max(
            _SLACK_SECONDS * scan.sample_rate, _SLACK_FRACTION * header_frames):
        scan.damage = (f"cut-off file: its header promises {header_frames / scan.sample_rate:.1f} s "
                       f"but only {scan.duration_s:.1f} s decode")
    if nonfinite and scan.damage is None:
        # Integer and compressed formats cannot hold NaN/Inf: the decoder ran past the data.
        scan.damage = "damaged file: the decoder produced invalid (NaN/Inf) samples"
    return scan


def _bytes_per_frame(subtype: str | None, channels: int) -> int:
    width = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
             "ULAW": 1, "ALAW": 1}.get(subtype or "", 0)
    return width * channels


def _ffprobe(path: str, ffprobe: str) -> dict:
    out = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=sample_rate,channels,codec_name,duration:format=format_name,duration",
         "-of", "json", path],
        capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        detail = out.stderr.strip().replace(f"{path}: ", "")[:200] or "unknown error"
        raise AudioError("not_audio", f"ffmpeg: {detail}")
    info = json.loads(out.stdout or "{}")
    streams = info.get("streams") or []
    if not streams:
        raise AudioError("not_audio", "the file has no audio stream")
    return {"stream": streams[0], "format": info.get("format", {})}


def _ffmpeg_decode_cmd(ffmpeg: str, path: str, channels: int | None, rate: int | None) -> list[str]:
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le"]
    if channels:
        cmd += ["-ac", str(channels)]
    if rate:
        cmd += ["-ar", str(rate)]
    return cmd + ["-"]


def _scan_ffmpeg(source: str, ffmpeg: str, on_block: BlockSink | None = None) -> AudioScan:
    ffprobe = str(Path(shutil.which(ffmpeg) or ffmpeg).with_name("ffprobe"))
    with _local_copy(source) as path:
        info = _ffprobe(path, ffprobe)
        stream = info["stream"]
        rate = int(stream.get("sample_rate") or 0)
        channels = int(stream.get("channels") or 0)
        if rate <= 0 or channels <= 0:
            raise AudioError("not_audio", "ffprobe found no usable sample rate / channel count")
        proc = subprocess.Popen(_ffmpeg_decode_cmd(ffmpeg, path, channels, None),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        peak, samples = 0.0, 0
        bytes_per_block = BLOCK_FRAMES * channels * 4
        assert proc.stdout is not None
        while chunk := proc.stdout.read(bytes_per_block):
            usable = len(chunk) - len(chunk) % 4
            block = np.frombuffer(chunk[:usable], dtype="<f4")
            samples += block.size
            if block.size:
                peak = max(peak, float(np.abs(np.nan_to_num(block)).max()))
            if on_block is not None and block.size >= channels:
                frames = block[: block.size - block.size % channels].reshape(-1, channels)
                on_block(np.nan_to_num(frames), rate)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise AudioError("decode_error", f"ffmpeg failed to decode it: {stderr.strip()[:200]}")
    duration = float(stream.get("duration") or info["format"].get("duration") or 0.0)
    scan = AudioScan(
        frames=samples // channels,
        sample_rate=rate,
        channels=channels,
        format=(info["format"].get("format_name") or "unknown").split(",")[0].upper(),
        subtype=stream.get("codec_name"),
        peak=peak,
        decoder="ffmpeg",
        header_frames=int(round(duration * rate)) if duration > 0 else None,
    )
    errors = [line for line in stderr.splitlines() if line.strip()]
    if errors:
        scan.damage = f"damaged file: ffmpeg reports {errors[-1].strip()[:160]}"
    return scan


def scan_audio(source: str, ffmpeg: str = "ffmpeg", sink: SinkFactory | None = None) -> AudioScan:
    """Decode the whole file in bounded blocks; raise AudioError when it is not usable audio.
    `sink()` gives a consumer of every decoded block (one decode serves the scan and, say, a
    fingerprint); it is called again for the ffmpeg attempt when libsndfile fails."""
    try:
        return _scan_soundfile(source, sink() if sink else None)
    except (sf.LibsndfileError, RuntimeError, TypeError) as sf_exc:
        sf_message = str(sf_exc)
    if ffmpeg_available(ffmpeg):
        try:
            return _scan_ffmpeg(source, ffmpeg, sink() if sink else None)
        except AudioError as exc:
            raise AudioError(exc.kind, f"not decodable audio: libsndfile: {sf_message}; {exc.message}") from None
    raise AudioError(
        "not_audio",
        f"libsndfile cannot decode it ({sf_message}) and ffmpeg is not installed for other formats",
    )


# ---------------------------------------------------------------- loading ---


def load_mono(source: str, sample_rate: int, max_seconds: float | None = None,
              ffmpeg: str = "ffmpeg") -> np.ndarray:
    """Decode to float32 mono at `sample_rate` (soxr resampling), at most `max_seconds`."""
    try:
        with _open_sound(source) as snd:
            rate = int(snd.samplerate)
            limit = int(max_seconds * rate) if max_seconds else -1
            data = snd.read(frames=limit, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        if not ffmpeg_available(ffmpeg):
            raise AudioError("not_audio", "libsndfile cannot decode it and ffmpeg is not installed") from None
        return _load_ffmpeg(source, sample_rate, max_seconds, ffmpeg)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _load_ffmpeg(source: str, sample_rate: int, max_seconds: float | None, ffmpeg: str) -> np.ndarray:
    with _local_copy(source) as path:
        cmd = _ffmpeg_decode_cmd(ffmpeg, path, 1, sample_rate)
        if max_seconds:
            cmd = cmd[:-1] + ["-t", f"{max_seconds:.3f}", "-"]
        out = subprocess.run(cmd, capture_output=True, timeout=3600)
    if out.returncode != 0:
        raise AudioError("decode_error", f"ffmpeg failed to decode it: {out.stderr.decode(errors='replace')[:200]}")
    usable = len(out.stdout) - len(out.stdout) % 4
    return np.frombuffer(out.stdout[:usable], dtype="<f4").copy()
