"""The resource plan: phases that fit the GPUs, the server's share, workers that fill what is left."""

from __future__ import annotations

import pytest

from mfpipe.gpumemory import GpuMemory
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.plan import PlanError, ServiceNeed, StageNeed, make_plan, packs_on_gpus


def _production_needs() -> tuple[list[StageNeed], dict[str, ServiceNeed]]:
    cfg = load_config(overrides=["profile=production"])
    order = ["ingest", "caption", "mir", "lyrics", "synthesize", "filter", "think"]
    levels = {"ingest": 0, "caption": 1, "mir": 1, "lyrics": 1, "synthesize": 2, "filter": 3, "think": 4}
    needs = []
    for name in order:
        res = getattr(cfg, name).resources
        needs.append(StageNeed(name, levels[name], res.cpus, res.gpus, res.concurrency,
                               services=("llm",) if name in ("synthesize", "think") else ()))
    return needs, {"llm": ServiceNeed(gpus=1.0, label="LLM server")}


def _gpus_at_once(plan) -> list[float]:
    out = []
    for phase in plan.phases:
        used = sum(plan.stages[n].workers * plan.stages[n].gpus for n in phase.stages)
        out.append(used + sum(s.gpus for s in phase.services.values()))
    return out


def test_one_gpu_box_runs_everything_in_phases_that_fit():
    needs, server = _production_needs()
    plan = make_plan(needs, cpus=16, gpus=1, services=server)
    assert [p.stages for p in plan.phases] == [["ingest", "caption", "mir", "lyrics"], ["synthesize"], ["filter"],
                                              ["think"]]
    assert all(used <= 1.0 + 1e-9 for used in _gpus_at_once(plan))
    # The server holds the whole GPU beside synthesize; beside think (which needs its own half)
    # it gets the other half, and its memory fraction follows.
    llm = [phase.services.get("llm") for phase in plan.phases]
    assert llm[1].gpus == 1.0 and llm[1].gpu_memory_utilization == 0.92
    assert llm[3].gpus == 0.5 and llm[3].gpu_memory_utilization == pytest.approx(0.46)
    assert llm[2] is None  # stopped while no stage needs it
    assert any("phase 4: think" in line and "LLM server (0.5 GPU" in line for line in plan.lines())


def test_four_gpus_stream_everything_at_once_and_share_what_is_left():
    needs, server = _production_needs()
    plan = make_plan(needs, cpus=64, gpus=4, services=server)
    assert len(plan.phases) == 1 and plan.phases[0].services["llm"].gpus == 1.0
    (used,) = _gpus_at_once(plan)
    assert 3.5 < used <= 4.0  # the spare GPU share became extra workers
    assert plan.stages["caption"].workers >= 2 and plan.stages["filter"].workers >= 2
    assert plan.stages["think"].gpus == 0.5 and plan.stages["lyrics"].gpus == 0.25


def test_barrier_phases_are_the_levels_of_the_graph():
    needs, server = _production_needs()
    plan = make_plan(needs, cpus=64, gpus=4, schedule="barrier", services=server)
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
        make_plan([StageNeed("think", 0, 1, 0.8, None, services=("llm",))], cpus=4, gpus=1,
                  services={"llm": ServiceNeed(gpus=1.0)})
    with pytest.raises(PlanError, match="no node of the Ray cluster has more than 2"):
        make_plan([StageNeed("mir", 0, 8, 0, None)], cpus=16, gpus=0, node_cpus=2)


# ---------------------------------------------------------------- plans in bytes


def _production_needs_in_bytes() -> tuple[list[StageNeed], dict[str, ServiceNeed]]:
    """The production profile's holders with their GPU memory as the stages and the server estimate it."""
    from dataclasses import replace

    from mfpipe.pipeline import registry

    cfg = load_config(overrides=["profile=production"])
    stages = registry.stages()
    needs, server = _production_needs()
    needs = [replace(n, memory=stages[n.name].gpu_memory(stages[n.name].settings_from(cfg))) for n in needs]
    return needs, {"llm": replace(server["llm"], memory=cfg.llm.server.memory_need(cfg.llm.model))}


def _memory_at_once(plan, gib: float) -> list[float]:
    return [used * gib for used in _gpus_at_once(plan)]


def test_the_production_holders_know_their_bytes():
    needs, server = _production_needs_in_bytes()
    memory = {n.name: n.memory for n in needs if n.memory is not None}
    assert set(memory) == {"caption", "lyrics", "filter", "think"}  # every GPU stage, no CPU stage
    assert 16 < memory["caption"].gib < 26 and "music-flamingo" in memory["caption"].source
    assert 60 < server["llm"].memory.gib < 70 and "gpt-oss-120b" in server["llm"].memory.source


def test_one_80_gib_gpu_refuses_think_beside_the_server_in_bytes():
    """Music Flamingo (~20 GiB with its batch) and gpt-oss-120b (~61 GiB of weights + KV cache) do not fit one
    80 GiB GPU together: refused before anything starts, saying what to set (the share plan gave the server
    half the GPU: 37 GB for a 61 GB model)."""
    needs, server = _production_needs_in_bytes()
    with pytest.raises(PlanError, match=r"think.*GiB.*LLM server.*GiB.*1 GPU\(s\) of 80 GiB.*llm\.base_url"):
        make_plan(needs, cpus=16, gpus=1, services=server, gpu_memory=GpuMemory(80, "run.gpu_memory_gb"))


def test_one_141_gib_gpu_gives_the_server_what_think_leaves_in_bytes():
    needs, server = _production_needs_in_bytes()
    plan = make_plan(needs, cpus=16, gpus=1, services=server, gpu_memory=GpuMemory(141, "run.gpu_memory_gb"))
    think_phase = plan.phases[plan.phase_of("think")]
    think = plan.stages["think"]
    assert think.gpus == pytest.approx(0.15, abs=0.01) and think.memory_gib == pytest.approx(0.15 * 141, abs=1.5)
    # the server gets the rest of the GPU, in bytes: its weights and a real KV cache, not half a GPU
    util = think_phase.services["llm"].gpu_memory_utilization
    assert think_phase.services["llm"].gpus == pytest.approx(1 - think.gpus)
    assert util * 141 >= server["llm"].memory.gib and util * 141 + think.memory_gib <= 141
    assert all(used <= 141 + 1e-6 for used in _memory_at_once(plan, 141))
    assert any("of 141 GiB each (run.gpu_memory_gb)" in line for line in plan.lines())


@pytest.mark.parametrize("gib", [80, 141])
def test_four_gpus_stream_everything_with_shares_from_bytes(gib):
    needs, server = _production_needs_in_bytes()
    plan = make_plan(needs, cpus=64, gpus=4, services=server, gpu_memory=GpuMemory(gib, "run.gpu_memory_gb"))
    (phase,) = plan.phases
    llm = phase.services["llm"]
    assert llm.gpus == 1.0 and llm.gpu_memory_utilization * gib >= server["llm"].memory.gib
    caption = plan.stages["caption"]
    assert caption.gpus == pytest.approx(20.1 / gib, abs=0.011)  # bytes over the GPU's memory, not 0.5
    assert caption.workers >= (4 if gib == 141 else 2)  # more memory, more workers
    assert _gpus_at_once(plan)[0] <= 4 + 1e-9
    # Ray places fractional requests whole on one GPU: the plan's shares pack into 4 GPUs
    shares = [plan.stages[n].gpus for n in phase.stages for _ in range(plan.stages[n].workers)
              if plan.stages[n].gpus] + [1.0]
    assert packs_on_gpus(shares, 4)


def test_a_model_bigger_than_a_gpu_is_refused_with_what_to_set():
    needs = [StageNeed("caption", 0, 1, 0.5, None, memory=GpuMemory(30, "test"))]
    with pytest.raises(PlanError, match="needs 30.0 GiB.*24 GiB"):
        make_plan(needs, cpus=8, gpus=2, gpu_memory=GpuMemory(24, "nvidia-smi"))
    with pytest.raises(PlanError, match="tensor-parallel size"):
        make_plan([StageNeed("synthesize", 0, 1, 0, None, services=("llm",))], cpus=8, gpus=2,
                  services={"llm": ServiceNeed(gpus=1.0, memory=GpuMemory(70, "test"))},
                  gpu_memory=GpuMemory(48, "L40S"))
