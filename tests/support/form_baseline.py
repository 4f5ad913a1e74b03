"""The untuned textbook song-form method (McFee & Ellis, as in librosa's example), for the form
benchmark's comparison with mfpipe's analysis (`mfpipe.mir.form`) on the form renders."""

from __future__ import annotations

import numpy as np

from mfpipe.mir.form import FormResult, letter


def plain_laplacian(mono: np.ndarray, sample_rate: int, beats: np.ndarray | list[float], duration_s: float,
                    k: int = 5) -> FormResult:
    """McFee & Ellis as in librosa's example, untuned: CQT (36 bins/octave, 7 octaves, 22050 Hz) and
    MFCC synced to the beats, width-3 recurrence, 7-beat diagonal filter, 9-beat eigenvector
    smoothing, k = 5; boundaries wherever the cluster changes (on beats, no downbeat snapping)."""
    import librosa
    import scipy.linalg
    import scipy.ndimage
    import scipy.sparse.csgraph
    import soxr
    from scipy.cluster.vq import kmeans2

    result = FormResult()
    sr, hop = 22050, 512
    y = soxr.resample(np.asarray(mono, dtype=np.float32), sample_rate, sr).astype(np.float32)
    beats = np.asarray(beats, dtype=float)
    if len(beats) < 2 * k:
        result.sections = [{"start": 0.0, "end": float(duration_s), "label": "A", "name": None, "confidence": None}]
        result.notes.append("form(plain): too few beats")
        return result
    cqt = librosa.amplitude_to_db(np.abs(librosa.cqt(y=y, sr=sr, hop_length=hop, bins_per_octave=36, n_bins=252)),
                                  ref=np.max)
    beat_frames = librosa.util.fix_frames(librosa.time_to_frames(beats, sr=sr, hop_length=hop), x_min=0)
    csync = librosa.util.sync(cqt, beat_frames, aggregate=np.median)
    rec = librosa.segment.recurrence_matrix(csync, width=3, mode="affinity", sym=True)
    rec = librosa.segment.timelag_filter(scipy.ndimage.median_filter)(rec, size=(1, 7))
    mfcc = librosa.feature.mfcc(y=y, sr=sr, hop_length=hop)
    msync = librosa.util.sync(mfcc, beat_frames)
    path_distance = np.sum(np.diff(msync, axis=1) ** 2, axis=0)
    path_sim = np.exp(-path_distance / np.median(path_distance))
    path = np.diag(path_sim, k=1) + np.diag(path_sim, k=-1)
    deg_path, deg_rec = path.sum(axis=1), rec.sum(axis=1)
    mu = deg_path.dot(deg_path + deg_rec) / np.sum((deg_path + deg_rec) ** 2)
    lap = scipy.sparse.csgraph.laplacian(mu * rec + (1 - mu) * path, normed=True)
    _, evecs = scipy.linalg.eigh(lap)
    evecs = scipy.ndimage.median_filter(evecs, size=(9, 1))
    cnorm = np.cumsum(evecs ** 2, axis=1) ** 0.5
    x = evecs[:, :k] / np.maximum(cnorm[:, k - 1: k], 1e-12)
    _, ids = kmeans2(x, k, minit="++", seed=np.random.default_rng(0))
    bound = 1 + np.flatnonzero(ids[:-1] != ids[1:])
    bound = librosa.util.fix_frames(bound, x_min=0)
    times = librosa.frames_to_time(beat_frames, sr=sr, hop_length=hop)
    starts = [float(times[b]) if b < len(times) else float(duration_s) for b in bound]
    starts[0] = 0.0
    for i, b in enumerate(bound):
        end = starts[i + 1] if i + 1 < len(bound) else float(duration_s)
        if end > starts[i]:
            seg_id = int(ids[min(b, len(ids) - 1)])
            result.sections.append({"start": starts[i], "end": end, "label": letter(seg_id), "name": None,
                                    "confidence": None})
    return result
