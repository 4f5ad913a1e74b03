"""The hallucination guard's rules, one at a time (pure Python, fast)."""

from __future__ import annotations

import time

from mfpipe.lyrics.guard import GuardConfig, guard_words, normalize


def W(text, start, end=None):
    return {"word": text, "start": start, "end": start + 0.25 if end is None else end}


def line(text, start, step=0.3):
    return [W(t, start + k * step) for k, t in enumerate(text.split())]


def kept(result):
    return " ".join(w["word"] for w in result.words)


def rules(result):
    return [r["rule"] for r in result.removed]


def test_words_outside_regions_are_dropped_with_a_reason():
    words = line("hello there", 1.0) + line("ghost words", 20.0)
    res = guard_words(words, [{"start": 0.8, "end": 2.0}])
    assert kept(res) == "hello there"
    assert res.removed == [{"rule": "outside_regions", "text": "ghost words", "start": 20.0, "end": 20.55,
                            "words": 2, "region": None}]


def test_no_regions_means_everything_is_outside_and_none_means_no_vad():
    words = line("a b c", 1.0)
    assert guard_words(words, []).words == []
    assert len(guard_words(words, None).words) == 3


def test_region_tolerance_keeps_a_word_at_the_edge():
    words = [W("edge", 2.1, 2.4)]
    assert guard_words(words, [{"start": 0.0, "end": 2.0}], GuardConfig(region_tolerance_s=0.3)).words == words
    assert guard_words(words, [{"start": 0.0, "end": 2.0}], GuardConfig(region_tolerance_s=0.0)).words == []


def test_ngram_loop_inside_one_region_keeps_the_first_copy():
    words = line("I love you " * 6, 1.0)
    res = guard_words(words, [{"start": 0.0, "end": 30.0}])
    assert kept(res) == "I love you"
    assert rules(res) == ["loop"] and res.removed[0]["words"] == 15


def test_unigram_loop_needs_more_repeats_than_la_la_la():
    la = line("la la la la la", 1.0)
    assert len(guard_words(la, None).words) == 5
    se = line("sé " * 13, 1.0, step=0.15)
    res = guard_words(se, None)
    assert kept(res) == "sé" and rules(res) == ["loop"]


def test_a_chorus_repeated_across_regions_is_not_a_loop():
    chorus = "carry me home tonight"
    words, regions = [], []
    for k in range(5):  # five choruses, 20 s apart, each its own vocal region
        t0 = 10.0 + 20.0 * k
        words += line(chorus, t0)
        regions.append({"start": t0 - 0.2, "end": t0 + 1.5})
    res = guard_words(words, regions)
    assert len(res.words) == len(words) and res.removed == []


def test_a_line_repeated_after_a_long_pause_in_one_region_is_not_a_loop():
    words = []
    for k in range(5):
        words += line("oh my love", 1.0 + 4.0 * k)  # 3 s of silence between copies
    res = guard_words(words, [{"start": 0.0, "end": 30.0}], GuardConfig(loop_max_gap_s=2.0))
    assert len(res.words) == 15


def test_a_line_sung_twice_in_a_row_is_kept():
    words = line("hold on hold on", 1.0)
    assert len(guard_words(words, None).words) == 4


def test_filler_phrases_prefixes_and_lonely_you():
    regions = [{"start": 0, "end": 5}, {"start": 10, "end": 15}, {"start": 20, "end": 25}]
    words = (line("Thank you for watching!", 1.0) + line("Subtitles by the Amara.org community", 11.0)
             + line("you", 21.0))
    res = guard_words(words, regions)
    assert res.words == []
    assert rules(res) == ["filler", "filler", "filler"]
    assert res.removed[1]["text"] == "Subtitles by the Amara.org community"


def test_you_inside_a_real_line_is_kept():
    words = line("I will follow you", 1.0)
    assert len(guard_words(words, [{"start": 0, "end": 5}]).words) == 4


def test_filler_list_is_config():
    words = line("buy my album", 1.0)
    cfg = GuardConfig(filler_phrases=["buy my album"])
    assert guard_words(words, None, cfg).words == []
    assert len(guard_words(words, None).words) == 3


def test_non_lexical_tokens():
    words = [W("[Music]", 1.0), W("♪", 2.0), W("(applause)", 3.0), W("real", 4.0)]
    res = guard_words(words, None)
    assert kept(res) == "real"
    assert set(rules(res)) == {"non_lexical"}


def test_long_word_and_word_rate():
    res = guard_words([W("ok", 1.0), W("stretched", 2.0, 12.0)], None)
    assert kept(res) == "ok" and rules(res) == ["long_word"]
    burst = [W(f"w{k}", 5.0 + 0.05 * k, 5.04 + 0.05 * k) for k in range(20)]  # 20 words in 1 s
    regions = [{"start": 0.0, "end": 3.0}, {"start": 4.5, "end": 7.0}]
    res = guard_words(line("a real line", 1.0) + burst, regions)
    assert kept(res) == "a real line"
    assert rules(res) == ["word_rate"] and res.removed[0]["words"] == 20


def test_flag_only_keeps_words_but_reports_them():
    words = line("Thank you for watching", 1.0)
    res = guard_words(words, None, GuardConfig(flag_only=["filler"]))
    assert len(res.words) == 4 and res.removed == []
    assert res.flagged[0]["rule"] == "filler"


def test_disabled_guard_passes_everything():
    words = line("you", 50.0)
    assert guard_words(words, [], GuardConfig(enabled=False)).words == words


def test_objects_with_attributes_work_too():
    from mfpipe.backends.asr import WordStamp

    words = [WordStamp("hello", 1.0, 1.3), WordStamp("gone", 9.0, 9.2)]
    res = guard_words(words, [{"start": 0.5, "end": 2.0}])
    assert res.words == [words[0]]


def test_normalize():
    assert normalize("Thank-You, WORLD!") == "thank you world"
    assert normalize("don’t") == "don't"


def test_fast_on_a_long_song():
    words = []
    for k in range(600):  # ~3000 words, a loop in every tenth line
        text = "na " * 10 if k % 10 == 0 else "the river knows my name"
        words += line(text, 2.0 * k, step=0.15)
    regions = [{"start": 2.0 * k - 0.1, "end": 2.0 * k + 1.6} for k in range(600)]
    t = time.perf_counter()
    res = guard_words(words, regions)
    assert time.perf_counter() - t < 2.0
    assert res.counts["loop"] == 60 * 9
