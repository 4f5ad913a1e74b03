"""The Llm client against the real vLLM server: structured output, real concurrency,
retries and repairs (faults injected by a small proxy in front of the real server)."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import Field

from mfpipe.backends.llm import Llm, Result, _answer, token_budget
from mfpipe.schemas import Record
from support.fault_proxy import FaultProxy
from support.llm_data import cpu_config, running_time, running_time_after

pytestmark = pytest.mark.slow


class Colour(Record):
    colour: str = Field(min_length=1, max_length=24)
    reason: str = Field(min_length=1, max_length=60)


def ask(n: int = 1) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Reply with JSON only."},
            {"role": "user", "content": f"Name colour number {n} of the rainbow and say why you like it."}]


def client(url: str, **kw) -> Llm:
    cfg = cpu_config().llm
    options = dict(base_url=url, model=cfg.model, concurrency=4, timeout_s=120.0, max_retries=2,
                   backoff_s=0.05, backoff_max_s=0.2,
                   sampling={"temperature": 0.0, "max_tokens": 256, "extra_body": {"repetition_penalty": 1.15}})
    options.update(kw)
    return Llm(**options)


def run(coro):
    return asyncio.run(coro)


async def _one(llm: Llm, **kw) -> Result:
    try:
        return await llm.structured(ask(), Colour, **kw)
    finally:
        await llm.aclose()


def test_structured_output_is_validated(llm_server):
    result = run(_one(client(llm_server.base_url)))
    assert result.ok, result.message
    assert isinstance(result.value, Colour)
    assert result.usage.requests == 1 and result.usage.completion_tokens > 0
    assert result.usage.retries == 0 and result.usage.repairs == 0


def test_requests_are_really_concurrent(llm_server):
    """Eight requests with concurrency 4: the client keeps 4 in flight (never more), the server
    runs several at once, and the batch takes less than the requests' summed time."""

    async def batch():
        llm = client(llm_server.base_url, concurrency=4)
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(llm.structured(ask(i), Colour) for i in range(8)))
            return llm, results, time.monotonic() - started
        finally:
            await llm.aclose()

    before = running_time(llm_server.root_url)
    llm, results, wall = run(batch())
    sent = sum(r.usage.requests for r in results)  # 8, plus any repair
    running_s, finished = running_time_after(llm_server.root_url, before, finished=sent)
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]
    assert llm.max_in_flight == 4
    assert finished == sent >= 8
    # Run one at a time, the requests' RUNNING spans could not overlap and would sum to less than
    # the wall time; the server's own clock says they summed to well over it.
    assert running_s > 1.5 * wall, f"server ran {running_s:.1f} s of requests in {wall:.1f} s"
    assert wall < 0.8 * sum(r.usage.seconds for r in results)


def test_retries_after_http_500(llm_server):
    with FaultProxy(llm_server.root_url) as proxy:
        proxy.plan = ["500", "500"]
        result = run(_one(client(proxy.url)))
    assert result.ok, result.message
    assert result.usage.retries == 2 and result.usage.requests == 3
    assert proxy.faults_sent == ["500", "500", "pass"]


def test_retries_after_429(llm_server):
    with FaultProxy(llm_server.root_url) as proxy:
        proxy.plan = ["429"]
        result = run(_one(client(proxy.url)))
    assert result.ok and result.usage.retries == 1


def test_a_hanging_request_times_out_and_is_retried(llm_server):
    # The timeout must leave the real request time to answer on a busy 2-core box.
    with FaultProxy(llm_server.root_url, hang_s=120) as proxy:
        proxy.plan = ["hang"]
        started = time.monotonic()
        result = run(_one(client(proxy.url, timeout_s=15.0)))
    assert result.ok, result.message
    assert result.usage.retries == 1
    assert time.monotonic() - started < 100  # it did not wait for the hang to end


def test_gives_up_with_a_retryable_reason(llm_server):
    with FaultProxy(llm_server.root_url) as proxy:
        proxy.default = "500"
        result = run(_one(client(proxy.url, max_retries=2)))
    assert not result.ok
    assert result.error == "server_error" and result.retryable
    assert result.usage.requests == 3 and proxy.posts == 3


def test_invalid_output_gets_one_repair(llm_server):
    with FaultProxy(llm_server.root_url) as proxy:
        proxy.plan = ["garble"]  # the first answer arrives cut in half: not valid JSON
        result = run(_one(client(proxy.url)))
        assert result.ok, result.message
        assert result.usage.repairs == 1 and result.usage.requests == 2

        proxy.plan = ["garble", "garble"]
        result = run(_one(client(proxy.url)))
    assert not result.ok
    assert result.error == "invalid_output" and not result.retryable
    assert "JSON" in result.message or "json" in result.message
    assert result.usage.repairs == 1 and result.usage.requests == 2


def test_answer_cut_at_max_tokens_is_invalid(llm_server):
    result = run(_one(client(llm_server.base_url), max_tokens=4))
    assert result.error == "invalid_output"
    assert "max_tokens" in result.message


def test_unreachable_server_is_a_retryable_connection_error():
    result = run(_one(client("http://127.0.0.1:9/v1", max_retries=1)))
    assert result.error == "connection" and result.retryable
    assert result.usage.requests == 2


def test_reasoning_is_kept_apart_from_the_answer():
    from openai.types.chat import ChatCompletion

    def completion(message: dict) -> ChatCompletion:
        return ChatCompletion.model_validate({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", **message}}]})

    content, reasoning = _answer(completion({"content": '{"a": 1}', "reasoning": "Think first."}))
    assert (content, reasoning) == ('{"a": 1}', "Think first.")
    content, reasoning = _answer(completion({"content": '<think>step 1\nstep 2</think>\n{"a": 1}'}))
    assert (content, reasoning) == ('{"a": 1}', "step 1\nstep 2")
    content, reasoning = _answer(completion({"content": '{"a": 1}', "reasoning_content": "old name"}))
    assert reasoning == "old name"


def test_token_budget_covers_the_largest_valid_answer():
    largest = Colour(colour="x" * 24, reason="y" * 60).model_dump_json()
    budget = token_budget(Colour.model_json_schema())
    assert len(largest) <= budget < 2 * len(largest) + 32  # one token per character, at most


def test_a_cut_off_answer_is_asked_once_more_at_low_effort(llm_server):
    """A part cut at max_tokens (a reasoning model that spent them thinking) is retried once at low effort,
    with the budget of low effort; a model that does not reason (no effort, no 'unset' budget) is not."""
    with FaultProxy(llm_server.root_url) as proxy:
        proxy.plan = ["cut"]
        # (budgets small enough for the test server's 4096-token context)
        llm = client(proxy.url, effort_by_part={"colour": "medium"}, reasoning_tokens={"medium": 1000, "low": 200},
                     sampling={"temperature": 0.0, "max_tokens": 2048, "extra_body": {"repetition_penalty": 1.15}})
        result = run(_one(llm, name="colour"))
        assert result.ok and result.cut_off_retried and result.usage.requests == 2
        first, second = proxy.bodies
        assert (first["reasoning_effort"], second["reasoning_effort"]) == ("medium", "low")
        derived = token_budget(Colour.model_json_schema())
        assert (first["max_tokens"], second["max_tokens"]) == (derived + 1000, derived + 200)
        proxy.plan = ["cut"]
        plain = run(_one(client(proxy.url)))
        assert plain.error == "invalid_output" and "max_tokens" in plain.message and not plain.cut_off_retried
        assert "reasoning_effort" not in proxy.bodies[-1] and proxy.bodies[-1]["max_tokens"] == derived


def test_budgets_count_reasoning_whether_or_not_an_effort_is_sent():
    llm = Llm(base_url="http://127.0.0.1:9/v1", model="m", sampling={"max_tokens": 16384, "reasoning_effort": None},
              effort_by_part={"metadata": "low", "qa": "medium", "chain": "high"},
              reasoning_tokens={"unset": 4096})
    assert [llm.effort_for(p) for p in ("metadata", "qa/temporal", "chain", "chain_fix", "caption")] == \
        ["low", "medium", "high", "high", None]
    assert llm._max_tokens(500, "low") == 1524 and llm._max_tokens(500, "high") == 12788
    assert llm._max_tokens(500, None) == 4596  # gpt-oss reasons at medium when no effort is sent
    assert llm._max_tokens(9000, "high") == 16384  # max_tokens caps the sum
