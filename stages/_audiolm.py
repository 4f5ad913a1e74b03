"""The base of the stages that load Music Flamingo on their workers: caption, filter and think.

It owns what they share: the audio-LM and its section (`AudioLMSettings`, in every such stage's
config), the prompt the stage names, the window length, the banner's warning for a random-weight
stand-in, the model's entry in provenance and the tools' versions. A stage adds its own `setup_stage`.
"""

from __future__ import annotations

from typing import ClassVar

from mfpipe import audio
from mfpipe.backends import refs
from mfpipe.backends.audiolm import AudioLMSettings
from mfpipe.pipeline.stage import Stage, StageConfig, StageSettings
from mfpipe.schemas import ToolVersion


class AudioLMStageConfig(AudioLMSettings, StageConfig):
    """A stage section with the audio-LM's settings."""


class AudioLMStage(Stage):
    reads = {"audio": audio.AudioConfig}
    lm_role: ClassVar[str]  # the audio-LM's role in provenance (surface_captioner, judge, step_checker)
    # For the banner when the model is a random-weight stand-in: what the stage does with it, and its output.
    stand_in: ClassVar[tuple[str, str]] = ("uses", "its output is noise")
    extra_tools: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def banner_notes(cls, settings: StageSettings) -> list[str]:
        does, output = cls.stand_in
        return refs.stand_in_notes(settings.own.model, f"{does} a tiny RANDOM-WEIGHT stand-in for Music Flamingo: "
                                   f"{output}, made only to exercise the pipeline")

    def setup(self) -> None:
        from mfpipe.backends.audiolm import AudioLM
        from mfpipe.prompts import load_prompt

        self.window_s = self.shared.audio.window_s
        self.prompt = load_prompt(self.cfg.prompt)
        self.prompt_ref = self.prompt.ref()
        self.lm = AudioLM.from_config(self.cfg)
        self.model_refs = [self.lm.model_ref(self.lm_role)]
        self.setup_stage()

    def setup_stage(self) -> None:
        """What the stage loads beside the audio-LM, and its provenance settings."""

    def tool_versions(self) -> list[ToolVersion]:
        from importlib.metadata import version

        return [ToolVersion(name=n, version=version(n)) for n in ("transformers", "torch", *self.extra_tools)]
