"""Versioned prompt templates, stored as data files in this folder.

A prompt file is named `<id>.v<N>.<ext>` (ext: txt, md, j2): e.g.
`caption_window.v1.txt`. A new wording is a new file with a higher version, so
old rows keep pointing at the exact text that made them. `load_prompt("caption_window")`
gives the highest version; `load_prompt("caption_window.v1")` an exact one. The
sha256 of the file's bytes goes into each row's provenance with id and version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

_EXTENSIONS = (".txt", ".md", ".j2")
_NAME = re.compile(r"^(?P<id>[A-Za-z0-9_\-]+)\.v(?P<version>\d+)(?P<ext>\.[a-z0-9]+)$")


class PromptNotFoundError(LookupError):
    pass


@dataclass(frozen=True)
class Prompt:
    id: str
    version: str  # "v1", "v2", ...
    sha256: str  # of the file's bytes
    text: str

    def render(self, **values: object) -> str:
        """The text with `{name}` fields filled (str.format rules: `{{` is a literal brace)."""
        return self.text.format(**values) if values else self.text

    def ref(self):
        """The prompt as a row's provenance names it (id, version, sha256)."""
        from ..schemas import PromptRef

        return PromptRef(id=self.id, version=self.version, sha256=self.sha256)

    def macros(self) -> Any:
        """A Jinja template's macros as callables (`prompt.macros().system()`); StrictUndefined,
        so a macro that uses a value it was not given fails loudly."""
        return _jinja_module(self.text)

    def has(self, macro: str) -> bool:
        """Whether this version of a Jinja template defines the macro."""
        return hasattr(self.macros(), macro)

    def call(self, macro: str, **values: Any) -> str:
        """A macro rendered with the values it takes (others are left out), trimmed: newer versions
        of a prompt may take more values than older ones, and the stage passes them all."""
        function = getattr(self.macros(), macro)
        return str(function(**{k: v for k, v in values.items() if k in function.arguments})).strip()


@lru_cache(maxsize=32)
def _jinja_module(text: str) -> Any:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    return env.from_string(text).module


def available() -> dict[str, list[str]]:
    """Prompt ids and their versions, oldest first."""
    found: dict[str, list[int]] = {}
    for entry in resources.files(__name__).iterdir():
        match = _NAME.match(entry.name)
        if match and match["ext"] in _EXTENSIONS:
            found.setdefault(match["id"], []).append(int(match["version"]))
    return {pid: [f"v{v}" for v in sorted(vs)] for pid, vs in sorted(found.items())}


@cache
def load_prompt(name: str) -> Prompt:
    """`id` (latest version) or `id.vN` (that version) → the Prompt with its hash."""
    pid, _, version = name.partition(".")
    versions = available().get(pid)
    if not versions:
        raise PromptNotFoundError(f"no prompt named {pid!r}; have {', '.join(available()) or 'none'}")
    version = version or versions[-1]
    if version not in versions:
        raise PromptNotFoundError(f"prompt {pid!r} has no version {version!r}; have {', '.join(versions)}")
    for ext in _EXTENSIONS:
        entry = resources.files(__name__).joinpath(f"{pid}.{version}{ext}")
        if entry.is_file():
            data = entry.read_bytes()
            return Prompt(id=pid, version=version, sha256=hashlib.sha256(data).hexdigest(),
                          text=data.decode("utf-8"))
    raise PromptNotFoundError(f"prompt file for {pid}.{version} vanished")  # pragma: no cover
