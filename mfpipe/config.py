"""The base of every config section: strict keys, every field documented.

A tool's settings live with the tool (`mfpipe.backends.llm.LlmConfig`,
`mfpipe.mir.config.MirSettings`, ...); a stage's section is declared beside the
stage; `mfpipe.pipeline.config` assembles the one YAML document users write from
the registered stages. Every field carries `Field(description=...)`:
`mfpipe config show --docs` prints them next to the values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from .gpumemory import GpuMemory


class Section(BaseModel):
    """A config section: unknown keys are errors that name the field."""

    model_config = ConfigDict(extra="forbid")

    def gpu_memory_estimate(self) -> GpuMemory | None:
        """GPU memory one worker configured by this section needs (its models and working memory), when
        the section knows its models; None: unknown (the run's plan uses the declared GPU share)."""
        return None
