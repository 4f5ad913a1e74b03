"""Which QA items of a song get a reasoning chain: the challenging ones among those the filter kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ThinkSettings


@dataclass
class Item:
    """A QA item selected for a chain."""

    index: int
    skill: str
    question: str
    options: list[str]
    reference: str
    because: str


def select_items(row: dict[str, Any], cfg: ThinkSettings) -> list[Item]:
    """The challenging items of one song, most challenging first: the multiple-choice items the audio-LM
    itself answered wrongly in the filter (`select_audio_lm_wrong`), then items of the `hard_skills`;
    within each group the skills take turns; at most `max_chains_per_song`. Only items the filter KEPT:
    a dropped item's reference answer is not trusted."""
    qa = row["synthesize"].get("qa") or []
    judged = {j["index"]: j for j in row["filter"].get("qa") or []}
    groups: list[list[Item]] = [[], []]
    for i, item in enumerate(qa):
        j = judged.get(i)
        if not j or not j.get("keep"):
            continue
        options = list(item.get("options") or [])
        if cfg.select_audio_lm_wrong and options and j.get("audio_lm_correct") is False:
            because = (f"the audio-LM itself chose {j.get('audio_lm_answer')!r}; the reference answer is "
                       f"{item['answer']!r}")
            group = 0
        elif item["skill"] in cfg.hard_skills:
            because = f"a {item['skill']} item (think.hard_skills: a reasoning skill)"
            group = 1
        else:
            continue
        groups[group].append(Item(i, item["skill"], item["question"], options, item["answer"], because))
    chosen: list[Item] = []
    for group in groups:
        chosen.extend(skills_take_turns(group))
    return chosen[: cfg.max_chains_per_song]


def skills_take_turns(items: list[Item]) -> list[Item]:
    """Interleave by skill (first of each skill, then second of each...), keeping item order within a skill."""
    seen: dict[str, int] = {}
    ranked = []
    for item in items:
        ranked.append((seen.get(item.skill, 0), item.index, item))
        seen[item.skill] = seen.get(item.skill, 0) + 1
    return [item for *_, item in sorted(ranked, key=lambda r: (r[0], r[1]))]
