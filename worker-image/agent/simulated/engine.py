"""The simulated engine's service-time model and fault state.

A request waits for one of `max_num_seqs` batch slots (FIFO), then takes
`ttft + uncached prompt tokens x prefill_per_token` to its first token and
`tpot (+ per running sequence)` per further token, like a continuously
batched GPU where each sequence advances one token per step. With
`kvCacheBlocks` the prompt's cached prefix (kvcache.py) costs no prefill,
and a request is admitted only when the KV cache can hold it (prompt and
output, cached prefix blocks shared), as vLLM's scheduler admits by free
blocks: KV capacity, not only the slots, limits how many requests run.
With `prefillSerial` prefills queue behind each other as on a
compute-bound GPU, which is what makes cache hits matter under load.
Waiting is a timer per request (a single one
for a non-streaming answer), so the model costs no CPU per token beyond
writing streamed chunks.

Every wait of a request is abortable: engine death (crash fault) and
SIGTERM end running requests the way vLLM does (500, or a stream chunk
with finish_reason "abort").
"""

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubeinfer.operator.api import ModelSpec, SimulatorSpec
from kubeinfer.worker.faults import EngineFaults
from kubeinfer.worker.simulated.kvcache import Allocation, PrefixCache
from kubeinfer.worker.simulated.metrics import EngineMetrics

DEFAULT_MAX_MODEL_LEN = 4096


class RequestAbortedError(Exception):
    """The engine ended this request: `reason` is "abort" (SIGTERM) or "dead" (crash)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Request:
    """One admitted request: what it waits on, so that it can be aborted."""

    __slots__ = ("alloc", "kv_tokens", "waiter")

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.kv_tokens = 0
        self.alloc: Allocation | None = None


class _Waiting:
    """A request waiting for admission, and what it needs."""

    __slots__ = ("future", "hashes", "kv_tokens", "prompt_tokens", "request")

    def __init__(self, request: Request, kv_tokens: int, hashes: Sequence[bytes],
                 prompt_tokens: int) -> None:
        self.request = request
        self.kv_tokens = kv_tokens
        self.hashes = hashes
        self.prompt_tokens = prompt_tokens
        self.future: asyncio.Future[None] | None = None


@dataclass(frozen=True)
class ServiceTime:
    ttft_s: float
    prefill_s_per_token: float
    tpot_s: float


def _wake(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class SimulatedEngine:
    """Slots, timers, faults and counters; no HTTP (see server.py)."""

    def __init__(
        self,
        model: ModelSpec,
        simulator: SimulatorSpec,
        *,
        on_gpu_fault: Callable[[int], None] = lambda xid: None,
        on_crash: Callable[[str], None] = lambda reason: None,
    ):
        self.model = model
        self.max_model_len = model.engine_args.max_model_len or DEFAULT_MAX_MODEL_LEN
        # engineArgs.maxNumSeqs is what vLLM would use; the simulator's own
        # setting applies when the model spec leaves it open.
        self.max_num_seqs = model.engine_args.max_num_seqs or simulator.max_num_seqs
        self.time = ServiceTime(
            ttft_s=simulator.ttft_ms / 1000.0,
            prefill_s_per_token=simulator.prefill_us_per_token / 1e6,
            tpot_s=simulator.tpot_ms / 1000.0,
        )
        self.metrics = EngineMetrics(model.name, self.max_model_len)
        self.metrics.busy_seconds = self.busy_seconds
        self.faults = EngineFaults.from_simulator(simulator)
        self._rng = random.Random(simulator.seed)
        self._on_gpu_fault = on_gpu_fault
        self._on_crash = on_crash
        self._loop = asyncio.get_running_loop()
        self.running = 0
        self._queue: deque[_Waiting] = deque()
        self._active: set[Request] = set()
        self._hang_waiters: list[asyncio.Future[None]] = []
        self._idle_waiter: asyncio.Future[None] | None = None
        self.kv_tokens = 0
        self.kv_capacity = self.max_num_seqs * self.max_model_len
        self.cache: PrefixCache | None = (
            PrefixCache(simulator.kv_cache_blocks, simulator.kv_block_size)
            if simulator.kv_cache_blocks
            else None
        )
        self.tpot_per_seq_s = simulator.tpot_us_per_running_seq / 1e6
        self.prefill_serial = simulator.prefill_serial
        self._prefill_free_at = 0.0
        self.dead = False
        self.stopping = False
        # Busy time: the simulated GPU works while a request holds a slot and
        # the engine is not hung.
        self._busy_total = 0.0
        self._busy_since: float | None = None

    # --- gauges -------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def kv_usage(self) -> float:
        if self.cache is not None:
            return self.cache.usage()
        return min(1.0, self.kv_tokens / self.kv_capacity) if self.kv_capacity else 0.0

    def busy_seconds(self) -> float:
        total = self._busy_total
        if self._busy_since is not None:
            total += self._loop.time() - self._busy_since
        return total

    def _update_busy(self) -> None:
        busy = self.running > 0 and not self.faults.hang
        if busy and self._busy_since is None:
            self._busy_since = self._loop.time()
        elif not busy and self._busy_since is not None:
            self._busy_total += self._loop.time() - self._busy_since
            self._busy_since = None

    # --- faults ---------------------------------------------------------------

    def set_faults(self, faults: EngineFaults) -> None:
        was_hung = self.faults.hang
        self.faults = faults
        if was_hung and not faults.hang:
            waiters, self._hang_waiters = self._hang_waiters, []
            for waiter in waiters:
                _wake(waiter)
        self._update_busy()

    def injected_error(self) -> bool:
        rate = self.faults.error_rate
        return rate > 0 and self._rng.random() < rate

    def request_done(self) -> None:
        """Count a completed request against crash / GPU-fault countdowns."""
        faults = self.faults
        if faults.gpu_fault_after_requests is not None:
            left = faults.gpu_fault_after_requests - 1
            self.faults = faults = faults.model_copy(
                update={"gpu_fault_after_requests": left or None}
            )
            if left == 0:
                self._loop.call_soon(self._on_gpu_fault, 79)
        if faults.crash_after_requests is not None:
            left = faults.crash_after_requests - 1
            self.faults = faults.model_copy(update={"crash_after_requests": left or None})
            if left == 0:
                # After the answer that triggered it has been written.
                self._loop.call_soon(self.die, "simulated crash (fault injection)")

    def die(self, reason: str) -> None:
        """The engine core died: every request fails, then the process exits."""
        if self.dead:
            return
        self.dead = True
        self.abort_all("dead")
        self._on_crash(reason)

    def abort_all(self, reason: str) -> None:
        for request in list(self._active):
            waiter = request.waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(RequestAbortedError(reason))
        for entry in self._queue:
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(RequestAbortedError(reason))

    # --- a request's life -------------------------------------------------------

    def start(self) -> Request:
        request = Request()
        self._active.add(request)
        return request

    def finish(self, request: Request) -> None:
        self._active.discard(request)
        idle = self._idle_waiter
        if not self._active and idle is not None and not idle.done():
            idle.set_result(None)

    async def wait_idle(self) -> None:
        """Until no request is in the engine any more."""
        if self._active:
            self._idle_waiter = self._loop.create_future()
            await self._idle_waiter

    @property
    def active_requests(self) -> int:
        return len(self._active)

    async def acquire_slot(self, request: Request, kv_tokens: int,
                           hashes: Sequence[bytes] = (), prompt_tokens: int = 0) -> int:
        """Wait (FIFO) until a batch slot is free and, with the cache model, the
        KV cache can hold the request (``kv_tokens``: prompt + output); then
        take its blocks. Returns its cached prompt tokens (0 without the cache
        model). Raises RequestAbortedError.

        As in vLLM's scheduler, a head of the queue that does not fit holds
        back the requests behind it, and a request waits rather than take
        blocks that running requests hold; a request bigger than the whole
        cache is admitted alone (over capacity) rather than never.
        """
        if self.dead:
            raise RequestAbortedError("dead")
        entry = _Waiting(request, kv_tokens, hashes, prompt_tokens)
        if self.running < self.max_num_seqs and not self._queue and self._fits(entry):
            self._admit(entry)
        else:
            future: asyncio.Future[None] = self._loop.create_future()
            entry.future = future
            self._queue.append(entry)
            request.waiter = future
            try:
                await future
            except BaseException:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self.release_slot(request)  # admitted just before
                else:
                    self._remove_waiter(entry)
                raise
        return request.alloc.hit_tokens if request.alloc is not None else 0

    def _fits(self, entry: "_Waiting") -> bool:
        if self.cache is None or self.running == 0:
            return True
        return self.cache.fits(entry.hashes, entry.kv_tokens)

    def _admit(self, entry: "_Waiting") -> None:
        request = entry.request
        self.running += 1
        request.kv_tokens = entry.kv_tokens
        self.kv_tokens += entry.kv_tokens
        self.metrics.prefix_queries += entry.prompt_tokens
        if self.cache is not None:
            alloc = self.cache.allocate(entry.hashes, entry.prompt_tokens, entry.kv_tokens)
            request.alloc = alloc
            self.metrics.prefix_hits += alloc.hit_tokens
        self._update_busy()

    def _remove_waiter(self, entry: "_Waiting") -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(entry)
        self._admit_waiting()  # it may have been the head that held others back

    def prefill_delay(self, uncached_tokens: int) -> float:
        """Seconds from now to the first token of a request just admitted."""
        compute = uncached_tokens * self.time.prefill_s_per_token
        if not self.prefill_serial:
            return self.time.ttft_s + compute
        now = self._loop.time()
        start = max(now, self._prefill_free_at)
        self._prefill_free_at = start + compute
        return self.time.ttft_s + (start - now) + compute

    def tpot(self) -> float:
        """Per-token time now: a bigger batch makes every step slower."""
        return self.time.tpot_s + self.tpot_per_seq_s * max(self.running - 1, 0)

    def release_slot(self, request: Request) -> None:
        self.kv_tokens -= request.kv_tokens
        request.kv_tokens = 0
        if request.alloc is not None and self.cache is not None:
            self.cache.release(request.alloc)
            request.alloc = None
        self.running -= 1
        self._admit_waiting()
        self._update_busy()

    def _admit_waiting(self) -> None:
        """Admit waiting requests in order while slots and KV blocks last."""
        queue = self._queue
        while queue and self.running < self.max_num_seqs:
            head = queue[0]
            future = head.future
            assert future is not None
            if future.done():  # aborted while waiting
                queue.popleft()
                continue
            if not self._fits(head):
                return
            queue.popleft()
            self._admit(head)
            future.set_result(None)

    async def sleep(self, request: Request, delay: float) -> None:
        """An abortable timer. Raises RequestAbortedError."""
        if self.dead or self.stopping:
            raise RequestAbortedError("dead" if self.dead else "abort")
        if delay > 0:
            future: asyncio.Future[None] = self._loop.create_future()
            handle = self._loop.call_later(delay, _wake, future)
            request.waiter = future
            try:
                await future
            finally:
                handle.cancel()
        if self.faults.hang:
            await self._hung(request)

    async def _hung(self, request: Request) -> None:
        while self.faults.hang:
            future: asyncio.Future[None] = self._loop.create_future()
            self._hang_waiters.append(future)
            request.waiter = future
            await future
