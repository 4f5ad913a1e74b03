"""Data of the filter and MF-Think tests: the example songs with MIR rows from examples/truth.json,
hand-written synthesize rows and statements that are right or wrong against those facts."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from mfpipe.pipeline.config import load_config

EXAMPLES = Path(str(files("mfpipe.examples")))
TRUTH = {song["file"]: song for song in json.loads((EXAMPLES / "truth.json").read_text())}
HARBOR = "harbor_lights.mp3"  # 120 BPM, 4/4, C major, chords C G Am F, 57.5 s (two windows)


def mir_row(song: dict) -> dict:
    """The MIR columns as the runner nests them under row["mir"]."""
    return {"bpm": float(song["bpm"]), "meter": song["meter"], "key": song["key"], "mode": song["mode"],
            "key_strength": 0.8, "chords": song["chord_timeline"], "loudness_lufs": -14.0}


def synth_row(song: dict) -> dict:
    """A synthesize row (nested) whose statements are checkable against the song's MIR facts:
    qa[0] right, qa[1] contradicts the tempo, qa[2] multiple choice, qa[3] a harmony item."""
    bpm, key = song["bpm"], f"{song['key']} {song['mode']}"
    chords = song["chords"]
    return {
        "caption": f"A {song['genre']} piece at {bpm} BPM in {key}, built on the chords "
                   f"{', '.join(chords[:-1])} and {chords[-1]}.",
        "qa": [
            {"skill": "attribute", "question": "What is the tempo?", "answer": f"About {bpm} BPM.", "options": []},
            {"skill": "attribute", "question": "How fast is it?", "answer": f"The tempo is {bpm + 40} BPM.",
             "options": []},
            {"skill": "harmony_theory", "question": "Which key is the song in?", "answer": key,
             "options": [f"{song['key']} {'minor' if song['mode'] == 'major' else 'major'}", key, "F# major",
                         "Bb minor"]},
            {"skill": "comparative_structural", "question": "How does the second half relate to the first?",
             "answer": "It repeats the same progression.", "options": []},
        ],
        "flags": [],
    }

# Statements about harbor_lights.mp3 that its MIR row confirms / contradicts.
RIGHT = ["The tempo is about 120 BPM.", "The song is in the key of C major.", "The song is in 4/4 time.",
         "The progression cycles through the chords C, G, Am and F.", "The drums keep a steady 120 BPM pulse.",
         "The piece stays in C major throughout.", "Each bar has four beats, as in 4/4 time.",
         "An Am chord follows the G chord.", "The tempo of 120 BPM feels moderate.",
         "The music is written in C major."]
WRONG = ["The tempo is 90 BPM.", "The song is in E minor.", "The song is in 3/4 time.",
         "The chords Dm and E7 carry the harmony.", "The song is in C minor."]


def config(*overrides: str):
    return load_config(None, ["profile=cpu", *overrides])


def settle(stage, row: dict, drafts: list[tuple]):
    """Each (item, steps, answer[, kinds]) as a first draft of its own song copy (kinds: observation /
    deduction per step; untagged without); the stage's real check, rule and (where the rule says so)
    rewrite loop; → [(job, song, results)]."""
    songs, jobs = {}, []
    for n, (item, steps, answer, *kinds) in enumerate(drafts):
        song = stage.maker.prepare(row)
        job = stage.maker.job(n, song, item)
        job.steps, job.answer = list(steps), answer
        job.kinds = list(kinds[0]) if kinds else [None] * len(steps)
        song.jobs.append(job)
        songs[n] = song
        jobs.append(job)
    stage.session.run(stage.maker.settle(songs, jobs))
    return [(job, songs[n], stage.results(row, songs[n])) for n, job in enumerate(jobs)]
