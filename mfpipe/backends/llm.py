"""`Llm`: an async client for any OpenAI-compatible chat endpoint (vLLM in practice).

What it adds to the `openai` SDK, and nothing more:
- bounded concurrency: at most `concurrency` requests in flight (an asyncio
  semaphore, held per attempt, so a request waiting out a backoff frees its slot);
- retries with exponential backoff and full jitter (tenacity) on timeouts, connection
  errors, 408/409/429 and 5xx, honouring `Retry-After`; a per-request timeout;
- structured output: the JSON schema of a pydantic model goes to the server as
  `response_format` (vLLM enforces it while decoding), the answer is validated
  with the same model, and an answer that does not validate gets ONE repair
  request that shows the model its errors; after that the result carries the
  reason instead of a value;
- reasoning models (gpt-oss with a reasoning parser, or models that write
  `<think>…</think>`): the reasoning text is kept apart from the answer.

    llm = Llm.from_config(config.llm)
    result = await llm.structured(messages, MyModel)
    result.value or (result.error, result.message); result.reasoning; result.usage

A request never raises for model or server trouble: the `Result` says what went
wrong and whether a later retry could help (`retryable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import openai
from pydantic import BaseModel, Field, ValidationError, field_validator
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from ..config import Section
from ..schemas import LlmUsage
from .vllm_server import VllmServerConfig

T = TypeVar("T", bound=BaseModel)

# A request's max_tokens is derived from its schema's largest document at one token per
# character: the grammar already bounds the answer, so this cap only has to never cut a valid
# one short (English runs ~4 characters a token, but a degenerate model can spend one per
# character). `sampling.max_tokens` caps it again.
_CHARS_PER_TOKEN = 1.0
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_RETRY_STATUS = {408, 409, 429}
EFFORTS = ("low", "medium", "high")
# Reasoning tokens per effort on top of an answer's own budget (gpt-oss spends roughly this much).
_REASONING_TOKENS = {"unset": 0, "low": 1024, "medium": 4096, "high": 12288}
# Error classes that say the server failed, not the request: a stage defers the song (the runner
# checks the server and pauses while it is down) instead of rejecting it.
OUTAGE_ERRORS = frozenset({"connection", "timeout", "server_error", "not_found"})


class SamplingConfig(Section):
    """Sampling parameters every request carries."""

    temperature: float = Field(0.7, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int | None = Field(None, description="Sampling seed sent with each request; None: not sent.")
    max_tokens: int = Field(4096, ge=16, description="Upper bound on generated tokens per request (reasoning "
                            "included); each request also gets a bound derived from its schema, and the smaller "
                            "one is used.")
    reasoning_effort: str | None = Field(None, description="gpt-oss and other reasoning models: low, medium or "
                                                           "high; None: not sent.")
    reasoning_effort_by_part: dict[str, str] = Field(default_factory=dict, description="Reasoning effort per "
                                                     "part, overriding reasoning_effort: caption, metadata, qa (or "
                                                     "qa/<skill>), chain, chain_fix, ... (the name a stage gives "
                                                     "each request).")
    reasoning_tokens: dict[str, int] = Field(default_factory=lambda: dict(_REASONING_TOKENS), description="Tokens "
                                             "a request may spend reasoning, per effort (low, medium, high; "
                                             "'unset': when no effort is sent, for a model that reasons anyway, "
                                             "like gpt-oss), added to the answer's schema-derived budget; "
                                             "max_tokens still caps the sum.")

    @field_validator("reasoning_effort_by_part")
    @classmethod
    def _efforts(cls, value: dict[str, str]) -> dict[str, str]:
        bad = {part: effort for part, effort in value.items() if effort not in EFFORTS}
        if bad:
            raise ValueError(f"reasoning efforts must be one of {', '.join(EFFORTS)}; got {bad}")
        return value
    extra: dict[str, Any] = Field(default_factory=dict, description="Server-specific sampling parameters sent as "
                                  "they are (vLLM: repetition_penalty, min_p, top_k, ...).")


class LlmConfig(Section):
    """The OpenAI-compatible LLM endpoint (a vLLM server) and how the client talks to it; shared by the
    stages that ask an LLM (synthesize, think)."""

    base_url: str | None = Field(None, description="The endpoint, e.g. http://vllm:8000/v1; None: mfpipe starts "
                                                   "a server for the run (llm.server).")
    model: str = Field("openai/gpt-oss-120b", description="The served model name sent with each request.")
    api_key_env: str = Field("MFPIPE_LLM_API_KEY", description="Name of the environment variable holding the API "
                             "key (never the key itself: the config is stored with the outputs).")
    concurrency: int = Field(64, ge=1, description="Requests in flight per worker process.")
    timeout_s: float = Field(600.0, gt=0, description="Seconds per request (one attempt).")
    max_retries: int = Field(4, ge=0, description="Retries on timeouts, connection errors, 429 and 5xx.")
    backoff_s: float = Field(1.0, ge=0, description="First wait between retries; doubles per retry, with jitter.")
    backoff_max_s: float = Field(60.0, ge=0, description="Longest wait between retries.")
    repair: bool = Field(True, description="Send one repair request when an answer does not validate.")
    retry_cut_off: bool = Field(True, description="A reasoning model's answer cut off at max_tokens is asked "
                                "once more at low reasoning effort (the other parts of the song are kept).")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampling parameters.")
    server: VllmServerConfig = Field(default_factory=VllmServerConfig,
                                     description="The server mfpipe starts when base_url is not set.")


@dataclass
class Result(Generic[T]):
    value: T | None = None
    # None when value is set; else a short class: invalid_output, refused, timeout,
    # connection, rate_limited, server_error, not_found, bad_request.
    error: str | None = None
    message: str = ""
    retryable: bool = False  # a later attempt (a rerun) may succeed
    reasoning: str | None = None
    raw: str | None = None  # the last answer text the model gave
    usage: LlmUsage = field(default_factory=LlmUsage)
    cut_off_retried: bool = False  # the answer was cut at max_tokens and asked again at low effort

    @property
    def ok(self) -> bool:
        return self.error is None


class _Invalid(Exception):
    """The model answered, but not with something the schema accepts."""


class _CutOff(_Invalid):
    """The answer was cut at max_tokens (a reasoning model may have spent them thinking)."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUS or exc.status_code >= 500
    return False


def _retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _error_class(exc: BaseException) -> tuple[str, bool]:
    """(error class, retryable) for a request that failed for good."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited", True
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in _RETRY_STATUS:
            return "server_error", True
        if exc.status_code == 404:  # the model is not (or no longer) served: the server's state, not the song's
            return "not_found", True
        return "bad_request", False
    return type(exc).__name__, False


@functools.lru_cache(maxsize=512)
def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema (built once per model: requests reuse it; do not mutate it)."""
    return model.model_json_schema()


def token_budget(schema: dict[str, Any]) -> int:
    """Most tokens a JSON document of this schema can take, from its maxLength/maxItems."""
    defs = schema.get("$defs", {})

    def size(node: dict[str, Any]) -> float:
        if "$ref" in node:
            return size(defs[node["$ref"].rsplit("/", 1)[-1]])
        for alt in ("anyOf", "oneOf"):
            if alt in node:
                return max(size(n) for n in node[alt])
        kind = node.get("type")
        if kind == "string":
            return node.get("maxLength", 200) + 2
        if kind == "array":
            return 2 + node.get("maxItems", 16) * (size(node.get("items", {})) + 1)
        if kind == "object":
            props = node.get("properties", {})
            return 2 + sum(len(k) + 4 + size(v) for k, v in props.items())
        return 24  # numbers, booleans, null

    return int(size(schema) / _CHARS_PER_TOKEN) + 16


def _validation_summary(exc: ValidationError, limit: int = 6) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(document)"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class Llm:
    def __init__(self, *, base_url: str, model: str, api_key: str | None = None, concurrency: int = 8,
                 timeout_s: float = 120.0, max_retries: int = 3, backoff_s: float = 1.0,
                 backoff_max_s: float = 30.0, repair: bool = True, sampling: dict[str, Any] | None = None,
                 effort_by_part: dict[str, str] | None = None, reasoning_tokens: dict[str, int] | None = None,
                 retry_cut_off: bool = True):
        self.base_url = base_url
        self.model = model
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.repair = repair
        self.sampling = dict(sampling or {})
        self.effort_by_part = dict(effort_by_part or {})
        self.reasoning_tokens = {**_REASONING_TOKENS, **(reasoning_tokens or {})}
        self.retry_cut_off = retry_cut_off
        # The SDK's own retries are off: tenacity does them (counted, slot released while waiting).
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "EMPTY",
                                         timeout=timeout_s, max_retries=0)
        # "Full jitter": a random wait up to backoff_s * 2^attempt, capped, so clients that failed
        # together do not retry together.
        self._backoff = wait_random_exponential(multiplier=backoff_s, max=backoff_max_s)
        self._slots: asyncio.Semaphore | None = None
        self.in_flight = 0
        self.max_in_flight = 0  # high-water mark of concurrent requests (tests and benchmarks read it)

    @classmethod
    def from_config(cls, cfg: LlmConfig, base_url: str | None = None) -> Llm:
        """From an `LlmConfig`; `base_url` overrides cfg.base_url (e.g. a server mfpipe started)."""
        url = base_url or cfg.base_url
        if not url:
            raise ValueError("llm.base_url is not set and no server was started for this run")
        s = cfg.sampling
        sampling = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                    "seed": s.seed, "reasoning_effort": s.reasoning_effort, "extra_body": dict(s.extra) or None}
        return cls(base_url=url, model=cfg.model, api_key=os.environ.get(cfg.api_key_env),
                   concurrency=cfg.concurrency, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                   backoff_s=cfg.backoff_s, backoff_max_s=cfg.backoff_max_s, repair=cfg.repair,
                   sampling=sampling, effort_by_part=s.reasoning_effort_by_part,
                   reasoning_tokens=s.reasoning_tokens, retry_cut_off=cfg.retry_cut_off)

    def settings(self) -> dict[str, Any]:
        """What decides the outputs, for provenance."""
        return {"endpoint": self.base_url, "model": self.model,
                **{k: v for k, v in self.sampling.items() if v is not None},
                **({"reasoning_effort_by_part": self.effort_by_part} if self.effort_by_part else {}),
                "reasoning_tokens": self.reasoning_tokens}

    async def aclose(self) -> None:
        await self.client.close()

    # ------------------------------------------------------------ public calls
    async def structured(self, messages: list[dict[str, str]], model: type[T], *, name: str | None = None,
                         max_tokens: int | None = None, **sampling: Any) -> Result[T]:
        """One JSON answer that `model` validates, or the reason there is none. `name` is the part
        (caption, qa/temporal, chain, ...): it picks the reasoning effort (`effort_for`)."""
        effort = sampling.pop("reasoning_effort", None) or self.effort_for(name)
        fmt, budget = self.structured_format(model, name=name, max_tokens=max_tokens, effort=effort)
        result: Result[T] = Result()
        started = time.monotonic()
        conversation = list(messages)
        attempts = 2 if self.repair else 1
        while attempts:
            attempts -= 1
            try:
                content, reasoning = await self._complete(conversation, result.usage, budget, response_format=fmt,
                                                          reasoning_effort=effort, **sampling)
            except _CutOff as exc:
                if self._may_retry_lower(effort, result):
                    # A reasoning model spent its budget thinking: once more at low effort (this part only).
                    effort, result.cut_off_retried = "low", True
                    budget = self.structured_format(model, name=name, max_tokens=max_tokens, effort=effort)[1]
                    result.usage.repairs += 1
                    attempts += 1
                    continue
                result.error, result.message, result.raw = "invalid_output", str(exc), None
                break
            except _Invalid as exc:  # refused: nothing to parse
                result.error, result.message, result.raw = "invalid_output", str(exc), None
                break
            except Exception as exc:  # noqa: BLE001 - transport failures end the request
                result.error, result.retryable = _error_class(exc)
                result.message = f"{type(exc).__name__}: {exc}"[:1000]
                break
            result.raw, result.reasoning = content, reasoning
            try:
                result.value = model.model_validate_json(content)
                result.error, result.message = None, ""
                break
            except ValidationError as exc:
                result.error, result.message = "invalid_output", _validation_summary(exc)
            if attempts:
                result.usage.repairs += 1
            conversation = [*messages, {"role": "assistant", "content": content[:4000]},
                            {"role": "user", "content": _repair_note(result.message)}]
        result.usage.seconds = round(time.monotonic() - started, 3)
        return result

    def effort_for(self, part: str | None) -> str | None:
        """The reasoning effort of a part: its own (`qa/temporal`, else its kind `qa`), else the default."""
        if part:
            for key in (part, part.split("/", 1)[0], part.split("_", 1)[0]):
                if key in self.effort_by_part:
                    return self.effort_by_part[key]
        return self.sampling.get("reasoning_effort")

    def _may_retry_lower(self, effort: str | None, result: Result) -> bool:
        """A cut-off answer is retried once at low effort, for a model that reasons (an effort is sent,
        or it reasons unasked: reasoning_tokens['unset'] > 0)."""
        reasons = effort is not None or self.reasoning_tokens.get("unset", 0) > 0
        return self.retry_cut_off and reasons and effort != "low" and not result.cut_off_retried

    def structured_format(self, model: type[BaseModel], *, name: str | None = None,
                          max_tokens: int | None = None, effort: str | None = None) -> tuple[dict[str, Any], int]:
        """(response_format, max_tokens) that `structured` sends for this model."""
        schema = schema_for(model)
        fmt = {"type": "json_schema",
               "json_schema": {"name": (name or model.__name__).replace("/", "_"), "schema": schema,
                               "strict": True}}
        return fmt, max_tokens or self._max_tokens(token_budget(schema), effort)

    def request_params(self, **overrides: Any) -> dict[str, Any]:
        """The sampling parameters every request carries (besides messages and max_tokens)."""
        params = {k: v for k, v in self.sampling.items() if v is not None and k != "max_tokens"}
        params.update({k: v for k, v in overrides.items() if v is not None})
        return params

    async def text(self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
                   **sampling: Any) -> Result[str]:
        """A plain-text answer (reasoning kept apart), for tasks without a schema."""
        result: Result[str] = Result()
        started = time.monotonic()
        try:
            content, reasoning = await self._complete(list(messages), result.usage,
                                                      max_tokens or self._max_tokens(None), **sampling)
            result.value, result.raw, result.reasoning = content, content, reasoning
        except _Invalid as exc:
            result.error, result.message = "invalid_output", str(exc)
        except Exception as exc:  # noqa: BLE001
            result.error, result.retryable = _error_class(exc)
            result.message = f"{type(exc).__name__}: {exc}"[:1000]
        result.usage.seconds = round(time.monotonic() - started, 3)
        return result

    # ------------------------------------------------------------ internals
    def _max_tokens(self, derived: int | None, effort: str | None = None) -> int:
        """The answer's own budget plus what the model may spend reasoning at this effort (reasoning
        tokens count against max_tokens, whether an effort is sent or not), capped by max_tokens."""
        ceiling = int(self.sampling.get("max_tokens") or 4096)
        if derived is None:
            return ceiling
        return min(ceiling, derived + int(self.reasoning_tokens.get(effort or "unset", 0)))

    @contextlib.asynccontextmanager
    async def _slot(self):
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1

    def _wait(self, state) -> float:
        backoff = self._backoff(state)
        told = _retry_after(state.outcome.exception() if state.outcome else None)
        return min(told, self.backoff_max_s) if told is not None else backoff

    async def _complete(self, messages: list[dict[str, str]], usage: LlmUsage, max_tokens: int,
                        **overrides: Any) -> tuple[str, str | None]:
        """One chat completion with retries → (answer text, reasoning text)."""
        params = self.request_params(**overrides)
        retrying = AsyncRetrying(retry=retry_if_exception(_is_transient), wait=self._wait,
                                 stop=stop_after_attempt(self.max_retries + 1), reraise=True)
        response = None
        async for attempt in retrying:
            with attempt:
                usage.requests += 1
                if attempt.retry_state.attempt_number > 1:
                    usage.retries += 1
                async with self._slot():
                    response = await self.client.chat.completions.create(
                        model=self.model, messages=messages, max_tokens=max_tokens, **params)
        assert response is not None
        if response.usage is not None:
            usage.prompt_tokens += response.usage.prompt_tokens or 0
            usage.completion_tokens += response.usage.completion_tokens or 0
        return _answer(response)


class LlmSession:
    """One event loop and one `Llm` client for a worker's whole life: the client's connections live
    in the loop, so both are kept across batches and closed together."""

    def __init__(self, cfg: LlmConfig):
        self.loop = asyncio.new_event_loop()
        self.llm = Llm.from_config(cfg)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.run_until_complete(self.llm.aclose())
            self.loop.close()


def _answer(response: Any) -> tuple[str, str | None]:
    if not response.choices:
        raise _Invalid("the server returned no choices")
    choice = response.choices[0]
    message = choice.message
    if getattr(message, "refusal", None):
        raise _Invalid(f"the model refused: {message.refusal[:300]}")
    extra = message.model_extra or {}
    reasoning = getattr(message, "reasoning", None) or extra.get("reasoning") or extra.get("reasoning_content")
    content = message.content or ""
    thoughts = _THINK.findall(content)
    if thoughts:  # a model without a reasoning parser on the server
        content = _THINK.sub("", content).strip()
        reasoning = "\n".join(filter(None, [reasoning, *(t.strip() for t in thoughts)]))
    if choice.finish_reason == "length":
        raise _CutOff(f"the answer was cut at max_tokens ({len(content)} characters so far)")
    return content, reasoning or None


def _repair_note(errors: str) -> str:
    return ("Your last reply does not satisfy the required JSON schema: "
            f"{errors}. Reply again with one JSON object that follows the schema exactly, "
            "fixing these problems. Output only the JSON.")

