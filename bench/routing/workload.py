"""Routing-benchmark workloads and an open-loop streaming chat client.

- ``shared``: many users in multi-turn chats over a few long system prompts
  (as in llm-d's and KubeAI's prefix-caching benchmarks). Each request is
  the user's system prompt + conversation so far + a new question; the
  answer is appended when it arrives, so the next turn extends the prompt.
- ``control``: the same sizes with nothing shared (every prompt unique).

Arrivals are Poisson at a fixed rate (open loop: a slow server does not
slow the client down), so saturation shows as queueing, not as fewer requests.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey", "xray")


def text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:chars]


@dataclass
class Workload:
    """Sizes follow llm-d's shared-prefix benchmark (inference-perf
    ``shared_prefix``: 150 groups x 6,000-token system prompts, 1,200-token
    questions, on GPUs whose KV cache holds a handful of those prompts),
    scaled to the simulated worker's 24,000-token KV cache: a system prompt
    is 1/8 of one worker's cache (6,000 of ~40,000 tokens there), a question
    1/5 of a system prompt, and the distinct system prompts (32 x 3,000 =
    96,000 tokens) are 4x what one worker can hold but half of what the 8
    together can. So round-robin, which sends every prompt everywhere,
    thrashes, while routing that keeps a prompt on one worker can keep it
    cached: the situation the issue and the published figures describe.
    Output is short (32 tokens; llm-d used 1,000) so that a 2-core machine can
    stream it; that understates decode's share of the work (see
    docs/benchmarks.md)."""

    kind: str  # "shared" or "control"
    groups: int = 32  # system prompts
    users_per_group: int = 4  # llm-d: 5 prompts per group
    system_chars: int = 12_000  # ~3,000 tokens at four characters per token
    question_chars: int = 2_400  # ~600 tokens
    turns: int = 4  # then the user starts a new chat (prompt <= ~5,600 tokens)
    max_tokens: int = 32
    seed: int = 1
    rng: random.Random = field(init=False)
    systems: list[str] = field(init=False)
    chats: list[list[dict[str, str]]] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.systems = [f"[system prompt {g}] " + text(self.rng, self.system_chars)
                        for g in range(self.groups)]
        self.chats = [[] for _ in range(self.groups * self.users_per_group)]

    def next_request(self) -> tuple[int, list[dict[str, str]]]:
        user = self.rng.randrange(len(self.chats))
        question = text(self.rng, self.question_chars)
        if self.kind == "control":
            # Unique from the first character: nothing to share, same sizes.
            prompt = f"[{self.rng.getrandbits(64):x}] " + text(self.rng, self.system_chars)
            return user, [{"role": "system", "content": prompt},
                          {"role": "user", "content": question}]
        chat = self.chats[user]
        if len(chat) >= 2 * self.turns:
            chat.clear()
        system = self.systems[user // self.users_per_group]
        # Each user's own history: a per-user tag keeps chats of one group apart.
        messages = [{"role": "system", "content": system}, *chat,
                    {"role": "user", "content": f"(user {user}) {question}"}]
        return user, messages

    def answered(self, user: int, messages: list[dict[str, str]], answer: str) -> None:
        if self.kind == "shared":
            self.chats[user] = [*messages[1:], {"role": "assistant", "content": answer}]


@dataclass
class Result:
    ok: bool
    sent_at: float
    ttft: float | None = None
    itl: float | None = None  # mean gap between tokens after the first
    tokens: int = 0
    times: list[float] = field(default_factory=list)  # when each token arrived


async def one(session: aiohttp.ClientSession, url: str, model: str, messages: list[dict[str, str]],
              max_tokens: int, timeout: float) -> tuple[Result, str]:  # noqa: ASYNC109
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True}
    start = time.monotonic()
    res = Result(False, start)
    parts: list[str] = []
    first = last = None
    try:
        async with session.post(url + "/v1/chat/completions", json=body,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                await resp.read()
                return res, ""
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choices = chunk.get("choices") or []
                if not choices:
                    continue
                piece = (choices[0].get("delta") or {}).get("content")
                if piece:
                    now = time.monotonic()
                    first = first or now
                    last = now
                    parts.append(piece)
                    res.tokens += 1
                    res.times.append(now)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return res, ""
    if first is None or last is None:
        return res, ""
    res.ok = True
    res.ttft = first - start
    if res.tokens > 1:
        res.itl = (last - first) / (res.tokens - 1)
    return res, "".join(parts)


async def drive(urls: list[str], model: str, workload: Workload, rate: float, seconds: float,
                timeout: float = 60.0, warmup: float = 0.0,  # noqa: ASYNC109
                on_warm: Callable[[], Any] | None = None) -> tuple[list[Result], float]:
    """Poisson arrivals at ``rate`` for ``seconds``; requests alternate over
    ``urls`` (several router replicas). Returns results and the wall time
    until the last answer (bounded by ``timeout``). ``on_warm`` runs (in a
    thread) when the first request after ``warmup`` seconds is due."""
    rng = random.Random(workload.seed + 7)
    results: list[Result] = []
    tasks: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def request(i: int) -> None:
            user, messages = workload.next_request()
            res, answer = await one(session, urls[i % len(urls)], model, messages,
                                    workload.max_tokens, timeout)
            results.append(res)
            if res.ok:
                workload.answered(user, messages, answer)

        start = time.monotonic()
        due = start
        i = 0
        warm = on_warm
        while due < start + seconds:
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            if warm is not None and due - start >= warmup:
                await asyncio.to_thread(warm)
                warm = None
            tasks.append(asyncio.create_task(request(i)))
            i += 1
            due += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        return results, time.monotonic() - start


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarize(results: list[Result], wall: float, warmup: float,
              seconds: float) -> dict[str, Any]:
    """Figures over the window from ``warmup`` to ``seconds`` after the first
    request (arrivals still coming, cold caches excluded).

    - ``tok_s_load``: output tokens that reached clients inside that window,
      from any request, per second: what the workers deliver while the load
      is on (at and beyond saturation: their capacity). The main figure.
    - ``tok_s_drain``: every token delivered from ``warmup`` until the last
      answer, per second (as vLLM's benchmark_serving counts, with the
      warm-up left out): adds how long the backlog takes to drain.
    - ``output_tok_s``: the previous definition, kept to compare with older
      tables: tokens of the requests *sent* after ``warmup`` over the time
      until the last answer (the backlog sent before ``warmup`` is served in
      that time but not counted).
    - TTFT percentiles over requests sent in the window; a failed request
      (timeout, error) counts as infinitely slow.
    """
    if not results:
        return {}
    t0 = min(r.sent_at for r in results)
    lo, hi = t0 + warmup, t0 + seconds
    kept = [r for r in results if r.sent_at - t0 >= warmup]
    ok = [r for r in kept if r.ok]
    span = max(wall - warmup, 1e-6)
    ttfts = [r.ttft if r.ok and r.ttft is not None else math.inf for r in kept]
    itls = [r.itl for r in ok if r.itl is not None]
    in_load = sum(1 for r in results for t in r.times if lo <= t < hi)
    after = sum(1 for r in results for t in r.times if t >= lo)
    return {
        "requests": len(kept),
        "errors": len(kept) - len(ok),
        "tok_s_load": in_load / max(seconds - warmup, 1e-6),
        "tok_s_drain": after / span,
        "output_tok_s": sum(r.tokens for r in ok) / span,
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p90": percentile(ttfts, 0.9),
        "itl_mean": sum(itls) / len(itls) if itls else None,
        "ttfts": ttfts,  # for pooling repeats (run.py --repeat)
    }


def parse_counters(text_: str) -> dict[str, float]:
    """Sum the few vLLM samples the benchmark reads from one /metrics page."""
    want = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
            "vllm:request_success_total")
    out = dict.fromkeys(want, 0.0)
    for line in text_.splitlines():
        for name in want:
            if line.startswith(name + "{") or line.startswith(name + " "):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out
