"""The resource plan: phases that fit the GPUs, the server's share, workers that fill what is left."""

from __future__ import annotations

import pytest

from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.plan import PlanError, ServerNeed, StageNeed, make_plan


def _production_needs() -> tuple[list[StageNeed], ServerNeed]:
    cfg = load_config(overrides=["profile=production"])
    order = ["ingest", "caption", "mir", "lyrics", "synthesize", "filter", "think"]
    levels = {"ingest": 0, "caption": 1, "mir": 1, "lyrics": 1, "synthesize": 2, "filter": 3, "think": 4}
    needs = []
    for name in order:
        res = getattr(cfg, name).resources
        needs.append(StageNeed(name, levels[name], res.cpus, res.gpus, res.concurrency,
                               uses_server=name in ("synthesize", "think")))
    return needs, ServerNeed(gpus=1.0)


def _gpus_at_once(plan) -> list[float]:
    out = []
    for phase in plan.phases:
        used = sum(plan.stages[n].workers * plan.stages[n].gpus for n in phase.stages)
        out.append(used + (phase.server.gpus if phase.server else 0.0))
    return out


def test_one_gpu_box_runs_everything_in_phases_that_fit():
    needs, server = _production_needs()
    plan = make_plan(needs, cpus=16, gpus=1, server=server)
    assert [p.stages for p in plan.phases] == [["ingest", "caption", "mir", "lyrics"], ["synthesize"], ["filter"],
                                              ["think"]]
    assert all(used <= 1.0 + 1e-9 for used in _gpus_at_once(plan))
    # The server holds the whole GPU beside synthesize; beside think (which needs its own half)
    # it gets the other half, and its memory fraction follows.
    assert plan.phases[1].server.gpus == 1.0 and plan.phases[1].server.gpu_memory_utilization == 0.92
    assert plan.phases[3].server.gpus == 0.5 and plan.phases[3].server.gpu_memory_utilization == pytest.approx(0.46)
    assert plan.phases[2].server is None  # stopped while no stage needs it
    assert any("phase 4: think" in line and "LLM server (0.5 GPU" in line for line in plan.lines())


def test_four_gpus_stream_everything_at_once_and_share_what_is_left():
    needs, server = _production_needs()
    plan = make_plan(needs, cpus=64, gpus=4, server=server)
    assert len(plan.phases) == 1 and plan.phases[0].server.gpus == 1.0
    (used,) = _gpus_at_once(plan)
    assert 3.5 < used <= 4.0  # the spare GPU share became extra workers
    assert plan.stages["caption"].workers >= 2 and plan.stages["filter"].workers >= 2
    assert plan.stages["think"].gpus == 0.5 and plan.stages["lyrics"].gpus == 0.25


def test_barrier_phases_are_the_levels_of_the_graph():
    needs, server = _production_needs()
    plan = make_plan(needs, cpus=64, gpus=4, schedule="barrier", server=server)
    assert [p.stages for p in plan.phases] == [["ingest"], ["caption", "mir", "lyrics"], ["synthesize"], ["filter"],
                                              ["think"]]


def test_cpus_are_shared_when_the_stages_declare_more_than_the_cluster_has():
    needs = [StageNeed("a", 0, 1, 0, None), StageNeed("b", 1, 2, 0, None), StageNeed("c", 1, 1, 0, 1)]
    plan = make_plan(needs, cpus=2, gpus=0)
    (phase,) = plan.phases
    assert phase.cpu_scale == pytest.approx(0.5)
    assert sum(plan.stages[n].workers * plan.stages[n].cpus for n in "abc") <= 2 + 1e-9
    assert all(plan.stages[n].workers >= 1 for n in "abc")


def test_impossible_plans_fail_with_what_to_change():
    with pytest.raises(PlanError, match="needs 1 GPU.* has no GPUs"):
        make_plan([StageNeed("caption", 0, 1, 1, None)], cpus=4, gpus=0)
    with pytest.raises(PlanError, match="llm.base_url"):
        make_plan([StageNeed("think", 0, 1, 0.8, None, uses_server=True)], cpus=4, gpus=1,
                  server=ServerNeed(gpus=1.0))
    with pytest.raises(PlanError, match="no node of the Ray cluster has more than 2"):
        make_plan([StageNeed("mir", 0, 8, 0, None)], cpus=16, gpus=0, node_cpus=2)
