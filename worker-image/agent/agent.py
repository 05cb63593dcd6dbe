"""The agent: one engine process, its GPU, readiness, drain and the exit reason.

The same code runs both engines; only the child's command line (and, for
the simulated engine, the simulated GPU behind the NVML adapter) differs.
A worker without a GPU (--device cpu) has no WatchedGpu: no NVML thread,
no Xid/ECC/stuck checks, nothing GPU-shaped in /gpu or /metrics.

Life of a worker:

    STARTING -> LOADING -> SERVING -> DRAINING -> STOPPING   (SIGTERM: exit 0)
          \\          \\         \\          \\
           `----------`---------`----------`--> FAILED      (fault: exit != 0)

Ready means: SERVING, the engine's last /health answered, and no GPU fault.
"""

import asyncio
import enum
import logging
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web
from kubeinfer.operator.api import Engine
from kubeinfer.operator.api.exits import ExitCode
from kubeinfer.worker.config import WorkerConfig
from kubeinfer.worker.control import ControlChannel, Message
from kubeinfer.worker.failures import classify_engine_exit
from kubeinfer.worker.faults import EngineFaults, FaultUpdate, apply_update
from kubeinfer.worker.gpuhealth import ReadFailures, StuckDetector, ecc_fault, xid_fault
from kubeinfer.worker.nvml import Gpu, GpuError, GpuLostError, GpuSnapshot, XidEvent
from kubeinfer.worker.probe import EngineLoad, EngineProbe, Health
from kubeinfer.worker.process import EngineChild
from kubeinfer.worker.simnvml import SimulatedNvml
from kubeinfer.worker.stopnote import DrainEnd, StopReport, stop_message

log = logging.getLogger(__name__)

HEALTH_POLL_SECONDS = 0.5
HEALTH_FAILURES_NOT_READY = 3
DRAIN_POLL_SECONDS = 0.1
# The engine must have been idle this long before the drain ends: requests
# sent by a router that has not yet seen /ready turn 503 (it polls every
# second by default) still get served, and so do requests that sit in
# vLLM's front end (rendering, tokenising) while its gauges read 0.
DRAIN_QUIET_SECONDS = 1.5
# CUDA context of a process that has not loaded weights yet.
SIMULATED_CONTEXT_BYTES = 512 * 1024**2


class Phase(enum.StrEnum):
    STARTING = "starting"  # start-up checks, engine not started
    LOADING = "loading"  # engine started, /health not answering yet
    SERVING = "serving"  # engine answers /health
    DRAINING = "draining"  # SIGTERM seen: not ready, in-flight requests finish
    STOPPING = "stopping"  # engine being stopped
    FAILED = "failed"  # a fatal fault; engine being stopped


@dataclass(frozen=True)
class WatchedGpu:
    """The worker's GPU: NVML behind it, its state at start-up (the baseline
    for new ECC errors), and the simulated device when the engine is simulated."""

    nvml: Gpu
    baseline: GpuSnapshot
    simulated: SimulatedNvml | None = None


@dataclass(frozen=True)
class Outcome:
    """How the worker ends: its exit code and the termination message (if any)."""

    code: ExitCode
    reason: str | None


class Agent:
    """Supervises one engine process. `run()` returns when the worker should exit."""

    def __init__(
        self,
        config: WorkerConfig,
        gpu: WatchedGpu | None,
        command: list[str],
        env: dict[str, str],
    ):
        self.config = config
        self.gpu = gpu
        self.last_snapshot: GpuSnapshot | None = gpu.baseline if gpu else None
        self.command = command
        self.env = env
        self.simulated_gpu = gpu.simulated if gpu else None
        self.phase = Phase.STARTING
        self.phase_since = time.monotonic()
        self.started = time.monotonic()
        self.engine_healthy = False
        self.gpu_fault: str | None = None
        self.xid_counts: Counter[int] = Counter()
        self.engine_load = EngineLoad(0, 0, 0)
        self.engine_faults = EngineFaults.from_simulator(config.simulator)
        self.child: EngineChild | None = None
        self._control: ControlChannel | None = None
        self._fatal: asyncio.Future[Outcome] | None = None
        self._stop = asyncio.Event()
        self._thread_stop = threading.Event()
        self._stuck = StuckDetector(config.stuck_seconds)
        self._read_failures = ReadFailures()
        self._unhealthy_since: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0

    # --- state ------------------------------------------------------------------

    def _set_phase(self, phase: Phase) -> None:
        if phase is not self.phase:
            log.info("phase %s -> %s", self.phase, phase)
            self.phase = phase
            self.phase_since = time.monotonic()

    def readiness(self) -> tuple[bool, str]:
        """(ready, why) as /ready answers it."""
        if self.gpu_fault is not None:
            return False, self.gpu_fault
        if self.phase is Phase.SERVING:
            if self.engine_healthy:
                return True, "ready"
            return False, "engine /health is not answering"
        reasons = {
            Phase.STARTING: "starting",
            Phase.LOADING: "loading the model",
            Phase.DRAINING: "draining",
            Phase.STOPPING: "stopping",
            Phase.FAILED: "failed",
        }
        return False, reasons[self.phase]

    def _fail(self, code: ExitCode, reason: str) -> None:
        """A fatal condition: not ready from now on; run() stops the engine and exits."""
        if self._fatal is not None and not self._fatal.done():
            log.error("%s", reason)
            self._fatal.set_result(Outcome(code, reason))

    # --- GPU ----------------------------------------------------------------------

    def _post(self, callback: Any, *args: Any) -> bool:
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True

    def _nvml_thread(self, gpu: WatchedGpu) -> None:
        """All NVML calls happen here: a wedged driver must not block the event loop."""
        poll = self.config.gpu_poll_seconds
        events = False
        try:
            events = gpu.nvml.register_events() != 0
        except GpuError as error:
            log.warning("NVML events unavailable, polling only: %s", error)
        next_read = time.monotonic() + poll
        while not self._thread_stop.is_set():
            try:
                wait = max(0.0, next_read - time.monotonic())
                if events:
                    event = gpu.nvml.wait_event(min(wait, poll) or 0.001, time.time())
                    if event is not None and not self._post(self._on_gpu_event, event):
                        return
                else:
                    self._thread_stop.wait(wait)
                if time.monotonic() >= next_read:
                    next_read = time.monotonic() + poll
                    snapshot = gpu.nvml.snapshot(time.time())
                    if not self._post(self._on_snapshot, snapshot, gpu.baseline):
                        return
            except GpuLostError as error:
                self._post(self._on_gpu_fatal, str(error))
                return
            except GpuError as error:
                if not self._post(self._on_read_error, str(error)):
                    return
                self._thread_stop.wait(poll)

    def _on_gpu_event(self, event: XidEvent) -> None:
        self.xid_counts[event.xid] += 1
        reason = xid_fault(event)
        if reason is None:
            log.warning("Xid %d (application error; the GPU is fine)", event.xid)
            return
        self._on_gpu_fatal(reason)

    def _on_gpu_fatal(self, reason: str) -> None:
        if self.gpu_fault is None:
            self.gpu_fault = reason
        self._fail(ExitCode.GPU_FAULT, reason)

    def _on_snapshot(self, snapshot: GpuSnapshot, baseline: GpuSnapshot) -> None:
        self.last_snapshot = snapshot
        self._read_failures.observe(None)
        reason = ecc_fault(snapshot, baseline)
        if reason is not None:
            self._on_gpu_fatal(reason)

    def _on_read_error(self, error: str) -> None:
        reason = self._read_failures.observe(error)
        log.warning("NVML read failed: %s", error)
        if reason is not None:
            self._on_gpu_fatal(reason)

    async def _watch_stuck(self, probe: EngineProbe) -> None:
        """0% GPU utilisation with requests running, for stuck_seconds: a stuck GPU."""
        while True:
            await asyncio.sleep(self.config.gpu_poll_seconds)
            snapshot = self.last_snapshot
            utilization = snapshot.utilization_percent if snapshot is not None else None
            running = 0
            if self.phase is Phase.SERVING and utilization == 0:
                load = await probe.load()
                if load is not None:
                    self.engine_load = load
                    running = load.running
            reason = self._stuck.observe(time.monotonic(), utilization, running)
            if reason is not None:
                self._on_gpu_fatal(reason)

    # --- engine ---------------------------------------------------------------------

    async def _watch_health(self, probe: EngineProbe) -> None:
        failures = 0
        while True:
            health = await probe.health()
            now = time.monotonic()
            healthy = health is Health.OK
            # A busy vLLM may answer /health late: only a closed port, or
            # several failures in a row, take the worker out of rotation.
            failures = 0 if healthy else failures + 1
            if healthy or health is Health.REFUSED or failures >= HEALTH_FAILURES_NOT_READY:
                self.engine_healthy = healthy
            if self.phase is Phase.LOADING and healthy:
                log.info("engine ready after %.1f s", now - self.phase_since)
                self._set_phase(Phase.SERVING)
            elif self.phase is Phase.SERVING:
                if healthy:
                    self._unhealthy_since = None
                else:
                    since = self._unhealthy_since = self._unhealthy_since or now
                    limit = self.config.unresponsive_seconds
                    if now - since >= limit:
                        self._fail(
                            ExitCode.ENGINE, f"engine stopped answering /health for {limit:.0f} s"
                        )
            await asyncio.sleep(HEALTH_POLL_SECONDS)

    async def _watch_process(self, child: EngineChild) -> None:
        code = await child.wait()
        if child.stop_requested:
            return
        reason = classify_engine_exit(
            list(child.output),
            code,
            loaded=self.phase is not Phase.LOADING,
            source=self.config.model.source,
            revision=self.config.model.revision,
        )
        self._fail(ExitCode.ENGINE, reason)

    # --- simulated engine and GPU ------------------------------------------------------

    def _on_control(self, message: Message) -> None:
        sim = self.simulated_gpu
        if sim is None:
            return
        kind = message.get("type")
        if kind == "loaded":
            share = self.config.model.engine_args.gpu_memory_utilization
            sim.set_memory_used(int(share * sim.gpu.memory_total_bytes))
        elif kind == "utilization":
            sim.set_utilization(int(message.get("percent", 0)))
        elif kind == "xid":
            sim.raise_xid(int(message.get("xid", 79)))

    def apply_faults(self, update: FaultUpdate) -> EngineFaults:
        """The admin endpoint: engine faults to the engine, GPU faults to the GPU."""
        self.engine_faults = apply_update(self.engine_faults, update)
        if self._control is not None:
            payload = self.engine_faults.model_dump(mode="json", by_alias=True)
            self._control.send({"type": "faults", "faults": payload})
        sim = self.simulated_gpu
        if sim is not None:
            if update.ecc_errors:
                sim.add_ecc_errors(update.ecc_errors)
            if update.gpu_fault:
                sim.raise_xid(update.xid)
        return self.engine_faults

    # --- the whole life ---------------------------------------------------------------

    def request_stop(self) -> None:
        self._signals += 1
        if self._signals > 1:
            # A second signal: no more waiting for the drain.
            log.warning("second stop signal: stopping the engine now")
            self._drain_deadline = 0.0
        self._stop.set()

    async def run(self, app: web.Application) -> Outcome:
        """Serve `app` (the agent's endpoints), run the engine, return the outcome."""
        loop = self._loop = asyncio.get_running_loop()
        self._fatal = loop.create_future()
        self._drain_deadline = float("inf")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.config.host, self.config.agent_port).start()
        except OSError as error:
            await runner.cleanup()
            where = f"{self.config.host}:{self.config.agent_port}"
            return Outcome(ExitCode.STARTUP, f"agent cannot listen on {where}: {error}")
        session = aiohttp.ClientSession()
        tasks: list[asyncio.Task[Any]] = []
        try:
            return await self._supervise(session, tasks)
        finally:
            if self.child is not None and self.child.returncode is None:
                # Only an error gets here with the engine alive: never leave it behind.
                self.child.kill_now()
            self._thread_stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._control is not None:
                self._control.close()
            await session.close()
            await runner.cleanup()

    async def _start_engine(self) -> EngineChild:
        pass_fds: tuple[int, ...] = ()
        command = list(self.command)
        child_sock: socket.socket | None = None
        if self.config.engine is Engine.SIMULATED:
            parent_sock, child_sock = socket.socketpair()
            pass_fds = (child_sock.fileno(),)
            command += ["--control-fd", str(child_sock.fileno())]
            self._control = await ControlChannel.open(parent_sock)
            if self.simulated_gpu is not None:
                self.simulated_gpu.set_memory_used(SIMULATED_CONTEXT_BYTES)
        child = EngineChild(command, self.env, pass_fds)
        try:
            await child.start()
        finally:
            if child_sock is not None:
                child_sock.close()
        log.info("engine started: pid %s", child.pid)
        return child

    async def _supervise(self, session: aiohttp.ClientSession, tasks: list[Any]) -> Outcome:
        assert self._fatal is not None
        probe = EngineProbe(session, self.config.probe_host, self.config.port)
        try:
            self.child = child = await self._start_engine()
        except OSError as error:
            return Outcome(ExitCode.ENGINE, f"cannot start the engine {self.command[0]}: {error}")
        self._set_phase(Phase.LOADING)
        tasks.append(asyncio.create_task(self._watch_process(child)))
        tasks.append(asyncio.create_task(self._watch_health(probe)))
        if self.gpu is not None:
            thread = threading.Thread(
                target=self._nvml_thread, args=(self.gpu,), name="nvml", daemon=True
            )
            thread.start()
            tasks.append(asyncio.create_task(self._watch_stuck(probe)))
        if self._control is not None:
            tasks.append(asyncio.create_task(self._control.serve(self._on_control)))
        stop = asyncio.create_task(self._stop.wait())
        tasks.append(stop)
        either: list[asyncio.Future[Any]] = [self._fatal, stop]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if self._fatal.done():
            self._set_phase(Phase.FAILED)
            await child.stop(self.config.engine_stop_seconds)
            return self._fatal.result()
        if self.phase is Phase.SERVING:
            report = await self._drain(probe)
            if self._fatal.done():
                self._set_phase(Phase.FAILED)
                await child.stop(self.config.engine_stop_seconds)
                return self._fatal.result()
        else:  # still loading: nothing to drain
            report = StopReport(loading=True, elapsed_s=time.monotonic() - self.started)
        self._set_phase(Phase.STOPPING)
        code = await child.stop(self.config.engine_stop_seconds)
        log.info("engine stopped (exit status %s)", code)
        if child.killed:
            report = replace(report, engine_killed_after_s=self.config.engine_stop_seconds)
        return Outcome(ExitCode.OK, stop_message(report))

    async def _drain(self, probe: EngineProbe) -> StopReport:
        """Not ready at once; wait until the engine has been idle a moment, or the deadline.

        vLLM does not drain by itself (SIGTERM aborts running requests), so
        the engine gets its signal only after this.
        """
        assert self._fatal is not None
        self._set_phase(Phase.DRAINING)
        loop = asyncio.get_running_loop()
        started = loop.time()
        limit = self.config.drain_seconds
        self._drain_deadline = min(self._drain_deadline, started + limit)
        quiet_since: float | None = None
        last: EngineLoad | None = None
        while not self._fatal.done():
            now = loop.time()
            if now >= self._drain_deadline:
                break
            load = await probe.load()
            now = loop.time()
            if load is not None:
                self.engine_load = load
                idle = load.in_flight == 0 and not load.progressed_since(last)
                last = load
                if not idle:
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = now
                elif now - quiet_since >= DRAIN_QUIET_SECONDS:
                    log.info("drained in %.1f s", now - started)
                    return StopReport(False, now - started, DrainEnd.DRAINED, limit)
            await asyncio.wait(
                [self._fatal], timeout=min(DRAIN_POLL_SECONDS, max(self._drain_deadline - now, 0))
            )
        elapsed = loop.time() - started
        end = DrainEnd.SECOND_SIGNAL if self._signals > 1 else DrainEnd.TIMED_OUT
        if end is DrainEnd.TIMED_OUT and limit == 0:
            end = DrainEnd.DRAINED  # --drain-seconds 0: no drain was asked for
        in_flight = None if last is None else last.in_flight
        log.info("drain ended (%s) after %.1f s; in flight: %s", end.value, elapsed, in_flight)
        return StopReport(False, elapsed, end, limit, in_flight)
