"""The song's own audio for the page's player.

Only a song of the corpus is served, found by its song_id in the ingest rows,
and only its own source file: there is no path in the request to abuse. A file
a browser plays (MP3, FLAC, Ogg, 8 to 32-bit PCM or float WAV, WebM) is served
as it is; anything else (AIFF, WMA, m4a, other WAV encodings, ...) is decoded
with the project's decoder (`mfpipe.audio.load_mono`: libsndfile, else ffmpeg)
and written as 16-bit WAV. Remote sources and transcodes are kept in a small
temporary cache (the last few songs), so the player's range requests (seeking)
read a local file; Starlette's `FileResponse` answers the ranges.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import threading
from collections import OrderedDict, defaultdict

import fsspec
import soundfile as sf

from ..audio import AudioError, is_local, load_mono, local_path

# Extensions browsers play as they are, and their media types.
PLAYABLE = {".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
            ".opus": "audio/ogg", ".webm": "audio/webm", ".wav": "audio/wav"}
PLAYABLE_WAV = {"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"}  # WAV encodings browsers decode
MIN_RATE, MAX_RATE = 8000, 48000  # a transcode keeps the song's rate within these


class AudioUnavailable(Exception):
    """The song's file cannot be served (gone, unreadable, undecodable); the message says which."""


def browser_type(source: str, subtype: str | None) -> str | None:
    """The media type a browser plays this file as, or None: it must be transcoded."""
    ext = posixpath.splitext(source.lower())[1]
    if ext == ".wav" and (subtype or "").upper() not in PLAYABLE_WAV:
        return None
    return PLAYABLE.get(ext)


class AudioFiles:
    """Local files to serve, one per song: the source itself, or a cached copy or transcode."""

    def __init__(self, max_cached: int = 6):
        self.max_cached = max_cached
        self._dir = tempfile.TemporaryDirectory(prefix="mfpipe-review-")
        self._cached: OrderedDict[str, str] = OrderedDict()
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def file(self, song_id: str, source: str, subtype: str | None, sample_rate: int | None) -> tuple[str, str]:
        """(local path, media type) to serve for a song (its source, subtype and rate from its ingest row)."""
        media = browser_type(source, subtype)
        if media and is_local(source):
            path = local_path(source)
            if not os.path.isfile(path):
                raise AudioUnavailable("the song's file is no longer there")
            return path, media
        name = f"{song_id}{posixpath.splitext(source)[1].lower() if media else '.wav'}"
        with self._guard:
            lock = self._locks[name]
        with lock:
            with self._guard:
                if name in self._cached:
                    self._cached.move_to_end(name)
                    return self._cached[name], media or "audio/wav"
            path = os.path.join(self._dir.name, name)
            tmp = f"{path}.part"
            if media:
                _copy(source, tmp)
            else:
                _transcode(source, sample_rate or 44100, tmp)
            os.replace(tmp, path)
            self._remember(name, path)
        return path, media or "audio/wav"

    def _remember(self, name: str, path: str) -> None:
        with self._guard:
            self._cached[name] = path
            while len(self._cached) > self.max_cached:
                _, old = self._cached.popitem(last=False)
                # A response still streaming the old file keeps its open handle (POSIX); nothing breaks.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old)

    def close(self) -> None:
        self._dir.cleanup()


def _copy(source: str, dest: str) -> None:
    try:
        with fsspec.open(source, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except OSError as exc:
        raise AudioUnavailable(f"the song's file cannot be read: {exc.__class__.__name__}") from None


def _transcode(source: str, rate: int, dest: str) -> None:
    """Decode with the project's decoder and write 16-bit WAV a browser plays."""
    rate = min(max(int(rate), MIN_RATE), MAX_RATE)
    try:
        samples = load_mono(source, rate)
    except (AudioError, OSError) as exc:
        raise AudioUnavailable(f"the song's file cannot be decoded: {getattr(exc, 'message', exc)}") from None
    sf.write(dest, samples, rate, subtype="PCM_16", format="WAV")
