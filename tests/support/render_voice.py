"""Audio with known lyrics for tests and benchmarks: spoken lines over rendered music.

- `speak(text, voice)`: one line spoken by espeak-ng (Debian package `espeak-ng`), float32
  mono at the rate asked for, leading and trailing silence trimmed.
- `render_voice_mix(lines, voice_db=...)`: a song from `tests/support/render_mir.py` with the lines
  placed at known times, each line scaled so its RMS is `voice_db` dB above (or below)
  the music's RMS over the same span. Returns the mix and the truth (text, language,
  start, end of every line, song-absolute seconds).
- `render_instrumental(spec)`: the same music with no voice.
- `fetch_debian_music(package)`: real instrumental recordings from a Debian game-music
  package (`apt-get download`, `dpkg-deb -x`) into a cache folder; an empty list when
  apt or the package is not available, so tests can skip cleanly.

espeak-ng speech is robotic but real speech in each language's phonology: enough to
check that voice activity, region cutting, timestamps and language handling work, not
a measure of how well singing is recognised.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from support import render_mir as synth

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# espeak-ng voice for each language code used below.
VOICES = {"en": "en-us", "es": "es", "fr": "fr-fr", "de": "de", "it": "it", "hi": "hi", "pt": "pt",
          "nl": "nl", "pl": "pl", "ru": "ru", "tr": "tr", "sv": "sv"}

# Three lines per language, the same meaning in each: "the harbour lights shine on the water
# tonight / take me home before morning comes / I hear the river sing my name".
LINES: dict[str, list[str]] = {
    "en": ["the harbor lights are shining on the water tonight",
           "carry me back home before the morning comes",
           "I can hear the river singing out my name"],
    "es": ["las luces del puerto brillan sobre el agua esta noche",
           "llévame de vuelta a casa antes de que llegue la mañana",
           "puedo escuchar al río cantando mi nombre"],
    "fr": ["les lumières du port brillent sur l'eau ce soir",
           "ramène-moi à la maison avant que le matin arrive",
           "j'entends la rivière qui chante mon nom"],
    "de": ["die Lichter des Hafens leuchten heute Nacht auf dem Wasser",
           "bring mich nach Hause bevor der Morgen kommt",
           "ich höre den Fluss, der meinen Namen singt"],
    "it": ["le luci del porto brillano sull'acqua stanotte",
           "riportami a casa prima che arrivi il mattino",
           "sento il fiume che canta il mio nome"],
    "hi": ["आज रात पानी पर बंदरगाह की रोशनी चमक रही है",
           "सुबह होने से पहले मुझे घर वापस ले चलो",
           "मैं नदी को अपना नाम गाते हुए सुनता हूँ"],
    "pt": ["as luzes do porto brilham sobre a água esta noite",
           "leva-me de volta para casa antes que chegue a manhã",
           "eu ouço o rio a cantar o meu nome"],
    "ru": ["огни гавани сияют над водой сегодня ночью",
           "отвези меня домой, пока не наступило утро",
           "я слышу, как река поёт моё имя"],
    "tr": ["liman ışıkları bu gece suyun üzerinde parlıyor",
           "sabah olmadan beni eve geri götür",
           "nehrin adımı söylediğini duyuyorum"],
}

DEBIAN_MUSIC = "asc-music"  # ~10 MB: three instrumental MP3s (22.05 kHz stereo, 5-7 min each)
_AUDIO_SUFFIXES = (".ogg", ".mp3", ".wav", ".flac", ".oga")


@dataclass(frozen=True)
class TruthLine:
    text: str
    language: str
    start: float  # seconds from the start of the song
    end: float


@dataclass
class VoiceMix:
    audio: np.ndarray  # float32 mono at `rate`
    rate: int
    lines: list[TruthLine]
    voice_db: float | None  # voice RMS relative to the music's over each line; None: no voice
    music: str
    extra: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.rate

    @property
    def text(self) -> str:
        return " ".join(line.text for line in self.lines)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", *, rate: int = SAMPLE_RATE, speed: int = 150,
          pitch: int = 50) -> np.ndarray:
    """`text` spoken by espeak-ng as float32 mono at `rate`, silence at both ends trimmed."""
    import soundfile as sf

    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "line.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                       check=True, capture_output=True, timeout=60)
        data, sr = sf.read(wav, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if sr != rate:
        mono = soxr.resample(mono, sr, rate, quality="HQ").astype(np.float32)
    return _trim(mono)


def _trim(x: np.ndarray, rel: float = 0.02) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > rel * max(1e-9, float(np.abs(x).max())))
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]


def _music(spec: synth.SongSpec, seconds: float, rate: int) -> tuple[np.ndarray, synth.SongSpec]:
    bars = max(spec.bars, int(np.ceil(max(0.0, seconds - 1.0) / spec.bar_s)))
    spec = dataclasses.replace(spec, bars=bars)
    music = synth.render(spec)
    if rate != synth.RATE:
        music = soxr.resample(music, synth.RATE, rate, quality="HQ").astype(np.float32)
    return music, spec


def render_instrumental(spec: synth.SongSpec | None = None, *, seconds: float | None = None,
                        rate: int = SAMPLE_RATE) -> VoiceMix:
    """Rendered music with no voice (at least `seconds` long when given)."""
    spec = spec or synth.TEST_SONGS[0]
    music, spec = _music(spec, seconds or spec.duration_s, rate)
    return VoiceMix(audio=music, rate=rate, lines=[], voice_db=None, music=spec.name)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def render_voice_mix(lines: Sequence[tuple[str, str]] | None = None, *, voice_db: float = 0.0,
                     spec: synth.SongSpec | None = None, rate: int = SAMPLE_RATE, first_at: float = 3.0,
                     gap_s: float = 3.0, tail_s: float = 3.0, music_gain: float = 1.0,
                     speed: int = 150) -> VoiceMix:
    """Spoken lines `[(language, text), ...]` over rendered music at known times.

    Line k starts `gap_s` after line k-1 ends (the first at `first_at`). Each line is scaled so
    its RMS is `voice_db` dB relative to the music's RMS over the line's span; the mix is then
    scaled (voice and music together) to peak at -1 dBFS. `music_gain=0` gives the voice alone
    at the same times (a clean reference)."""
    lines = list(lines if lines is not None else [("en", t) for t in LINES["en"]])
    spec = spec or synth.TEST_SONGS[0]
    spoken = [speak(text, VOICES.get(lang, lang), rate=rate, speed=speed) for lang, text in lines]
    starts, t = [], first_at
    for clip in spoken:
        starts.append(t)
        t += len(clip) / rate + gap_s
    total = t - gap_s + tail_s
    music, spec = _music(spec, total, rate)
    music = music[: int(round(total * rate))] if len(music) > total * rate else np.pad(
        music, (0, int(round(total * rate)) - len(music)))
    voice = np.zeros_like(music, dtype=np.float64)
    truth = []
    for (lang, text), clip, start in zip(lines, spoken, starts):
        a = int(round(start * rate))
        b = min(len(music), a + len(clip))
        clip = clip[: b - a]
        gain = 10.0 ** (voice_db / 20.0) * _rms(music[a:b]) / max(_rms(clip), 1e-9)
        voice[a:b] += gain * clip
        truth.append(TruthLine(text=text, language=lang, start=round(a / rate, 3), end=round(b / rate, 3)))
    mix = music_gain * music.astype(np.float64) + voice
    mix = mix / max(1e-9, float(np.abs(mix).max())) * 0.89
    return VoiceMix(audio=mix.astype(np.float32), rate=rate, lines=truth, voice_db=voice_db, music=spec.name,
                    extra={"music_gain": music_gain})


# ------------------------------------------------------------------ real recordings ---


def cache_dir() -> Path:
    """`$MFPIPE_TEST_AUDIO`, else `.cache/test-audio` beside the models folder."""
    env = os.environ.get("MFPIPE_TEST_AUDIO")
    if env:
        return Path(env).expanduser()
    from mfpipe.localmodels import models_dir

    return models_dir().parent / "test-audio"


def fetch_debian_music(package: str = DEBIAN_MUSIC, cache: Path | None = None, *, timeout_s: float = 300) -> list[Path]:
    """The audio files of a Debian game-music package, extracted once into `cache/package/`.

    Uses `apt-get download` (no install) and `dpkg-deb -x`. Returns [] (and logs why) when apt
    or dpkg-deb is missing, the package cannot be downloaded, or it holds no audio."""
    folder = Path(cache or cache_dir()) / package
    found = sorted(p for p in folder.glob("*") if p.suffix.lower() in _AUDIO_SUFFIXES) if folder.is_dir() else []
    if found:
        return found
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        log.info("no apt-get/dpkg-deb here: cannot fetch %s", package)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True,
                           timeout=timeout_s)
            debs = sorted(Path(tmp).glob("*.deb"))
            if not debs:
                return []
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")], check=True,
                           capture_output=True, timeout=timeout_s)
        except (subprocess.SubprocessError, OSError) as exc:
            log.info("cannot fetch Debian package %s: %s", package, exc)
            return []
        files = sorted(p for p in (Path(tmp) / "x").rglob("*") if p.is_file() and p.suffix.lower() in _AUDIO_SUFFIXES)
        if not files:
            return []
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, folder / f.name)
    return sorted(folder / f.name for f in files)
