"""The decision store (append-only, atomic per decision, two reviewers, fsspec), item keys and hashes,
which decision counts, and what a decision may hold."""

from __future__ import annotations

import threading
import uuid

import pyarrow.parquet as pq
import pytest

from mfpipe.review.decisions import DecisionStore, ReviewError, new_decision, resolve
from mfpipe.review.items import Item, chain_items, synthesize_items, text_sha256
from mfpipe.store import OutputStore
from mfpipe.thinktext import render

SID = "ab" * 32


def _qa(answer: str = "C major", options: tuple[str, ...] = ("C major", "D minor")) -> Item:
    return Item(f"{SID}:qa:1", SID, "qa", "harmony_theory", "Which key?", answer, options, 1)


def _caption(text: str = "A waltz in 3/4.") -> Item:
    return Item(f"{SID}:caption", SID, "caption", "caption", "", text)


def test_keys_are_the_export_ids_and_hashes_follow_the_text():
    synth = {"song_id": SID, "caption": "A waltz.", "qa": [
        {"skill": "temporal", "question": "When?", "answer": "At 0:30.", "options": []},
        {"skill": "harmony_theory", "question": "Which key?", "answer": "C major", "options": ["C major", "D minor"]}]}
    items = synthesize_items(synth)
    assert [i.key for i in items] == [f"{SID}:caption", f"{SID}:qa:0", f"{SID}:qa:1"]
    again = synthesize_items({**synth, "qa": [dict(q) for q in synth["qa"]]})
    assert [i.sha256 for i in items] == [i.sha256 for i in again]  # a rerun with the same text: same hashes
    regenerated = synthesize_items({**synth, "qa": [synth["qa"][0], {**synth["qa"][1], "answer": "D minor"}]})
    assert regenerated[2].sha256 != items[2].sha256 and regenerated[1].sha256 == items[1].sha256
    assert _qa(options=("C major", "G major")).sha256 != _qa().sha256  # the options are part of what is judged
    # The caption's hash is its text alone (export's instruction is not part of what a person judged).
    assert text_sha256("caption", "A waltz.", "Describe the song.") == text_sha256("caption", "A waltz.")
    think = {"song_id": SID, "chains": [{"qa_index": 3, "skill": "temporal", "question": "Q", "text": "t"},
                                        {"qa_index": None, "skill": "temporal", "question": "Q", "text": "t"}]}
    assert [c.key for c in chain_items(think)] == [f"{SID}:think:3", f"{SID}:think:c1"]


def test_store_is_append_only_and_each_decision_atomic(tmp_path, monkeypatch):
    store = OutputStore(tmp_path / "out")
    decisions = DecisionStore(store)
    first = decisions.record(new_decision("alice", _caption(), "keep"))
    before = open(first, "rb").read()
    second = decisions.record(new_decision("alice", _caption(), "drop", reason="wrong fact"))
    assert first != second and open(first, "rb").read() == before  # nothing rewritten
    fresh = DecisionStore(store).load()  # another reader sees both, oldest first
    assert [d["action"] for d in fresh] == ["keep", "drop"] and fresh[1]["reason"] == "wrong fact"
    assert pq.read_table(second).num_rows == 1

    # A writer that dies half-way through a shard leaves nothing a reader takes for a decision.
    import mfpipe.store as store_module

    real_write = store_module.pq.write_table

    def dies_midway(table, where, **kw):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a shard")
        raise OSError("disk full")

    monkeypatch.setattr(store_module.pq, "write_table", dies_midway)
    with pytest.raises(OSError):
        decisions.record(new_decision("alice", _caption(), "edit", edit={"text": "A waltz in 3/4 time."}))
    monkeypatch.setattr(store_module.pq, "write_table", real_write)
    assert len(DecisionStore(store).load()) == 2
    folder = tmp_path / "out" / "reviews" / "decisions"
    assert sorted(p.name.startswith(".tmp-") for p in folder.iterdir()) == [False, False]  # not even a temporary


def test_two_reviewers_writing_at_once_both_kept(tmp_path):
    store = OutputStore(tmp_path / "out")
    alice, bob = DecisionStore(store), DecisionStore(OutputStore(tmp_path / "out"))

    def review(who: DecisionStore, name: str, action: str) -> None:
        for _ in range(15):
            who.record(new_decision(name, _qa(), action))

    threads = [threading.Thread(target=review, args=(alice, "alice", "keep")),
               threading.Thread(target=review, args=(bob, "bob", "drop"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = DecisionStore(store).load()
    assert len(everything) == 30 and len({d["id"] for d in everything}) == 30
    assert len(alice.load()) == 30  # each sees the other's decisions too
    review_of = resolve(everything, {_qa().key: _qa().sha256})[_qa().key]
    assert set(review_of.by_reviewer) == {"alice", "bob"}
    assert review_of.current is everything[-1]  # the latest decision counts, whoever made it


def test_object_store_decisions_count_once_committed():
    store = OutputStore(f"memory://review-{uuid.uuid4().hex[:8]}/out")
    decisions = DecisionStore(store)
    path = decisions.record(new_decision("alice", _caption(), "keep"))
    name = path.rsplit("/", 1)[1]
    assert store.fs.exists(f"{decisions.directory}/_committed/{name}.json")
    # A shard whose commit record never came (the writer died between the two PUTs) is not a decision.
    store.fs.pipe_file(f"{decisions.directory}/part-29990101T000000000000-dead.parquet", store.fs.cat_file(path))
    assert [d["action"] for d in DecisionStore(store).load()] == ["keep"]


def test_the_latest_fresh_decision_counts_and_older_texts_are_stale():
    old, new = _qa(answer="C major"), _qa(answer="D minor")
    d1 = new_decision("alice", old, "drop").model_dump()
    d2 = new_decision("bob", new, "keep").model_dump()
    d3 = new_decision("alice", new, "edit", edit={"question": "Which key?", "answer": "D minor",
                                                  "options": ["C major", "D minor"]}).model_dump()
    review = resolve([d1, d2, d3], {new.key: new.sha256})[new.key]
    assert review.current is d3 and review.state == "edit"
    assert review.stale == [d1]  # alice's drop judged the older text: shown, not applied
    assert review.by_reviewer == {"bob": d2, "alice": d3}
    only_old = resolve([d1], {new.key: new.sha256})[new.key]
    assert only_old.current is None and only_old.state == "stale"
    assert resolve([d1], {"someone-else:caption": "x"}) == {}  # decisions on other items are not mixed in


def test_what_a_decision_may_hold():
    with pytest.raises(ReviewError, match="one of its options"):
        new_decision("alice", _qa(), "edit", edit={"question": "Which key?", "answer": "E minor",
                                                    "options": ["C major", "D minor"]})
    with pytest.raises(ReviewError, match="open question has no options"):
        new_decision("alice", Item(f"{SID}:qa:0", SID, "qa", "temporal", "When?", "At 0:30."), "edit",
                     edit={"question": "When?", "answer": "At 0:31.", "options": ["a", "b"]})
    with pytest.raises(ReviewError, match="empty"):
        new_decision("alice", _caption(), "edit", edit={"text": "   "})
    with pytest.raises(ReviewError, match="unknown reason"):
        new_decision("alice", _caption(), "drop", reason="I felt like it")
    with pytest.raises(ReviewError, match="has changed"):
        new_decision("alice", _caption(), "keep", text_sha256=_caption("another text").sha256)
    with pytest.raises(ReviewError, match="reviewer"):
        new_decision(" ", _caption(), "keep")
    chain = Item(f"{SID}:think:3", SID, "chain", "temporal", "Q?", render(["a"], "b"), (), 3)
    with pytest.raises(ReviewError, match="think"):
        new_decision("alice", chain, "edit", edit={"text": "no tags at all"})
    loose = "<think>step one\n\n step two </think> <answer>C</answer>"
    edited = new_decision("alice", chain, "edit", edit={"text": loose})
    assert edited.edit.text == render(["step one", "step two"], "C")  # stored in the training layout
    assert edited.text_sha256 == chain.sha256 and edited.item == chain.key and edited.kind == "chain"
