"""Song form as measured facts: sections on the downbeat grid, labels that say which sections repeat.

Method (bar-synchronous Laplacian segmentation, after McFee & Ellis 2014,
"Analyzing song structure with spectral clustering", then a segment-level
repetition check):

1. The bar grid: the downbeats the beat tracker found, with gaps filled and the
   ends extended at the median bar length; bars of `fallback_beats_per_bar`
   beats when there are beats but no downbeats; a fixed grid of
   `fallback_bar_s` when there are no beats. Very long songs group bars so
   that at most `max_units` units are analysed (memory and time stay bounded:
   every matrix is units x units).
2. Features at a low rate (`feature_sample_rate`, a large hop): chroma (harmony)
   and MFCC (timbre), averaged over `slots_per_bar` equal slots of every bar
   and stacked, so a unit's vector carries its chord/melody pattern and its
   arrangement.
3. Laplacian segmentation: a k-nearest-neighbour recurrence matrix on the
   unit vectors (chroma delay-embedded over `chroma_embed_units`, so it is a
   chord SEQUENCE that recurs), median-filtered along its diagonals, plus a
   path graph linking neighbouring units weighted by timbre similarity; the
   normalised Laplacian's first k eigenvectors, smoothed over time, clustered
   by k-means, k chosen by the largest eigengap in [k_min, k_max]. Cluster
   changes are the first boundaries.
4. Boundary clean-up, all on the units' self-similarity: segments shorter than
   `min_section_bars` merge into their more similar neighbour; each boundary
   moves to the checkerboard-novelty peak within `refine_units`; boundaries
   whose sides do not contrast are dropped; the ends of repeated passages
   (diagonal stripes, cosine >= `stripe_similarity`) are added (they find
   verse/chorus boundaries the clustering misses when both sound alike); a
   segment whose halves contrast is split (a short intro lumped with the
   verse); a segment that is its own first part played again (A A) is cut.
5. Labels: two segments get the same letter when their aligned bars are as
   alike as repeats are (`repeat_similarity`, offsets up to
   `label_max_shift_units`), otherwise a new letter (a through-composed song
   gets A B C D ...), in order of first appearance.
6. Names (intro, verse, chorus, bridge, outro) are guesses from position,
   repetition count and loudness, each with a confidence; below
   `name_min_confidence` the name is null.

Everything else in this module is plumbing; the settings are `mfpipe.mir.config.FormConfig`, beside
the other MIR tools' (the untuned textbook method the benchmark compares with lives with the test
renders, `tests/support/form_baseline.py`). librosa and scipy are imported inside the functions
(librosa's import is slow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import FormConfig


@dataclass
class FormResult:
    """Sections covering 0..duration_s (empty when the song could not be analysed) and why."""

    sections: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the grid


def bar_grid(beats: Sequence[float], downbeats: Sequence[float], duration_s: float, cfg: FormConfig,
             notes: list[str]) -> np.ndarray:
    """Edges of the bars, 0 ... duration_s (strictly increasing). Interior edges are downbeats where
    there are downbeats, and extrapolated at the median bar length elsewhere."""
    beats = np.sort(np.asarray(beats, dtype=float).ravel())
    downbeats = np.sort(np.asarray(downbeats, dtype=float).ravel())
    beats = beats[(beats >= 0) & (beats < duration_s)]
    downbeats = downbeats[(downbeats >= 0) & (downbeats < duration_s)]
    if len(downbeats) >= 2:
        points = downbeats
    elif len(beats) >= cfg.min_beats:
        points = beats[:: cfg.fallback_beats_per_bar]
        notes.append(f"form: no downbeats: bars of {cfg.fallback_beats_per_bar} beats from the first beat")
    else:
        notes.append(f"form: {len(beats)} beat(s), fewer than form.min_beats = {cfg.min_beats}: "
                     f"a fixed grid of {cfg.fallback_bar_s:g} s bars")
        points = np.arange(0.0, duration_s, cfg.fallback_bar_s)
    if len(points) < 2:
        points = np.arange(0.0, duration_s, cfg.fallback_bar_s)
    bar = float(np.median(np.diff(points))) if len(points) >= 2 else cfg.fallback_bar_s
    filled = [points[0]]
    for nxt in points[1:]:
        gap = nxt - filled[-1]
        if gap > cfg.gap_fill_ratio * bar:
            count = round(gap / bar)
            filled += list(filled[-1] + gap * np.arange(1, count) / count)
        filled.append(nxt)
    head = list(points[0] - bar * np.arange(int(points[0] / bar), 0, -1))
    tail_count = int((duration_s - filled[-1]) / bar)
    tail = list(filled[-1] + bar * np.arange(1, tail_count + 1))
    grid = np.array(head + filled + tail)
    # No sliver bars at the ends: an edge closer than half a bar to 0, or than 3/4 of a bar to the
    # end (where a song rings out), is dropped; that bit joins its neighbouring bar.
    grid = grid[(grid > 0.5 * bar) & (grid < duration_s - 0.75 * bar)]
    return np.concatenate(([0.0], grid, [duration_s]))


# ------------------------------------------------------------------ features


def bar_features(mono: np.ndarray, sample_rate: int, edges: np.ndarray, cfg: FormConfig
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bar: stacked slot chroma (unit-norm per slot), stacked slot MFCC, and loudness (dB)."""
    import soxr

    y = np.asarray(mono, dtype=np.float32)
    if sample_rate != cfg.feature_sample_rate:
        y = soxr.resample(y, sample_rate, cfg.feature_sample_rate).astype(np.float32, copy=False)
    sr, hop = cfg.feature_sample_rate, cfg.hop_length
    n_fft = min(cfg.n_fft, max(256, 1 << int(np.log2(max(len(y), 256)))))
    chroma, mfcc, energy = _frame_features(y, sr, n_fft, hop, cfg)
    n_frames = chroma.shape[1]
    slots = cfg.slots_per_bar
    # Slots are laid from each bar's start at no more than the median bar length: a bar that took in
    # the song's ring-out (or a pickup) keeps its slots where a full bar's would be.
    lengths = np.diff(edges)
    span = np.minimum(lengths, float(np.median(lengths)))
    starts = (edges[:-1, None] + span[:, None] * np.arange(slots)[None, :] / slots).ravel()
    ends = (edges[:-1, None] + span[:, None] * np.arange(1, slots + 1)[None, :] / slots).ravel()
    lo = np.clip(np.round(starts * sr / hop).astype(int), 0, n_frames)
    hi = np.clip(np.round(ends * sr / hop).astype(int), 0, n_frames)
    chroma_s = _mean_between(chroma, lo, hi)
    chroma_s /= np.maximum(np.linalg.norm(chroma_s, axis=0, keepdims=True), 1e-9)
    mfcc_s = _mean_between(mfcc, lo, hi)
    n_bars = len(edges) - 1
    chroma_b = chroma_s.T.reshape(n_bars, slots * chroma.shape[0])
    mfcc_b = mfcc_s.T.reshape(n_bars, slots * mfcc.shape[0])
    bar_lo = np.clip(np.round(edges[:-1] * sr / hop).astype(int), 0, n_frames)
    bar_hi = np.clip(np.round(edges[1:] * sr / hop).astype(int), 0, n_frames)
    loud = 10 * np.log10(np.maximum(_mean_between(energy[None, :], bar_lo, bar_hi)[0], 1e-12))
    return chroma_b, mfcc_b, loud


def _frame_features(y: np.ndarray, sr: int, n_fft: int, hop: int, cfg: FormConfig
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chroma (12), MFCC (n_mfcc) and energy per STFT frame (frames centred on i * hop, as librosa's
    centred STFT with zero padding), computed `feature_chunk_s` at a time so that no spectrogram of
    the whole song is ever held (a 20-minute song stays at a few MB of features)."""
    import librosa

    half = n_fft // 2
    total = 1 + len(y) // hop
    step = max(1, int(cfg.feature_chunk_s * sr / hop)) if cfg.feature_chunk_s > 0 else total
    chroma_fb = librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0)
    mel_fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=cfg.n_mels)
    parts = []
    for first in range(0, total, step):
        last = min(total, first + step)
        lo, hi = first * hop - half, (last - 1) * hop + half  # samples of the chunk's frames
        frame = y[max(0, lo): min(len(y), hi)]
        if lo < 0 or hi > len(y):  # zeros beyond the song's ends, as librosa's centred STFT
            frame = np.pad(frame, (max(0, -lo), max(0, hi - len(y))))
        power = np.abs(librosa.stft(frame, n_fft=n_fft, hop_length=hop, center=False)) ** 2
        mel_db = librosa.power_to_db(mel_fb @ power, ref=1.0, amin=1e-10, top_db=None)
        parts.append((chroma_fb @ power, librosa.feature.mfcc(S=mel_db, n_mfcc=cfg.n_mfcc), power.sum(axis=0)))
    return (np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1),
            np.concatenate([p[2] for p in parts]))


def _mean_between(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Columns of x averaged over frames [lo, hi) (an empty span takes its nearest frame)."""
    cums = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1, dtype=np.float64)], axis=1)
    out = (cums[:, hi] - cums[:, lo]) / np.maximum(hi - lo, 1)
    empty = hi <= lo
    if empty.any():
        out[:, empty] = x[:, np.minimum(lo[empty], x.shape[1] - 1)]
    return out


def _unit_vectors(chroma_b: np.ndarray, mfcc_b: np.ndarray, cfg: FormConfig) -> np.ndarray:
    """Each unit's vector: its chroma with the next `chroma_embed_units - 1` units' (a delay
    embedding: a chord SEQUENCE, so sections sharing chords in another order differ) and its
    standardised MFCC, weighted `timbre_weight`; unit-norm, so cosine = dot product."""
    c = _delay_embed(chroma_b - chroma_b.mean(axis=0, keepdims=True), cfg.chroma_embed_units)
    c /= max(float(np.linalg.norm(c, axis=1).mean()), 1e-9)
    m = (mfcc_b - mfcc_b.mean(axis=0, keepdims=True)) / np.maximum(mfcc_b.std(axis=0, keepdims=True), 1e-6)
    m /= max(float(np.linalg.norm(m, axis=1).mean()), 1e-9)
    v = np.hstack([c, cfg.timbre_weight * m])
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)


def _delay_embed(x: np.ndarray, units: int) -> np.ndarray:
    """Rows [x_i, x_{i+1}, ..., x_{i+units-1}] (the last row repeated past the end)."""
    if units <= 1:
        return x
    return np.hstack([np.vstack([x[i:], np.repeat(x[-1:], i, axis=0)]) for i in range(units)])


# ------------------------------------------------------------------ Laplacian segmentation


def laplacian_embedding(features: np.ndarray, timbre: np.ndarray, *, k: int | None, width: int, lag_filter: int,
                        path_weight: float | None, smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """McFee & Ellis: recurrence (kNN, diagonal-filtered) + timbre path graph → normalised Laplacian.
    Returns its eigenvalues and the time-smoothed eigenvectors (units x units)."""
    import librosa
    import scipy.linalg
    import scipy.ndimage
    import scipy.sparse.csgraph

    n = features.shape[0]
    width = max(1, min(width, (n - 1) // 2))
    kk = k if k is not None else 2 * int(np.ceil(np.sqrt(max(1, n - 2 * width + 1))))
    kk = max(1, min(kk, n - 2 * width))
    rec = librosa.segment.recurrence_matrix(features.T, k=kk, width=width, mode="affinity", sym=True,
                                            metric="cosine")
    if lag_filter > 1:
        rec = librosa.segment.timelag_filter(scipy.ndimage.median_filter)(rec, size=(1, lag_filter))
    dist = np.sum(np.diff(timbre, axis=0) ** 2, axis=1)
    sigma = float(np.median(dist)) if len(dist) else 1.0
    sim = np.exp(-dist / max(sigma, 1e-9))
    path = np.diag(sim, k=1) + np.diag(sim, k=-1)
    deg_path, deg_rec = path.sum(axis=1), rec.sum(axis=1)
    if path_weight is None:
        total = deg_path + deg_rec
        mu = float(deg_path.dot(total) / max(np.sum(total ** 2), 1e-12))
    else:
        mu = 1.0 - path_weight
    affinity = mu * rec + (1 - mu) * path
    lap = scipy.sparse.csgraph.laplacian(affinity, normed=True)
    evals, evecs = scipy.linalg.eigh(lap)
    if smooth > 1:
        evecs = scipy.ndimage.median_filter(evecs, size=(smooth, 1))
    return evals, evecs


def _kmeans(x: np.ndarray, k: int, restarts: int, seed: int = 0) -> np.ndarray:
    from scipy.cluster.vq import kmeans2

    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(restarts):
        centroids, ids = kmeans2(x, k, minit="++", seed=rng)
        cost = float(np.sum((x - centroids[ids]) ** 2))
        if cost < best_cost:
            best, best_cost = ids, cost
    return best


def cluster_embedding(evecs: np.ndarray, k: int, restarts: int) -> np.ndarray:
    cnorm = np.cumsum(evecs ** 2, axis=1) ** 0.5
    x = evecs[:, :k] / np.maximum(cnorm[:, k - 1: k], 1e-12)
    return _kmeans(x, k, restarts)


def _runs(ids: np.ndarray) -> list[list[int]]:
    """[start, end, id] of each run of equal ids."""
    out = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[start]:
            out.append([start, i, int(ids[start])])
            start = i
    return out


# ------------------------------------------------------------------ the tuned method


def analyse_form(mono: np.ndarray, sample_rate: int, beats: np.ndarray | list[float],
                 downbeats: np.ndarray | list[float], duration_s: float, cfg: FormConfig) -> FormResult:
    """The song's sections ({start, end, label, name, confidence}, covering 0..duration_s) and notes."""
    result = FormResult()
    if not cfg.enabled:
        result.notes.append("form: disabled")
        return result
    duration_s = float(duration_s)
    if duration_s < cfg.min_duration_s:
        result.notes.append(f"form: skipped, {duration_s:.2f} s of audio is shorter than "
                            f"form.min_duration_s = {cfg.min_duration_s:g} s")
        return result
    mono = np.asarray(mono, dtype=np.float32).ravel()
    peak = max(abs(float(mono.max())), abs(float(mono.min()))) if len(mono) else 0.0  # no |x| copy
    if not np.isfinite(peak) or peak <= 10 ** (cfg.silence_dbfs / 20):
        result.notes.append(f"form: silent (peak below {cfg.silence_dbfs:g} dBFS): no sections")
        return result
    edges = bar_grid(beats, downbeats, duration_s, cfg, result.notes)
    n_bars = len(edges) - 1
    group = int(np.ceil(n_bars / cfg.max_units))
    if group > 1:
        result.notes.append(f"form: {n_bars} bars: analysed in units of {group} bars (form.max_units = "
                            f"{cfg.max_units})")
    unit_edges = np.concatenate((edges[:-1:group], edges[-1:]))
    n_units = len(unit_edges) - 1
    chroma_b, mfcc_b, loud = bar_features(mono, sample_rate, unit_edges, cfg)
    vectors = _unit_vectors(chroma_b, mfcc_b, cfg)
    min_units = max(1, int(np.ceil(cfg.min_section_bars / group)))
    if n_units < 2 * min_units + 1:
        segments = [[0, n_units]]
    else:
        segments = _segment(vectors, chroma_b, mfcc_b, cfg, min_units, group)
    if cfg.split_repeats:
        segments = _split_repeats(segments, vectors, cfg, max(2, int(np.ceil(cfg.split_min_bars / group))))
    labels = _label_segments(segments, vectors, cfg)
    result.sections = [{"start": round(float(unit_edges[a]), 3), "end": round(float(unit_edges[b]), 3),
                        "label": lab, "name": None, "confidence": None}
                       for (a, b), lab in zip(segments, labels)]
    result.sections[-1]["end"] = round(duration_s, 3)
    if cfg.name_sections:
        _name_sections(result.sections, segments, loud, group, cfg)
    return result


def _segment(vectors: np.ndarray, chroma_b: np.ndarray, mfcc_b: np.ndarray, cfg: FormConfig, min_units: int,
             group: int) -> list[list[int]]:
    """Unit spans [start, end) from the Laplacian clustering, short ones merged into a neighbour."""
    n = len(vectors)
    timbre = (mfcc_b - mfcc_b.mean(axis=0)) / np.maximum(mfcc_b.std(axis=0), 1e-6)
    evals, evecs = laplacian_embedding(vectors, timbre, k=cfg.recurrence_k, width=cfg.recurrence_width,
                                       lag_filter=cfg.lag_filter_units, path_weight=cfg.path_weight,
                                       smooth=cfg.eigen_smooth_units)
    k_max = max(1, min(cfg.k_max, n // max(1, min_units), n - 1))
    if cfg.k_selection == "fixed":
        k = max(1, min(cfg.k_fixed, k_max))
    else:
        k_min = max(1, min(cfg.k_min, k_max))
        gaps = np.diff(evals[: k_max + 1])  # gaps[i] = lambda_{i+1} - lambda_i; k clusters ↔ gap after k-1
        k = int(k_min + np.argmax(gaps[k_min - 1: k_max])) if k_max >= k_min else k_min
    ids = cluster_embedding(evecs, k, cfg.kmeans_restarts) if k > 1 else np.zeros(n, dtype=int)
    segments = _merge_short(_runs(ids), vectors, min_units)
    curve = novelty(vectors, cfg.novelty_half_units)
    segments = _refine(segments, curve, cfg.refine_units, min_units)
    contrast = _contrast_fn(vectors)
    if cfg.prune_weak:
        segments = _prune_weak(segments, contrast, cfg.contrast_threshold)
    protected: set[int] = set()
    if cfg.stripes:
        # Without the delay embedding: a unit's vector must not depend on what follows the passage.
        plain = _unit_vectors(chroma_b, mfcc_b, cfg.model_copy(update={"chroma_embed_units": 1}))
        stripe_units = max(2, int(np.ceil(cfg.stripe_min_bars / group)))
        segments, protected = _add_stripe_cuts(segments, plain, cfg, min_units, stripe_units)
    if cfg.contrast_split:
        segments = _split_contrast(segments, contrast, cfg.contrast_threshold, min_units)
        if cfg.prune_weak:  # a split may leave a misplaced clustering boundary with nothing to divide
            segments = _prune_weak(segments, contrast, cfg.contrast_threshold, protected)
    return segments


def repetition_stripes(vectors: np.ndarray, similarity: float, min_units: int, max_gap: int = 1
                       ) -> list[tuple[int, int, int]]:
    """Runs (start, end, lag) of units i in [start, end) that unit i + lag repeats (cosine >= similarity),
    at least `min_units` long; gaps of up to `max_gap` units inside a run are bridged."""
    n = len(vectors)
    sim = vectors @ vectors.T
    out = []
    for lag in range(min_units, n - min_units + 1):
        diag = np.diagonal(sim, offset=lag) >= similarity
        i, m = 0, len(diag)
        while i < m:
            if not diag[i]:
                i += 1
                continue
            j, last = i, i
            while j < m and (diag[j] or (j - last) <= max_gap):
                if diag[j]:
                    last = j
                j += 1
            if last + 1 - i >= min_units:
                out.append((i, last + 1, lag))
            i = last + 1
    return out


def _add_stripe_cuts(segments: list[list[int]], vectors: np.ndarray, cfg: FormConfig, min_units: int,
                     stripe_units: int) -> tuple[list[list[int]], set[int]]:
    """Where a passage is repeated (a stripe of the self-similarity), both copies start and end at
    section boundaries: stripe ends are added as boundaries, or replace a clustering boundary
    within `refine_units` (the stripe's end is where the repetition provably stops). Also returns
    the boundaries that came from stripes."""
    n = segments[-1][1]
    counts: dict[int, int] = {}
    for start, end, lag in repetition_stripes(vectors, cfg.stripe_similarity, stripe_units):
        if lag < end - start:
            continue  # the copies overlap: a loop inside a section, not two sections
        for t in (start, end, start + lag, end + lag):
            if min_units <= t <= n - min_units:
                counts[t] = counts.get(t, 0) + 1
    cuts = {a: False for a, _ in segments[1:]}  # cut -> from a stripe
    for t in sorted(counts, key=lambda t: (-counts[t], t)):
        near = [c for c in cuts if abs(c - t) < min_units]
        if not near:
            cuts[t] = True
        elif all(not cuts[c] for c in near) and len(near) == 1 and abs(near[0] - t) <= cfg.refine_units:
            del cuts[near[0]]
            cuts[t] = True
    starts = [0] + sorted(cuts)
    return [[a, b] for a, b in zip(starts, starts[1:] + [n])], {c for c, stripe in cuts.items() if stripe}


def _contrast_fn(vectors: np.ndarray):
    """contrast(a, t, b): the mean inner similarity of [a, t) and [t, b) minus their cross similarity
    (cosine units; about 0 inside a section, clearly positive between unlike sections). Block sums
    of the self-similarity come from its integral image, so each call is O(1)."""
    sim = vectors @ vectors.T
    integral = np.zeros((len(sim) + 1, len(sim) + 1))
    integral[1:, 1:] = sim.cumsum(axis=0).cumsum(axis=1)

    def block(r0: int, r1: int, c0: int, c1: int) -> float:
        return float(integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0])

    def inner(a: int, b: int) -> float:  # mean similarity of distinct units of [a, b)
        n = b - a
        return (block(a, b, a, b) - n) / max(n * (n - 1), 1)

    def contrast(a: int, t: int, b: int) -> float:
        return 0.5 * (inner(a, t) + inner(t, b)) - block(a, t, t, b) / ((t - a) * (b - t))

    return contrast


def _split_contrast(segments: list[list[int]], contrast, threshold: float, min_units: int) -> list[list[int]]:
    """Split a segment where its two parts are least alike, when their contrast exceeds `threshold`,
    again and again (the clustering may lump a short intro with the verse)."""
    out: list[list[int]] = []
    todo = [list(s) for s in segments]
    while todo:
        a, b = todo.pop(0)
        best, best_t = threshold, None
        for t in range(a + min_units, b - min_units + 1):
            c = contrast(a, t, b)
            if c > best:
                best, best_t = c, t
        if best_t is None:
            out.append([a, b])
        else:
            todo[:0] = [[a, best_t], [best_t, b]]
    return out


def _prune_weak(segments: list[list[int]], contrast, threshold: float, protected: set[int] = frozenset()
                ) -> list[list[int]]:
    """Drop, weakest first, the boundaries (but not the `protected` ones) whose two sides do not
    contrast by `threshold` (the clustering may cut a long chorus whose every copy is identical
    into sub-blocks)."""
    cuts = [a for a, _ in segments[1:]]
    end = segments[-1][1]
    while cuts:
        edges = [0] + cuts + [end]
        scores = [np.inf if cuts[i] in protected else contrast(edges[i], edges[i + 1], edges[i + 2])
                  for i in range(len(cuts))]
        i = int(np.argmin(scores))
        if scores[i] >= threshold:
            break
        del cuts[i]
    starts = [0] + cuts
    return [[a, b] for a, b in zip(starts, cuts + [end])]


def _merge_short(runs: list[list[int]], vectors: np.ndarray, min_units: int) -> list[list[int]]:
    """Merge the shortest run under `min_units` into the neighbour it resembles more, until none is left."""
    runs = [list(r[:2]) for r in runs]
    while len(runs) > 1:
        lengths = [b - a for a, b in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_units:
            break
        mean = vectors[runs[i][0]: runs[i][1]].mean(axis=0)
        score = []
        for j in (i - 1, i + 1):
            if 0 <= j < len(runs):
                other = vectors[runs[j][0]: runs[j][1]].mean(axis=0)
                score.append((float(mean @ other) / max(np.linalg.norm(mean) * np.linalg.norm(other), 1e-12), j))
        _, j = max(score)
        lo, hi = min(i, j), max(i, j)
        runs[lo: hi + 1] = [[runs[lo][0], runs[hi][1]]]
    return runs


def _aligned_similarity(vectors: np.ndarray, a: tuple[int, int], b: tuple[int, int], max_shift: int = 0) -> float:
    """Mean cosine similarity of unit i of span a with unit i + s of span b over their overlap,
    best over shifts |s| <= max_shift (a boundary may sit a bar early or late)."""
    best = -1.0
    for shift in range(-max_shift, max_shift + 1):
        i0 = max(0, -shift)  # unit i of a meets unit i + shift of b, both inside their spans
        i1 = min(a[1] - a[0], b[1] - b[0] - shift)
        if i1 - i0 < max(1, (min(a[1] - a[0], b[1] - b[0]) + 1) // 2):
            continue
        x = vectors[a[0] + i0: a[0] + i1]
        y = vectors[b[0] + i0 + shift: b[0] + i1 + shift]
        best = max(best, float(np.mean(np.sum(x * y, axis=1))))
    return best


def novelty(vectors: np.ndarray, half: int) -> np.ndarray:
    """Foote's checkerboard novelty of the units' self-similarity: value i is for a boundary before unit i."""
    n = len(vectors)
    out = np.zeros(n + 1)
    if n < 2 or half < 1:
        return out
    offsets = np.arange(-half, half) + 0.5
    taper = np.exp(-0.5 * (offsets / max(half * 0.5, 1e-9)) ** 2)
    kernel = np.outer(taper, taper) * np.outer(np.sign(offsets), np.sign(offsets))
    padded = np.pad(vectors, ((half, half), (0, 0)), mode="edge")
    for i in range(1, n):
        block = padded[i: i + 2 * half]
        out[i] = float(np.sum((block @ block.T) * kernel))
    return out


def _refine(segments: list[list[int]], curve: np.ndarray, radius: int, min_units: int) -> list[list[int]]:
    """Move each interior boundary to the novelty peak within `radius` units, keeping order and length."""
    if radius < 1 or len(segments) < 2:
        return segments
    cuts = [a for a, _ in segments[1:]]
    end = segments[-1][1]
    for j, cut in enumerate(cuts):
        lo = max(cuts[j - 1] + min_units if j else min_units, cut - radius)
        hi = min(cuts[j + 1] - min_units if j + 1 < len(cuts) else end - min_units, cut + radius)
        if lo <= hi:
            window = curve[lo: hi + 1]
            cuts[j] = lo + int(np.argmax(window)) if window.max() > curve[cut] else cut
    starts = [0] + cuts
    return [[a, b] for a, b in zip(starts, cuts + [end])]


def _split_repeats(segments: list[list[int]], vectors: np.ndarray, cfg: FormConfig, min_part: int
                   ) -> list[list[int]]:
    """A segment that is its first `p` units played again (p >= min_part) is cut every p units; the
    longest such p is taken, so a section with a repeating 4-bar progression is not cut into halves."""
    out = []
    for a, b in segments:
        n = b - a
        cut = None
        for p in range(n // 2, min_part - 1, -1):
            if n % p and n - (n // p) * p >= min_part:
                continue  # the last part would be a sliver; repeats come whole
            reps = n // p
            sims = [_aligned_similarity(vectors, (a, a + p), (a + r * p, min(b, a + (r + 1) * p)))
                    for r in range(1, reps)]
            if sims and min(sims) >= cfg.split_similarity:
                cut = p
                break
        if cut is None:
            out.append([a, b])
            continue
        starts = list(range(a, b, cut))
        if b - starts[-1] < min_part and len(starts) > 1:
            starts.pop()
        out += [[s, e] for s, e in zip(starts, starts[1:] + [b])]
    return out


def _label_segments(segments: list[list[int]], vectors: np.ndarray, cfg: FormConfig) -> list[str]:
    """Letters in order of first appearance; a segment takes the letter of the first earlier segment
    it repeats (aligned-bar similarity >= repeat_similarity, comparable lengths)."""
    labels: list[int] = []
    for i, (a, b) in enumerate(segments):
        best, best_sim = None, cfg.repeat_similarity
        for j in range(i):
            c, d = segments[j]
            if min(b - a, d - c) < 0.5 * max(b - a, d - c):
                continue
            sim = _aligned_similarity(vectors, (a, b), (c, d), cfg.label_max_shift_units)
            if sim >= best_sim:
                best, best_sim = labels[j], sim
        labels.append(best if best is not None else (max(labels) + 1 if labels else 0))
    return [letter(x) for x in labels]


def letter(i: int) -> str:
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(ord("A") + r) + out
    return out


# ------------------------------------------------------------------ names


def _name_sections(sections: list[dict[str, Any]], segments: list[list[int]], loud: np.ndarray, group: int,
                   cfg: FormConfig) -> None:
    """Guess intro/verse/chorus/bridge/outro from repetition, position and loudness (in place).

    Rules: a first (last) section whose label occurs once, short enough, is the intro (outro),
    confidently only when the song's body repeats. In the body, a song opening A A (AABA) or with
    one repeated label has verses (A) and bridges (the rest); otherwise the loudest repeated label
    is the chorus (confidence grows with its loudness lead), the earliest other repeated label the
    verse, and labels between the first and last chorus the bridge."""
    n = len(sections)
    labels = [s["label"] for s in sections]
    counts = {lab: labels.count(lab) for lab in labels}
    level = {lab: float(np.mean(np.concatenate([loud[a:b] for (a, b), x in zip(segments, labels) if x == lab])))
             for lab in counts}
    bars = [(b - a) * group for a, b in segments]
    guesses: dict[int, tuple[str, float]] = {}
    body = list(range(n))
    repeats = any(c > 1 for c in counts.values())
    median_level = float(np.median([level[lab] for lab in labels]))

    def quietest_ok(i: int) -> bool:
        return level[labels[i]] < median_level

    if n >= 3 and counts[labels[0]] == 1 and bars[0] <= cfg.intro_max_bars:
        guesses[0] = ("intro", (0.6 if repeats else 0.25) + (0.2 if quietest_ok(0) else 0.0))
        body.remove(0)
    if n >= 3 and counts[labels[-1]] == 1 and bars[-1] <= cfg.outro_max_bars:
        guesses[n - 1] = ("outro", (0.6 if repeats else 0.25) + (0.2 if quietest_ok(n - 1) else 0.0))
        body.remove(n - 1)
    repeated = [lab for lab in dict.fromkeys(labels[i] for i in body) if counts[lab] > 1]
    if repeated:
        first = {lab: labels.index(lab) for lab in repeated}
        opening = body[0]
        aaba = (len(body) > 1 and labels[opening] == labels[body[1]] and counts[labels[opening]] >= 3)
        if aaba or len(repeated) == 1:
            verse = labels[opening] if aaba else repeated[0]
            for i in body:
                if labels[i] == verse:
                    guesses[i] = ("verse", 0.7 if aaba else 0.6)
                elif first[verse] < i:
                    guesses[i] = ("bridge", 0.6 if counts[labels[i]] == 1 or aaba else 0.4)
        else:
            # The chorus is loud and comes back most: loudness plus a bonus per occurrence.
            score = {lab: level[lab] + cfg.chorus_count_bonus_db * counts[lab] for lab in repeated}
            by_score = sorted(repeated, key=lambda lab: -score[lab])
            chorus = by_score[0]
            margin = score[chorus] - score[by_score[1]]
            conf = 0.5 + 0.4 * min(1.0, max(0.0, margin) / max(cfg.chorus_margin_db, 1e-9))
            conf += 0.1 if counts[chorus] == max(counts[lab] for lab in repeated) else 0.0
            verse = min((lab for lab in repeated if lab != chorus), key=lambda lab: first[lab])
            verse_conf = 0.8 if first[verse] < first[chorus] else 0.5
            chorus_at = [i for i in body if labels[i] == chorus]
            for i in body:
                if labels[i] == chorus:
                    guesses[i] = ("chorus", conf)
                elif labels[i] == verse:
                    guesses[i] = ("verse", verse_conf)
                elif chorus_at[0] < i < chorus_at[-1]:
                    guesses[i] = ("bridge", 0.6 if counts[labels[i]] == 1 else 0.5)
    for i, (name, conf) in guesses.items():
        if conf >= cfg.name_min_confidence:
            sections[i]["name"] = name
            sections[i]["confidence"] = round(float(min(conf, 1.0)), 3)
