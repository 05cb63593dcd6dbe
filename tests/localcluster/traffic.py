"""Steady OpenAI-client traffic that counts every request (e2e tests, demo).

Bounded: a fixed number of clients, each stopping when told or after
``max_requests_per_client`` requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import openai


@dataclass
class Load:
    base_url: str
    model: str
    clients: int = 4
    stream_every: int = 4  # every n-th request of a client streams
    max_requests_per_client: int = 3000
    pause_seconds: float = 0.02
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _stream(self, client: openai.AsyncOpenAI, prompt: str) -> None:
        stream = await client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=6,
            stream=True,
        )
        finish = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        if finish not in ("length", "stop"):
            raise AssertionError(f"stream ended with finish_reason {finish}")
        self.outcomes["stream-ok"] += 1

    async def _complete(self, client: openai.AsyncOpenAI, prompt: str) -> None:
        answer = await client.completions.create(model=self.model, prompt=prompt, max_tokens=6)
        # A real model may stop at once or emit tokens that decode to no
        # text: what must hold is a finished choice with generated tokens.
        if not answer.choices or answer.choices[0].finish_reason not in ("length", "stop"):
            raise AssertionError(f"unfinished completion: {answer.choices}")
        if answer.usage is None or answer.usage.completion_tokens < 1:
            raise AssertionError(f"no tokens generated: {answer.usage}")
        self.outcomes["ok"] += 1

    async def _client(self, index: int) -> None:
        client = openai.AsyncOpenAI(
            base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, timeout=20
        )
        try:
            for n in range(self.max_requests_per_client):
                if self._stop.is_set():
                    return
                started = time.perf_counter()
                streaming = n % self.stream_every == 0
                try:
                    if streaming:
                        await self._stream(client, f"hello {index} {n}")
                    else:
                        await self._complete(client, f"hello {index} {n}")
                    self.latencies.append(time.perf_counter() - started)
                except (openai.APIError, AssertionError) as error:
                    # "failed" counts both kinds; "failed-stream" and
                    # "failed-plain" split them: a stream cut by a dying
                    # worker can't be retried once tokens went out.
                    self.outcomes["failed"] += 1
                    self.outcomes["failed-stream" if streaming else "failed-plain"] += 1
                    self.failures.append(repr(error)[:300])
                await asyncio.sleep(self.pause_seconds)
        finally:
            await client.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)

    def total(self) -> int:
        return sum(self.outcomes[kind] for kind in ("ok", "stream-ok", "failed"))

    def snapshot(self) -> Counter[str]:
        """The counts so far (subtract two snapshots for the figures of a time window)."""
        return Counter(self.outcomes)

    def summary(self) -> str:
        ordered = sorted(self.latencies)
        p50 = ordered[len(ordered) // 2] * 1000 if ordered else 0.0
        p99 = ordered[int(len(ordered) * 0.99)] * 1000 if ordered else 0.0
        return (
            f"{self.total()} requests: {self.outcomes['ok']} completions ok, "
            f"{self.outcomes['stream-ok']} streams ok, {self.outcomes['failed']} failed; "
            f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
