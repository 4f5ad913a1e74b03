"""The export as Audio Flamingo training conversations (the upstream recipe's JSON).

One JSON file per table, a list of entries:

    {"id": "<song_id>:qa:3", "sound": "/data/song.flac", "duration": 212.4,
     "conversations": [
        {"from": "human", "value": "<sound>\\nWhich instrument ...?\\n"
                                   "Choose the correct option from the following options:\\n(A) ...\\n(B) ..."},
        {"from": "gpt", "value": "piano"}]}

- MF-Skills captions: the human turn is the caption instruction (the row's `question`).
- Multiple choice: the options follow the question in the layout Audio Flamingo's own
  benchmarks use; the answer is the option's text.
- MF-Think: the gpt turn is the chain's `<think>…</think><answer>…</answer>` text and the
  human turn ends with the think instruction (prompts/export_think.*).
`<sound>` appears once, at the start of the first human turn.

The files are written next to the Parquet shards of the current export
(`OUT/export/af3/`), so they always belong to one export version; they are
streamed (bounded memory) under a temporary name and renamed when complete.

`sound` is song_id-based, `audio/<song_id><ext>` (relative to the JSON), so it is
unique and stable: two files named `vocals.wav` in different folders stay two
sounds, and a trainer that keys audio by file name cannot mix them up. The audio
goes beside the JSON as `af3/audio/<song_id><ext>` (`audio`): a symbolic link to
the source (`link`, the default; a copy where the source or the JSON folder is
remote), a copy of the file (`copy`), or nothing (`none`: `af3/sounds.tsv` lists
each sound with its source, for the curator to place).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ..audio import local_path

SOUND = "<sound>"
CHOICE_HEADER = "Choose the correct option from the following options:"
LETTERS = "ABCDEF"
COLUMNS = ["id", "song_id", "question", "options", "answer", "song"]
AUDIO_DIR = "audio"
AUDIO_MODES = ("link", "copy", "none")


def question_text(question: str, options: list[str]) -> str:
    if not options:
        return question.strip()
    lines = [question.strip(), CHOICE_HEADER] + [f"({LETTERS[i]}) {o}" for i, o in enumerate(options)]
    return "\n".join(lines)


def split_question(text: str) -> tuple[str, list[str]]:
    """question_text, backwards: (question, options)."""
    if f"\n{CHOICE_HEADER}\n" not in text:
        return text, []
    question, _, rest = text.partition(f"\n{CHOICE_HEADER}\n")
    options = [re.sub(r"^\([A-F]\) ", "", line) for line in rest.split("\n")]
    return question, options


def sound_path(song_id: str, source: str) -> str:
    """The song's `sound`, relative to the JSON: song_id-based, so unique and stable."""
    return f"{AUDIO_DIR}/{song_id}{Path(source).suffix.lower()}"


def _sound(path: str, prefix: tuple[str, str] | None) -> str:
    if prefix and path.startswith(prefix[0]):
        return prefix[1] + path[len(prefix[0]):]
    return path


def entry(row: dict[str, Any], table: str, *, think_instruction: str = "",
          prefix: tuple[str, str] | None = None) -> dict[str, Any]:
    song = row["song"]
    human = question_text(row["question"], row.get("options") or [])
    if table == "mf_think" and think_instruction:
        human = f"{human}\n{think_instruction.strip()}"
    answer = row["text"] if table == "mf_think" else row["answer"]
    sound = _sound(sound_path(row["song_id"], song["source"]), prefix)
    return {"id": row["id"], "sound": sound, "duration": song.get("duration_s"),
            "conversations": [{"from": "human", "value": f"{SOUND}\n{human}"}, {"from": "gpt", "value": answer}]}


def _rows(store, folder: str, table: str) -> Iterator[dict[str, Any]]:
    columns = COLUMNS + (["text"] if table == "mf_think" else [])
    for path in store.shards(folder):
        pf = pq.ParquetFile(store.fs.open(path, "rb"))
        for batch in pf.iter_batches(batch_size=4096, columns=columns):
            yield from batch.to_pylist()


def place_audio(fs, dest: str, song_id: str, source: str, mode: str) -> int:
    """Put one song's audio at <dest>/audio/<song_id><ext> (link or copy); its size in bytes (0: none).
    Raises OSError when the source is gone."""
    if mode == "none":
        return 0
    final = f"{dest}/{sound_path(song_id, source)}"
    src_fs, src_path = fsspec.core.url_to_fs(source)
    size = src_fs.size(src_path)
    if mode == "link" and isinstance(fs, LocalFileSystem) and isinstance(src_fs, LocalFileSystem):
        target = os.path.abspath(local_path(source))
        if not (os.path.islink(final) and os.readlink(final) == target):
            tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
            os.symlink(target, tmp)
            os.replace(tmp, final)  # atomic; a rerun replaces a stale link
        return size
    if fs.exists(final) and not fs.islink(final) and fs.size(final) == size:
        return size  # copied by an earlier run
    tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    with src_fs.open(src_path, "rb") as src, fs.open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    fs.mv(tmp, final)
    return size


def write(store, root: str, dest: str | None = None, *, think_instruction: str = "",
          prefix: tuple[str, str] | None = None, audio: str = "link") -> dict[str, dict[str, Any]]:
    """Write <dest>/<table>.json for both tables of the export at `root`, and the songs' audio beside them
    (`audio`: link, copy or none); returns path and count per table, and what `audio` placed."""
    from .export import TABLES

    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {', '.join(AUDIO_MODES)}, got {audio!r}")
    dest = dest or f"{root}/af3"
    store.fs.makedirs(f"{dest}/{AUDIO_DIR}", exist_ok=True)
    placed: dict[str, str] = {}  # song_id -> sound (one entry per song: small beside the rows)
    audio_bytes = 0
    missing: list[dict[str, str]] = []
    out: dict[str, dict[str, Any]] = {}
    for table in TABLES:
        final = f"{dest}/{table}.json"
        tmp = f"{dest}/.tmp-{uuid.uuid4().hex[:8]}-{table}.json"
        count = 0
        with store.fs.open(tmp, "w", encoding="utf-8") as fh:
            fh.write("[")
            for row in _rows(store, f"{root}/{table}", table):
                if row["song_id"] not in placed:
                    placed[row["song_id"]] = row["song"]["source"]
                    try:
                        audio_bytes += place_audio(store.fs, dest, row["song_id"], row["song"]["source"], audio)
                    except OSError as exc:  # moved or deleted since ingest: the JSON still names it
                        missing.append({"song_id": row["song_id"], "source": row["song"]["source"],
                                        "error": f"{type(exc).__name__}: {exc}"})
                fh.write(",\n" if count else "\n")
                fh.write(json.dumps(entry(row, table, think_instruction=think_instruction, prefix=prefix),
                                    ensure_ascii=False))
                count += 1
            fh.write("\n]\n")
        store.fs.mv(tmp, final)
        out[table] = {"path": final, "entries": count}
    sounds = "".join(f"{sound_path(sid, src)}\t{src}\n" for sid, src in sorted(placed.items()))
    store.fs.pipe_file(f"{dest}/sounds.tsv", f"sound\tsource\n{sounds}".encode())
    out["audio"] = {"path": f"{dest}/{AUDIO_DIR}", "mode": audio, "songs": len(placed), "bytes": audio_bytes,
                    "missing": missing}
    return out


def read(path: str | Path, think_instruction: str = "") -> list[dict[str, Any]]:
    """An AF3 JSON file back as rows: id, sound, duration, question, options, answer."""
    rows = []
    suffix = f"\n{think_instruction.strip()}" if think_instruction.strip() else None
    for item in json.loads(Path(path).read_text(encoding="utf-8")):
        human, gpt = item["conversations"][0]["value"], item["conversations"][1]["value"]
        if not human.startswith(f"{SOUND}\n"):
            raise ValueError(f"{item['id']}: the first human turn does not start with {SOUND}")
        human = human[len(SOUND) + 1:]
        if suffix and human.endswith(suffix):
            human = human[: -len(suffix)]
        question, options = split_question(human)
        rows.append({"id": item["id"], "sound": item["sound"], "duration": item["duration"],
                     "question": question, "options": options, "answer": gpt})
    return rows
