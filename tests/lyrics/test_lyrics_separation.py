"""Vocal separation: the code path with the REAL htdemucs architecture and RANDOM weights (offline),
and exact alignment through chunking, overlap, resampling and batching with an identity 'separator'."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("demucs")

from mfpipe.localmodels.htdemucs import build_random_htdemucs  # noqa: E402
from mfpipe.lyrics.separation import (  # noqa: E402
    SOURCES,
    SeparationConfig,
    VocalSeparator,
)


class IdentitySeparator(torch.nn.Module):
    """Demucs-shaped: every source is the input itself, so the 'vocal stem' must equal the mix."""

    samplerate = 44100
    audio_channels = 2
    sources = list(SOURCES)
    segment = 7.8

    def forward(self, mix):
        self.windows = getattr(self, "windows", 0) + 1
        return mix[:, None].repeat(1, len(self.sources), 1, 1)


@pytest.fixture(scope="module")
def random_htdemucs(tmp_path_factory):
    torch.set_num_threads(1)
    return build_random_htdemucs(tmp_path_factory.mktemp("demucs") / "htdemucs-random.th")


def _signal(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Smooth tones with an envelope: survives resampling, easy to compare."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(rng.uniform(200, 2000, 4), rng.uniform(0, 6, 4)))
    return (0.2 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t))).astype(np.float32)


@pytest.mark.slow
def test_identity_separator_keeps_offsets_exact_on_long_songs_in_one_batch():
    import soxr

    model = IdentitySeparator()
    sep = VocalSeparator(SeparationConfig(device="cpu", shifts=1, overlap=0.25, batch_songs=3), model=model)
    long_mono = _signal(150.0, 22050, 0)  # 2.5 min, mono, 22.05 kHz
    stereo_48k = np.stack([_signal(75.0, 48000, 1), _signal(75.0, 48000, 2)])  # (2, n)
    short_16k = _signal(20.0, 16000, 3)
    results = sep.separate([long_mono, stereo_48k, short_16k], [22050, 48000, 16000], names=["a", "b", "c"])
    # One batch (songs side by side), the long song cut into 7.8 s windows with a 5.85 s stride.
    assert model.windows == int(np.ceil(150.0 / (7.8 * 0.75)))
    for res, audio, rate in zip(results, [long_mono, stereo_48k.mean(axis=0), short_16k], [22050, 48000, 16000]):
        assert res.error is None and res.rate == 16000
        expect = soxr.resample(audio, rate, 16000, quality="HQ")
        assert len(res.vocals) == int(round(len(audio) / rate * 16000))
        n = min(len(expect), len(res.vocals))
        core = slice(1600, n - 1600)  # away from the resampler's edges
        err = np.abs(res.vocals[core] - expect[core]).max()
        assert err < 0.01 * np.abs(expect).max(), err
        assert res.random_weights is False


@pytest.mark.slow
def test_random_htdemucs_shapes_rates_offsets_and_batching(random_htdemucs, tmp_path):
    cfg = SeparationConfig(model=str(random_htdemucs), device="cpu", shifts=0, overlap=0.25, batch_songs=2,
                           write_stem=True, stem_dir=str(tmp_path / "stems"))
    sep = VocalSeparator(cfg)
    assert sep.random_weights is True and sep.rate == 44100
    assert sum(p.numel() for p in sep.model.parameters()) > 20_000_000  # the real architecture
    rate = 22050
    a = np.zeros((int(14.0 * rate), 2), dtype=np.float32)  # 14 s stereo (n, 2), silent but for a burst
    rng = np.random.default_rng(0)
    a[int(11.0 * rate): int(12.0 * rate)] = 0.3 * rng.standard_normal((rate, 2))
    b = _signal(6.0, rate, 4)
    res_a, res_b = sep.separate([a, b], rate, names=["burst", "tones"])
    assert res_a.error is None and res_b.error is None
    assert res_a.random_weights and res_a.rate == 16000
    assert len(res_a.vocals) == 14 * 16000 and len(res_b.vocals) == 6 * 16000
    assert np.isfinite(res_a.vocals).all() and res_a.vocals.dtype == np.float32
    # Windows that hold only silence give silence: the energy sits in the windows around the burst.
    energy = np.square(res_a.vocals.astype(np.float64))
    early = energy[: int(5.5 * 16000)].sum()
    assert early < 1e-6 * energy.sum()
    # The written stem: model rate, stereo, same duration.
    info = sf.info(res_a.stem_path)
    assert info.samplerate == 44100 and info.channels == 2 and abs(info.duration - 14.0) < 1e-3
    assert res_a.compute_s > 0


def test_device_selection_and_config(monkeypatch):
    from mfpipe import devices as _paths

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _paths.pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(_paths.REHEARSAL_ENV, raising=False)
    assert _paths.pick_device("auto") == "cpu"
    with pytest.raises(_paths.NoCudaError):  # asked for a GPU, found no CUDA: never a silent CPU
        _paths.pick_device("cuda:1")
    sep = VocalSeparator(SeparationConfig(), model=IdentitySeparator())
    assert sep.device == "cpu" and sep.settings()["model"] == "htdemucs"
    assert SeparationConfig().write_stem is False
    assert all(f.description for f in SeparationConfig.model_fields.values())
    with pytest.raises(ValueError):
        VocalSeparator(SeparationConfig(write_stem=True), model=IdentitySeparator())
    with pytest.raises(ValueError):
        VocalSeparator(SeparationConfig(stem="piano"), model=IdentitySeparator())


def test_bad_songs_fail_alone():
    sep = VocalSeparator(SeparationConfig(device="cpu", shifts=0), model=IdentitySeparator())
    good = _signal(3.0, 16000, 5)
    out = sep.separate([np.zeros((3, 4, 5)), good, np.array([np.nan] * 16000, np.float32)], 16000)
    assert out[0].error and out[2].error and out[1].error is None and len(out[1].vocals) == 48000
