"""The agent's view of the engine over HTTP: /health and the load gauges.

Works against vLLM and the simulated engine alike: both answer /health and
export vllm:num_requests_running / vllm:num_requests_waiting.
"""

import enum
from dataclasses import dataclass

import aiohttp

RUNNING = b"vllm:num_requests_running"
WAITING = b"vllm:num_requests_waiting"
FINISHED = b"vllm:request_success_total"
# Counted by vLLM's HTTP middleware once a response has been sent to the
# end (a stream: after [DONE]); /metrics and /health are not counted. It
# moves while requests are still in vLLM's front end, where the engine's
# gauges already read 0 (detokenising, streaming the last chunks).
HTTP_DONE = b"http_requests_total"


class Health(enum.Enum):
    OK = "ok"
    REFUSED = "refused"  # nothing listens: loading, or gone
    FAILED = "failed"  # an error status, a reset or a timeout: maybe just busy


@dataclass(frozen=True)
class EngineLoad:
    running: int
    waiting: int
    finished: int
    http_done: int = 0

    @property
    def in_flight(self) -> int:
        return self.running + self.waiting

    def progressed_since(self, earlier: "EngineLoad | None") -> bool:
        """Did a request finish, in the engine or over HTTP, since `earlier`?"""
        if earlier is None:
            return True
        return (self.finished, self.http_done) != (earlier.finished, earlier.http_done)


def _sample_value(line: bytes, name: bytes) -> float | None:
    """The value of a sample line of metric `name` (any labels), else None."""
    if not line.startswith(name):
        return None
    rest = line[len(name) :]
    if not rest or rest[:1] not in (b"{", b" "):
        return None  # another metric whose name starts the same
    try:
        return float(line.rsplit(b" ", 1)[1])
    except (IndexError, ValueError):
        return None


def parse_engine_load(text: bytes) -> EngineLoad:
    """Sum the gauges over all label sets (engines, models) of a /metrics page."""
    totals = {RUNNING: 0.0, WAITING: 0.0, FINISHED: 0.0, HTTP_DONE: 0.0}
    for line in text.split(b"\n"):
        if not line.startswith((b"vllm:", b"http_")):
            continue
        for name in totals:
            value = _sample_value(line, name)
            if value is not None:
                totals[name] += value
                break
    return EngineLoad(
        int(totals[RUNNING]), int(totals[WAITING]), int(totals[FINISHED]), int(totals[HTTP_DONE])
    )


class EngineProbe:
    """HTTP probes of one engine, on the agent's shared client session."""

    def __init__(self, session: aiohttp.ClientSession, host: str, port: int):
        bracketed = f"[{host}]" if ":" in host else host
        self.base = f"http://{bracketed}:{port}"
        self._session = session

    async def health(self, timeout_s: float = 2.0) -> Health:
        """What /health says: OK, REFUSED (nothing listens) or FAILED (error, timeout)."""
        try:
            async with self._session.get(
                self.base + "/health", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                await response.read()
                return Health.OK if response.status == 200 else Health.FAILED
        except aiohttp.ClientConnectorError:
            return Health.REFUSED
        except (TimeoutError, aiohttp.ClientError, OSError):
            return Health.FAILED

    async def load(self, timeout_s: float = 2.0) -> EngineLoad | None:
        """Running, waiting and finished requests; None when /metrics does not answer."""
        try:
            async with self._session.get(
                self.base + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                if response.status != 200:
                    return None
                return parse_engine_load(await response.read())
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    async def metrics_text(self, timeout_s: float = 2.0) -> bytes | None:
        """The engine's /metrics page as it is; None when it does not answer."""
        try:
            async with self._session.get(
                self.base + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                return await response.read() if response.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None
