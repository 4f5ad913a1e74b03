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
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

SOUND = "<sound>"
CHOICE_HEADER = "Choose the correct option from the following options:"
LETTERS = "ABCDEF"
COLUMNS = ["id", "question", "options", "answer", "song"]


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


def _sound(source: str, prefix: tuple[str, str] | None) -> str:
    if prefix and source.startswith(prefix[0]):
        return prefix[1] + source[len(prefix[0]):]
    return source


def entry(row: dict[str, Any], table: str, *, think_instruction: str = "",
          prefix: tuple[str, str] | None = None) -> dict[str, Any]:
    song = row["song"]
    human = question_text(row["question"], row.get("options") or [])
    if table == "mf_think" and think_instruction:
        human = f"{human}\n{think_instruction.strip()}"
    answer = row["text"] if table == "mf_think" else row["answer"]
    return {"id": row["id"], "sound": _sound(song["source"], prefix), "duration": song.get("duration_s"),
            "conversations": [{"from": "human", "value": f"{SOUND}\n{human}"}, {"from": "gpt", "value": answer}]}


def _rows(store, folder: str, table: str) -> Iterator[dict[str, Any]]:
    columns = COLUMNS + (["text"] if table == "mf_think" else [])
    for path in store.shards(folder):
        pf = pq.ParquetFile(store.fs.open(path, "rb"))
        for batch in pf.iter_batches(batch_size=4096, columns=columns):
            yield from batch.to_pylist()


def write(store, root: str, dest: str | None = None, *, think_instruction: str = "",
          prefix: tuple[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Write <dest>/<table>.json for both tables of the export at `root`; returns path and count per table."""
    from .export import TABLES

    dest = dest or f"{root}/af3"
    store.fs.makedirs(dest, exist_ok=True)
    out = {}
    for table in TABLES:
        final = f"{dest}/{table}.json"
        tmp = f"{dest}/.tmp-{uuid.uuid4().hex[:8]}-{table}.json"
        count = 0
        with store.fs.open(tmp, "w", encoding="utf-8") as fh:
            fh.write("[")
            for row in _rows(store, f"{root}/{table}", table):
                fh.write(",\n" if count else "\n")
                fh.write(json.dumps(entry(row, table, think_instruction=think_instruction, prefix=prefix),
                                    ensure_ascii=False))
                count += 1
            fh.write("\n]\n")
        store.fs.mv(tmp, final)
        out[table] = {"path": final, "entries": count}
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
