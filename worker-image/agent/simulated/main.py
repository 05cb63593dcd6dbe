"""`python -m kubeinfer.worker.simulated`: the simulated engine process.

The agent starts it the way it starts vLLM. It can also run alone (for a
benchmark, say): faults then come from --simulator-spec only.

Like vLLM it listens only once the model is "loaded" (loadSeconds), and on
SIGTERM it does not drain: it stops listening, aborts running requests
(streams end with finish_reason "abort", others get a 500) and exits. The
agent drains before it sends SIGTERM.
"""

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence

import uvloop
from aiohttp import web
from kubeinfer.operator.api import ModelSpec, SimulatorSpec
from kubeinfer.worker.control import ControlChannel, Message
from kubeinfer.worker.faults import EngineFaults
from kubeinfer.worker.simulated.engine import SimulatedEngine
from kubeinfer.worker.simulated.server import EngineServer
from kubeinfer.worker.simulated.text import TokenSource

log = logging.getLogger("kubeinfer.worker.simulated")

UTILIZATION_REPORT_SECONDS = 1.0
# How long aborted requests get to write their last bytes before exit.
ABORT_FLUSH_SECONDS = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kubeinfer.worker.simulated")
    parser.add_argument("--model-spec", required=True)
    parser.add_argument("--simulator-spec", default="{}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--control-fd", type=int)
    return parser


class EngineProcess:
    """Load, serve, report to the agent, stop like vLLM."""

    def __init__(self, model: ModelSpec, simulator: SimulatorSpec, host: str, port: int):
        self.model = model
        self.simulator = simulator
        self.host = host
        self.port = port
        self.control: ControlChannel | None = None
        self.exit_code = 0
        self._stop = asyncio.Event()

    def _send(self, message: Message) -> None:
        if self.control is not None:
            self.control.send(message)

    def _on_gpu_fault(self, xid: int) -> None:
        log.error("simulated GPU fault: Xid %d", xid)
        self._send({"type": "xid", "xid": xid})

    def _on_crash(self, reason: str) -> None:
        # The line the agent reads to explain the exit, worded like vLLM's.
        print(f"ERROR EngineDeadError: {reason}", file=sys.stderr, flush=True)
        # vLLM 0.32's API server exits 0 after its engine core died
        # (engine_death.json): the exit code alone does not say it failed.
        self.exit_code = 0
        asyncio.get_running_loop().call_later(0.2, self._stop.set)

    def _on_control(self, message: Message) -> None:
        if message.get("type") == "faults":
            faults = EngineFaults.model_validate(message.get("faults", {}))
            self.engine.set_faults(faults)
            log.info("faults now %s", faults.model_dump_json(by_alias=True))

    async def _report_utilization(self) -> None:
        """The busy fraction of the last second, as NVML's utilisation would show it."""
        loop = asyncio.get_running_loop()
        last_busy, last_time = self.engine.busy_seconds(), loop.time()
        while True:
            await asyncio.sleep(UTILIZATION_REPORT_SECONDS)
            busy, now = self.engine.busy_seconds(), loop.time()
            percent = round(100 * (busy - last_busy) / max(now - last_time, 1e-6))
            last_busy, last_time = busy, now
            self._send({"type": "utilization", "percent": percent})

    async def run(self, control_fd: int | None) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        tasks: list[asyncio.Task[None]] = []
        if control_fd is not None:
            self.control = await ControlChannel.open(socket.socket(fileno=control_fd))
        self.engine = SimulatedEngine(
            self.model, self.simulator, on_gpu_fault=self._on_gpu_fault, on_crash=self._on_crash
        )
        if self.control is not None:
            tasks.append(asyncio.create_task(self.control.serve(self._on_control)))
        tokens = TokenSource(self.simulator.seed)
        server = EngineServer(self.engine, tokens)
        # Like vLLM: nothing listens while the model loads.
        if self.simulator.load_seconds > 0:
            log.info("loading model %s (%.1f s)", self.model.source, self.simulator.load_seconds)
            try:
                await asyncio.wait_for(self._stop.wait(), self.simulator.load_seconds)
                return 0  # stopped while loading
            except TimeoutError:
                pass
        runner = web.ServerRunner(web.Server(server.handle, access_log=None), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        await site.start()
        log.info("serving %s on %s:%d", self.model.name, self.host, self.port)
        self._send({"type": "loaded"})
        tasks.append(asyncio.create_task(self._report_utilization()))
        await self._stop.wait()
        # vLLM on SIGTERM: the listener closes at once and running requests end.
        await site.stop()
        self.engine.stopping = True
        self.engine.abort_all("abort")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.engine.wait_idle(), ABORT_FLUSH_SECONDS)
        for task in tasks:
            task.cancel()
        await runner.cleanup()
        if self.control is not None:
            self.control.close()
        return self.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(asctime)s %(name)s: %(message)s"
    )
    args = _parser().parse_args(argv)
    model = ModelSpec.model_validate_json(args.model_spec)
    simulator = SimulatorSpec.model_validate_json(args.simulator_spec)
    process = EngineProcess(model, simulator, args.host, args.port)
    try:
        return uvloop.run(process.run(args.control_fd))
    except OSError as error:
        print(f"ERROR cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
