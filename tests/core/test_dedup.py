"""Near-duplicate groups and evaluation-clip containment on rendered songs (mfpipe.dedup)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from mfpipe.dedup import ClipMatchSettings, ClipScreen, Copy, NearDuplicates, NearDuplicateSettings, Song
from mfpipe.fingerprint import fingerprint_source
from mfpipe.schemas import RunInfo
from mfpipe.screening import load_exclusions
from mfpipe.store import OutputStore
from support import fingerprint_synth


@pytest.fixture(scope="module")
def songs(screening_songs) -> dict[str, Song]:
    """Every input of the screening folder as the deciders see it, by file name."""
    out = {}
    for path in sorted(screening_songs.folder.iterdir()):
        (fp,), scan = fingerprint_source(str(path))
        out[path.name] = Song(path.name, fp, Copy(scan.format, scan.subtype, os.path.getsize(path), scan.duration_s))
    return out


def _groups(near: NearDuplicates, decisions) -> list[set[str]]:
    """Groups from the decisions: each song with the song it was decided against, joined."""
    parent = {d.song: d.song for d in decisions}

    def root(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for d in decisions:
        if d.other is not None:
            parent[root(d.song)] = root(d.other)
    found: dict[str, set[str]] = {}
    for d in decisions:
        found.setdefault(root(d.song), set()).add(d.song)
    return sorted(found.values(), key=sorted)


def _decide(songs: dict[str, Song], order: list[str], **settings):
    near = NearDuplicates(NearDuplicateSettings(**settings))
    decisions = [near.decide(songs[name]) for name in order]
    return near, decisions


def test_copies_of_one_recording_are_one_group_and_the_original_is_kept(songs, screening_songs):
    near, decisions = _decide(songs, sorted(songs))  # copies arrive before the original
    group = {p.name for p in screening_songs.group}
    assert _groups(near, decisions) == sorted([group] + [{p.name} for p in screening_songs.unrelated.values()],
                                              key=sorted)
    # Lossless beats the MP3, 705 kbit/s the FLAC and the 22.05 kHz WAV, 31 s the trimmed copy.
    assert {s.key for s in near.kept.values()} == {screening_songs.original.name} | {
        p.name for p in screening_songs.unrelated.values()}
    for d in decisions:
        if d.other is not None:
            assert d.alignment.ber < 0.04, d


def test_two_arrangements_of_one_progression_are_not_copies(songs, screening_songs):
    """The same chords, key and tempo in other arrangements: close (BER ~0.12-0.19), but not one recording."""
    from mfpipe.fingerprint import align_exhaustive

    original = songs[screening_songs.original.name].fingerprint
    for path in screening_songs.unrelated.values():
        other = songs[path.name].fingerprint
        best = align_exhaustive(original, other, int(0.5 * max(len(original), len(other))))
        assert best.ber > NearDuplicateSettings().max_ber + 0.03, (path.name, best)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arrival_order_does_not_change_groups_or_what_is_kept(songs, seed):
    first, decisions = _decide(songs, sorted(songs))
    order = list(np.random.default_rng(seed).permutation(sorted(songs)))
    again, redone = _decide(songs, order)
    assert _groups(again, redone) == _groups(first, decisions)
    assert {s.key for s in again.kept.values()} == {s.key for s in first.kept.values()}


def test_the_keep_order_is_configurable(songs, screening_songs):
    near, _ = _decide(songs, sorted(songs), keep=["first_seen"])
    assert screening_songs.copies["mp3 128k"].name in {s.key for s in near.kept.values()}
    assert screening_songs.original.name not in {s.key for s in near.kept.values()}


def test_the_index_gives_the_groups_all_pairs_give(songs):
    order = sorted(songs)
    indexed, decisions = _decide(songs, order)
    exhaustive = NearDuplicates(NearDuplicateSettings(), exhaustive=True)
    assert [exhaustive.decide(songs[n]) for n in order] == decisions
    # And on a larger synthetic set built from these fingerprints: unrelated songs plus planted copies
    # (bit errors, trims), arriving in random order.
    bases = [s.fingerprint for s in songs.values()]
    made = fingerprint_synth.corpus(bases, 80, copies=0.25, parts=1, seed=7)
    synthetic = [Song(str(i), fp) for i, fp in enumerate(made.prints)]
    by_index = NearDuplicates(NearDuplicateSettings())
    by_pairs = NearDuplicates(NearDuplicateSettings(), exhaustive=True)
    a = [by_index.decide(s) for s in synthetic]
    b = [by_pairs.decide(s) for s in synthetic]
    assert _groups(by_index, a) == _groups(by_pairs, b)
    planted = sorted([{str(c), str(o)} for c, o in made.copy_of.items()] +
                     [{str(i)} for i in range(len(synthetic)) if i not in made.copy_of
                      and i not in made.copy_of.values()], key=sorted)
    assert _groups(by_index, a) == planted


def test_a_clip_from_the_middle_flags_that_song_and_only_it(songs, screening_songs, tmp_path):
    store = OutputStore(tmp_path / "out")
    sets = {"evals": [str(p) for p in screening_songs.clips.iterdir()]}
    exclusions = load_exclusions(store, sets, ClipMatchSettings(), RunInfo(run_id="t", config_hash="t"))
    assert exclusions.sets["evals"] == {"clips": 1, "unreadable": []}
    screen = ClipScreen(ClipMatchSettings(), exclusions.clips)
    flagged = {name for name in [screening_songs.original.name, *(p.name for p in screening_songs.unrelated.values())]
               if screen.contained(songs[name].fingerprint) is not None}
    assert flagged == {screening_songs.original.name}
    found = screen.contained(songs[screening_songs.original.name].fingerprint)
    assert found.start_s == pytest.approx(screening_songs.clip_start_s, abs=0.2)
    assert found.alignment.ber < 0.03
    # Every copy of the recording holds the clip too.
    assert all(screen.contained(songs[p.name].fingerprint) is not None for p in screening_songs.copies.values())
    # Fingerprinted once, by content: the same bytes under another name come from the cache, nothing new is written.
    renamed = tmp_path / "renamed.mp3"
    shutil.copy(next(screening_songs.clips.iterdir()), renamed)
    again = load_exclusions(store, {"evals": [str(renamed)]}, ClipMatchSettings(),
                            RunInfo(run_id="t2", config_hash="t"))
    assert [c.key for c in again.clips] == [c.key for c in exclusions.clips]
    assert len(list((tmp_path / "out" / "_cache" / "exclude").glob("part-*.parquet"))) == 1
