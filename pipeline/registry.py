"""Finds the stages and orders them. New stages plug in by existing, not by editing the runner.

A stage is any `Stage` subclass decorated with `@register` in a module of
`mfpipe.stages` (imported here on first use) or exposed through the
`mfpipe.stages` entry-point group by another distribution.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from .stage import INPUTS, Stage

# The order the CLI lists stages in, and the tie-break when the DAG allows several.
CANONICAL = ("ingest", "caption", "mir", "lyrics", "synthesize", "filter", "think", "export")

_REGISTRY: dict[str, type[Stage]] = {}
_loaded = False


class StageError(ValueError):
    pass


def register(cls: type[Stage]) -> type[Stage]:
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise StageError(f"two stages are named {cls.name!r}: {existing.__module__} and {cls.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def stages() -> dict[str, type[Stage]]:
    global _loaded
    if not _loaded:
        package = importlib.import_module("mfpipe.stages")
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"mfpipe.stages.{info.name}")
        for ep in entry_points(group="mfpipe.stages"):
            register(ep.load())
        _loaded = True
    return dict(_REGISTRY)


def _rank(name: str) -> tuple[int, str]:
    return (CANONICAL.index(name), name) if name in CANONICAL else (len(CANONICAL), name)


def topological(names: set[str]) -> list[str]:
    """Stages in dependency order (requires and uses), canonical order among equals."""
    registry = stages()
    order: list[str] = []
    pending = set(names)
    while pending:
        ready = sorted(
            (n for n in pending if not (set(registry[n].upstream()) & pending)),
            key=_rank,
        )
        if not ready:
            raise StageError(f"stage dependencies form a cycle among {sorted(pending)}")
        order.append(ready[0])
        pending.remove(ready[0])
    return order


def plan(requested: str) -> list[str]:
    """The stages a `--stage` value runs: `all`, or one stage plus the stages it requires.

    Required upstream stages always run first: when their work is done, resume
    makes them a quick no-op; when new songs arrived, they catch up so the
    requested stage covers every song.
    """
    registry = stages()
    if requested == "all":
        return topological(set(registry))
    if requested not in registry:
        if requested in CANONICAL:
            raise StageError(f"stage {requested!r} is not available in this version of mfpipe")
        raise StageError(f"unknown stage {requested!r}; choose from {', '.join(available())}, all")
    needed: set[str] = set()
    todo = [requested]
    while todo:
        name = todo.pop()
        if name in needed or name == INPUTS:
            continue
        if name not in registry:
            raise StageError(f"stage {requested!r} requires {name!r}, which is not available")
        needed.add(name)
        todo.extend(registry[name].requires)
    return topological(needed)


def available() -> list[str]:
    return sorted(stages(), key=_rank)
