"""How one reasoning step of an MF-Think chain is judged, before and besides the audio-LM.

A step is tagged `observation` (something heard) or `deduction` (what follows from the steps before).
Its verdict, in order:
1. the gate's checks (`mfpipe.lint`: tools cited, an identity no fact supplies, a time that is no
   measured moment): flagged → `wrong`, checked by `rules` (the rewrite repairs it, once);
2. each claim (clause, `factcheck.split_claims`) that names what MIR measured is judged by MIR
   (`factcheck.mir_check`; a chord named with a time is checked against the chords then): any
   claim MIR refutes makes the step `wrong`;
3. a deduction is never sent to the audio-LM (a yes/no on "so the answer is B" means nothing): MIR's
   verdict where it covers every claim, else `unverifiable` (checked by `logic`);
4. an observation whose claims MIR all confirms is `correct`; otherwise its claims MIR does not cover
   go to the audio-LM (`Ask`), never a claim MIR already judged.

The chain rule then also drops a chain whose observations are mostly unverifiable
(`unverifiable_share` above `think.max_unverifiable_ratio`): nothing confirmed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..consistency import ConsistencyConfig
from ..factcheck import Check, mir_check, split_claims
from ..lint import check_step
from ..rewards import normalise

KINDS = ("observation", "deduction")


@dataclass(frozen=True)
class Ask:
    """An observation (or its part) only the audio-LM can judge."""

    text: str


def judge_step(text: str, kind: str | None, facts: Any, tolerance: ConsistencyConfig,
               checks: Iterable[str]) -> Check | Ask:
    """The step's verdict where the rules or MIR settle it, else what to ask the audio-LM."""
    flags = check_step(text, facts, tolerance, checks)
    if flags:
        return Check("wrong", "rules", reason="; ".join(f"{f.check}: {f.message}" for f in flags))
    claims = split_claims(text)
    verdicts = [(claim, mir_check(claim, facts, tolerance)) for claim in claims]
    wrong = [v for _, v in verdicts if v is not None and v.verdict == "wrong"]
    if wrong:
        return Check("wrong", "mir", reason="; ".join(v.reason for v in wrong))
    unmeasured = [claim for claim, v in verdicts if v is None]
    if not unmeasured:
        return Check("correct", "mir", reason="; ".join(v.reason for _, v in verdicts if v))
    if kind == "deduction":
        return Check("unverifiable", "logic", reason="a deduction from the steps before: not a thing to hear")
    return Ask(text if len(unmeasured) == len(claims) else "; ".join(unmeasured))


def unverifiable_share(kinds: Sequence[str | None], verdicts: Sequence[str]) -> float:
    """Unverifiable observations / observations (deductions are never heard, so they do not count);
    0 for a chain without observations."""
    seen = [v for k, v in zip(kinds, verdicts) if k != "deduction"]
    return sum(v == "unverifiable" for v in seen) / len(seen) if seen else 0.0


def answer_matches(answer: str, reference: str) -> bool:
    """An open chain's answer gives the reference (normalised: case, punctuation, articles), word for
    word or within a longer sentence."""
    said, ref = normalise(answer), normalise(reference)
    return bool(ref) and (said == ref or f" {ref} " in f" {said} ")
