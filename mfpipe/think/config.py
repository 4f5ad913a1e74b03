"""MF-Think's settings: which items get chains, how long chains are, the rule, and how steps are checked."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..config import Section
from ..lint import GateConfig
from ..schemas.synthesize import Skill


class ThinkStepCheck(Section):
    """How the audio-LM's yes/no on one reasoning step becomes a verdict."""

    windows: int = Field(3, ge=1, le=40, description="Windows a step that names no time (m:ss) is heard against.")
    correct_p_yes: float = Field(0.65, ge=0, le=1, description="The best window's P(yes) at or above this: correct.")
    wrong_p_yes: float = Field(0.35, ge=0, le=1, description="The best window's P(yes) below this: wrong (between "
                               "the two: unverifiable).")
    min_mass: float = Field(0.5, ge=0, le=1, description="P(yes)+P(no) below this: unverifiable (no real answer).")

    @model_validator(mode="after")
    def _ordered(self) -> ThinkStepCheck:
        if self.wrong_p_yes > self.correct_p_yes:
            raise ValueError("wrong_p_yes must not exceed correct_p_yes")
        return self


class ThinkSettings(Section):
    """MF-Think: LLM reasoning chains for challenging QA items, every step fact-checked."""

    prompt: str = Field("think", description="Prompt id (latest version) or id.vN in prompts/.")
    max_chains_per_song: int = Field(4, ge=0, description="Chains per song, most challenging items first.")
    select_audio_lm_wrong: bool = Field(True, description="A multiple-choice item the audio-LM itself answered "
                                        "wrongly in the filter is challenging.")
    hard_skills: list[Skill] = Field(default_factory=lambda: ["harmony_theory", "comparative_structural", "temporal"],
                                     description="Items of these skills are challenging too.")
    min_steps: int = Field(3, ge=1, le=20, description="Fewest steps a chain may have.")
    max_steps: int = Field(8, ge=1, le=20, description="Most steps a chain may have.")
    show_reference: bool = Field(True, description="Tell the LLM the filtered reference answer to reason towards "
                                 "(distillation, as in the paper).")
    max_wrong_ratio: float = Field(0.3, ge=0, le=1, description="The MF-Think rule: no wrong step: keep; wrong "
                                   "steps up to this share: rewrite; more: drop.")
    max_unverifiable_ratio: float = Field(0.5, ge=0, le=1, description="A chain whose observations (deductions "
                                          "are not heard) are unverifiable above this share is dropped "
                                          "(too_many_unverifiable_steps): nothing confirmed it. 1: keep them all.")
    rewrite_budget: int = Field(1, ge=0, le=5, description="Rewrite rounds per chain before it is dropped.")
    step_check: ThinkStepCheck = Field(default_factory=ThinkStepCheck, description="How a step's yes/no becomes "
                                                                                   "a verdict.")
    min_clip_s: float = Field(1.0, ge=0.1, le=30.0, description="Shorter last windows are read from the song's "
                                                                "end.")
    max_lyrics_chars: int = Field(2000, ge=0, description="Lyrics characters in the prompt.")
    max_chord_changes: int = Field(32, ge=0, description="Chords of one section's progression in the prompt.")
    min_chord_s: float = Field(1.0, ge=0, description="Chords shorter than this are left out of the prompt.")
    gate: GateConfig = Field(default_factory=GateConfig, description="The checks every step passes "
                             "(mfpipe.lint: tools cited, identities, ungrounded times): a flagged step is wrong "
                             "(checked_by rules), so the rewrite repairs it once; `repair` is not used here.")
    max_caption_chars: int = Field(4000, ge=0, description="Characters of synthesize's rich caption in the prompt.")

    @model_validator(mode="after")
    def _steps(self) -> ThinkSettings:
        if self.min_steps > self.max_steps:
            raise ValueError("min_steps must not exceed max_steps")
        return self
