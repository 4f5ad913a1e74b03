"""Local models: built once by `mfpipe models prepare`, never downloaded.

The cpu profile's stand-ins (tiny random-weight Music Flamingo and Parakeet, the
scripted judges the gate tests use) and the packaged real weights it serves
(SmolLM2) are made here, apart from the production backends that load them.
Each module of this package registers its builders with
`@preparer(name, profiles=("cpu",))`. A builder gets the models folder and
returns the path it made (and must skip work that is already done). The folder
is `$MFPIPE_MODELS`, else `.cache/models` under the project root (an editable
install), else under the current directory.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Builder = Callable[[Path], Path]
# Beside or inside a built model: what it is, e.g. {"random_weights": true} (read by backends.refs).
MARKER = "mfpipe-model.json"


@dataclass(frozen=True)
class Preparer:
    name: str
    build: Builder
    profiles: tuple[str, ...]
    about: str


_PREPARERS: dict[str, Preparer] = {}


class SourceMissing(FileNotFoundError):
    """A builder's source package is not installed here (e.g. the cpu profile's CTranslate2 Whisper on a
    GPU machine): `prepare` skips that model and says why."""


def preparer(name: str, *, profiles: tuple[str, ...] = ("cpu",), about: str = "") -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        doc_line = (fn.__doc__ or "").strip().split("\n", 1)[0]
        _PREPARERS[name] = Preparer(name, fn, profiles, about or doc_line)
        return fn

    return wrap


def preparers() -> dict[str, Preparer]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return dict(_PREPARERS)


def models_dir() -> Path:
    env = os.environ.get("MFPIPE_MODELS")
    if env:
        return Path(env).expanduser().resolve()
    # The project checkout when installed editable; else the current directory.
    here = Path(__file__).resolve().parents[2]
    root = here if (here / "pyproject.toml").is_file() else Path.cwd()
    return root / ".cache" / "models"


def model_path(name: str) -> Path:
    """Where the builder named `name` puts its model (used by config defaults)."""
    return models_dir() / name


def prepare(profile: str = "cpu", only: list[str] | None = None) -> dict[str, Path | SourceMissing]:
    """Build the models of `profile` (or just `only`): name -> its path, or why it was skipped."""
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path | SourceMissing] = {}
    for name, prep in sorted(preparers().items()):
        if only and name not in only:
            continue
        if profile not in prep.profiles and not only:
            continue
        try:
            made[name] = prep.build(root)
        except SourceMissing as exc:
            made[name] = exc
    return made
