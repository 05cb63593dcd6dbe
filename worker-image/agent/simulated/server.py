"""The simulated engine's HTTP surface: vLLM 0.32's OpenAI-compatible server.

`/v1/completions`, `/v1/chat/completions` (JSON or SSE), `/v1/models`,
`/health`, `/version`, `/metrics`. Served by aiohttp's low-level server
(no router, no middleware): a dict lookup per request.
"""

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from kubeinfer.worker.simulated import responses as r
from kubeinfer.worker.simulated.engine import RequestAbortedError, SimulatedEngine
from kubeinfer.worker.simulated.kvcache import block_hashes, prompt_tokens_of
from kubeinfer.worker.simulated.metrics import metrics_registry, render
from kubeinfer.worker.simulated.text import TokenSource
from prometheus_client import CONTENT_TYPE_LATEST

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

JSON = "application/json"
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
NOT_FOUND = b'{"detail":"Not Found"}'
METHOD_NOT_ALLOWED = b'{"detail":"Method Not Allowed"}'
# Output length when the client sets no max_tokens: vLLM's completions
# default is 16 tokens; a chat answer "stops" after 16-128 tokens, chosen
# by the prompt like the text itself.
DEFAULT_COMPLETION_TOKENS = 16
CHAT_DEFAULT_RANGE = (16, 128)
# A stream this late (a hang, a stalled loop) restarts its schedule from
# now instead of sending a burst of overdue tokens.
REBASE_AFTER_S = 0.05


def _json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON)


class BadRequestError(Exception):
    def __init__(self, body: bytes, status: int = 400):
        super().__init__(status)
        self.body = body
        self.status = status


def _count_text_tokens(text: str) -> int:
    # About four characters per token, the usual rule of thumb.
    return max(1, (len(text) + 3) // 4)


def _prompt_of_completion(data: dict[str, Any]) -> tuple[bytes, int]:
    """(hash key, prompt tokens) of /v1/completions' `prompt`."""
    if "prompt" not in data:
        raise BadRequestError(r.missing_field_error("prompt", len(data)))
    prompt = data["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt.encode(), _count_text_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return repr(prompt).encode(), len(prompt)
    if isinstance(prompt, list) and len(prompt) > 1:
        raise BadRequestError(
            r.bad_request("the simulated engine serves one prompt per request", "prompt")
        )
    raise BadRequestError(r.invalid_field_error("prompt", "Input should be a valid string"))


def _prompt_of_chat(data: dict[str, Any]) -> tuple[bytes, int]:
    """(hash key, prompt tokens) of /v1/chat/completions' `messages`."""
    if "messages" not in data:
        raise BadRequestError(r.missing_field_error("messages", len(data)))
    messages = data["messages"]
    if not isinstance(messages, list) or not messages:
        raise BadRequestError(r.invalid_field_error("messages", "Input should be a non-empty list"))
    parts: list[str] = []
    tokens = 2
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise BadRequestError(r.invalid_field_error("messages", "Each message needs a role"))
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        text = content if isinstance(content, str) else ""
        parts.append(text)
        tokens += _count_text_tokens(text) + 4  # role and separators
    return "\x00".join(parts).encode(), tokens


class EngineServer:
    """HTTP handlers over one SimulatedEngine."""

    def __init__(self, engine: SimulatedEngine, tokens: TokenSource):
        self.engine = engine
        self.tokens = tokens
        model = engine.model
        self.served_name = model.name
        fingerprint = f"vllm-{r.VLLM_VERSION}-{os.urandom(4).hex()}"
        self.templates = r.Templates(model_json=json.dumps(model.name), fingerprint=fingerprint)
        self.registry = metrics_registry(
            engine.metrics, lambda: engine.running, lambda: engine.waiting, engine.kv_usage
        )
        self._models = r.models_body(
            model.name, model.source, engine.max_model_len, int(time.time()), os.urandom(8).hex()
        )
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/completions"): self.completions,
            ("POST", "/v1/chat/completions"): self.chat_completions,
            ("GET", "/v1/models"): self.models,
            ("GET", "/health"): self.health,
            ("GET", "/version"): self.version,
            ("GET", "/metrics"): self.metrics,
            ("GET", "/ping"): self.health,
        }
        self._paths = {path for _method, path in self._routes}
        self._loop = asyncio.get_running_loop()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        if request.path in self._paths:
            return _json_response(METHOD_NOT_ALLOWED, 405)
        return _json_response(NOT_FOUND, 404)

    # --- small endpoints -----------------------------------------------------

    async def health(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=503 if self.engine.dead else 200)

    async def version(self, request: web.BaseRequest) -> web.StreamResponse:
        return _json_response(b'{"version":"%s"}' % r.VLLM_VERSION.encode())

    async def models(self, request: web.BaseRequest) -> web.StreamResponse:
        return _json_response(self._models)

    async def metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        body = render(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- generation -------------------------------------------------------------

    async def completions(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    def _parse(self, body: bytes, chat: bool) -> tuple[dict[str, Any], bytes, int, int, str]:
        """Validate a request like vLLM. Returns (data, key, prompt, output tokens, finish)."""
        try:
            data = json.loads(body)
        except ValueError as error:
            position = getattr(error, "pos", 0)
            reason = getattr(error, "msg", str(error))
            raise BadRequestError(r.json_invalid_error(position, reason)) from None
        if not isinstance(data, dict):
            raise BadRequestError(r.invalid_field_error("", "Input should be a valid dictionary"))
        key, prompt_tokens = _prompt_of_chat(data) if chat else _prompt_of_completion(data)
        model = data.get("model")
        if model is not None and model != self.served_name:
            raise BadRequestError(r.unknown_model_error(str(model), self.served_name), 404)
        n = data.get("n")
        if n is not None and n != 1:
            raise BadRequestError(r.bad_request("the simulated engine supports only n=1", "n"))
        max_tokens = data.get("max_completion_tokens") if chat else None
        if max_tokens is None:
            max_tokens = data.get("max_tokens")
        limit = self.engine.max_model_len
        if prompt_tokens >= limit:
            raise BadRequestError(
                r.bad_request(
                    f"This model's maximum context length is {limit} tokens. However, your "
                    f"request has {prompt_tokens} input tokens. Please reduce the length of "
                    "the input messages.",
                    "messages" if chat else "prompt",
                )
            )
        if max_tokens is None:
            start = self.tokens.start(key)
            if chat:
                low, high = CHAT_DEFAULT_RANGE
                count, finish = low + start % (high - low + 1), "stop"
            else:
                count, finish = DEFAULT_COMPLETION_TOKENS, "length"
            count = min(count, limit - prompt_tokens)
            return data, key, prompt_tokens, count, finish
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequestError(
                r.bad_request(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
            )
        if max_tokens > limit:
            raise BadRequestError(
                r.bad_request(
                    f"max_tokens={max_tokens} cannot be greater than max_model_len={limit}. "
                    "Please request fewer output tokens. "
                    f"(parameter=max_tokens, value={max_tokens})",
                    "max_tokens",
                )
            )
        if prompt_tokens + max_tokens > limit:
            raise BadRequestError(
                r.bad_request(
                    f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. "
                    f"This model's maximum context length is {limit} tokens and your request "
                    f"has {prompt_tokens} input tokens ({max_tokens} > {limit} - "
                    f"{prompt_tokens}).",
                    "max_tokens",
                )
            )
        return data, key, prompt_tokens, max_tokens, "length"

    async def _generate(self, request: web.BaseRequest, *, chat: bool) -> web.StreamResponse:
        engine = self.engine
        arrival = self._loop.time()
        body = await request.read()
        try:
            data, key, prompt_tokens, output_tokens, finish = self._parse(body, chat)
        except BadRequestError as bad:
            return _json_response(bad.body, bad.status)
        if engine.dead or engine.stopping:
            return _json_response(r.ENGINE_DEAD_BODY, 500)
        faults = engine.faults
        if faults.added_latency_ms > 0:
            await asyncio.sleep(faults.added_latency_ms / 1000.0)
        if engine.injected_error():
            return _json_response(r.INJECTED_ERROR_BODY, 500)
        stream = data.get("stream") is True
        options = data.get("stream_options")
        include_usage = (
            stream and isinstance(options, dict) and options.get("include_usage") is True
        )
        metrics = engine.metrics
        metrics.params_max_tokens.observe(output_tokens)
        metrics.params_n.observe(1)
        start = self.tokens.start(key)
        job = Job(arrival, prompt_tokens, output_tokens, finish, start, chat, include_usage)
        cache = engine.cache
        if cache is not None:
            job.blocks = block_hashes(prompt_tokens_of(data, chat), cache.block_size)
        tracked = engine.start()
        try:
            if stream:
                return await self._stream(request, job, tracked)
            return await self._complete(job, tracked)
        finally:
            engine.finish(tracked)

    def _record(self, job: "Job", admitted: float, first: float, done: float) -> None:
        metrics = self.engine.metrics
        decode = done - first
        produced = job.output_tokens
        metrics.prompt_tokens += job.prompt_tokens
        metrics.generation_tokens += produced
        metrics.finished[job.finish] += 1
        metrics.ttft.observe(first - job.arrival)
        metrics.e2e.observe(done - job.arrival)
        metrics.queue_time.observe(admitted - job.arrival)
        metrics.prefill_time.observe(first - admitted)
        metrics.decode_time.observe(decode)
        metrics.inference_time.observe(done - admitted)
        metrics.request_prompt_tokens.observe(job.prompt_tokens)
        metrics.request_generation_tokens.observe(produced)
        if produced > 1:
            metrics.time_per_output_token.observe(decode / (produced - 1))

    async def _complete(self, job: "Job", tracked: Any) -> web.StreamResponse:
        engine = self.engine
        try:
            hit = await engine.acquire_slot(tracked, job.prompt_tokens + job.output_tokens,
                                            job.blocks, job.prompt_tokens)
            admitted = self._loop.time()
            try:
                prefill = engine.prefill_delay(job.prompt_tokens - hit)
                tpot = engine.tpot()
                await engine.sleep(tracked, prefill + (job.output_tokens - 1) * tpot)
            finally:
                engine.release_slot(tracked)
        except RequestAbortedError:
            engine.metrics.finished["abort"] += 1
            return _json_response(r.ENGINE_DEAD_BODY, 500)
        done = self._loop.time()
        first = min(admitted + prefill, done)
        if job.output_tokens > 1:
            engine.metrics.inter_token.observe(tpot, job.output_tokens - 1)
        self._record(job, admitted, first, done)
        engine.request_done()
        text = self.tokens.text(job.start, job.output_tokens)
        created = int(time.time())
        rid = os.urandom(8).hex()
        build = self.templates.chat if job.chat else self.templates.completion
        body = build(rid, created, text, job.finish, job.prompt_tokens, job.output_tokens)
        return _json_response(body)

    async def _stream(
        self, request: web.BaseRequest, job: "Job", tracked: Any
    ) -> web.StreamResponse:
        engine = self.engine
        loop = self._loop
        pieces = self.templates.stream(job.chat, os.urandom(8).hex(), int(time.time()))
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        tokens = self.tokens
        count = job.output_tokens
        sent = 0
        try:
            hit = await engine.acquire_slot(tracked, job.prompt_tokens + count, job.blocks,
                                            job.prompt_tokens)
            admitted = loop.time()
            try:
                tpot = engine.tpot()
                first_due = admitted + engine.prefill_delay(job.prompt_tokens - hit)
                first = last = first_due
                while sent < count:
                    due = first_due + sent * tpot
                    now = loop.time()
                    if due > now or engine.faults.hang:
                        await engine.sleep(tracked, due - now)
                        now = loop.time()
                    if now - due > REBASE_AFTER_S + tpot:
                        first_due = now - sent * tpot  # late: no burst of overdue tokens
                    if tpot > 0:
                        batch = max(1, min(count - sent, int((now - first_due) / tpot) + 1 - sent))
                    else:
                        batch = count - sent
                    parts = []
                    if sent == 0:
                        first = now
                        if pieces.first:
                            parts.append(pieces.first)
                    else:
                        engine.metrics.inter_token.observe(now - last)
                        if batch > 1:
                            engine.metrics.inter_token.observe(0.0, batch - 1)
                    for index in range(sent, sent + batch):
                        parts.append(pieces.token_head)
                        parts.append(tokens.token(job.start, index))
                        parts.append(
                            pieces.final(job.finish) if index == count - 1 else pieces.token_tail
                        )
                    await response.write(b"".join(parts))
                    sent += batch
                    last = now
            finally:
                engine.release_slot(tracked)
        except RequestAbortedError as aborted:
            engine.metrics.finished["abort"] += 1
            dead = aborted.reason == "dead"
            ending = r.ENGINE_DEAD_STREAM_END if dead else pieces.abort + r.DONE
            with contextlib.suppress(ConnectionError):  # the client may be gone too
                await response.write(ending)
                await response.write_eof()
            return response
        except ConnectionError:
            engine.metrics.finished["abort"] += 1
            return response
        self._record(job, admitted, first, loop.time())
        engine.request_done()
        tail = pieces.usage(job.prompt_tokens, count) + r.DONE if job.include_usage else r.DONE
        await response.write(tail)
        await response.write_eof()
        return response


class Job:
    """What one generation request asks for."""

    __slots__ = (
        "arrival",
        "blocks",
        "chat",
        "finish",
        "include_usage",
        "output_tokens",
        "prompt_tokens",
        "start",
    )

    def __init__(
        self,
        arrival: float,
        prompt_tokens: int,
        output_tokens: int,
        finish: str,
        start: int,
        chat: bool,
        include_usage: bool,
    ):
        self.arrival = arrival
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.finish = finish
        self.start = start
        self.chat = chat
        self.include_usage = include_usage
        self.blocks: list[bytes] = []  # the prompt's KV block hashes (cache model on)
