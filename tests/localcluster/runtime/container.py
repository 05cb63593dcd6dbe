"""One container of a pod as a local process: start, probe, restart, stop.

The container status it keeps has the shape of the API's ContainerStatus,
so the pod runner can write it as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubeinfer.localcluster.procs import die_with_parent, signal_group
from kubeinfer.localcluster.realvllm.env import vllm_bin_dir
from kubeinfer.localcluster.runtime import records
from kubeinfer.localcluster.runtime.podspec import ConfigError, Container
from kubeinfer.localcluster.runtime.probes import ProbeSpec, ProbeState, build_check

log = logging.getLogger(__name__)

# Kubernetes' limits on what a container's termination message may hold.
_MESSAGE_MAX_BYTES = 4096
_FALLBACK_LOG_LINES = 80
_FALLBACK_LOG_MAX_BYTES = 2048


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Launch:
    """Everything needed to start the container's process once."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True)
class Backoff:
    """Restart delays: initial, doubling, capped; reset after a long enough run."""

    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.initial * 2 ** max(failures - 1, 0), self.maximum))


@dataclass
class ContainerContext:
    """What a container runner needs from its pod."""

    namespace: str
    pod: str
    pod_ip: str
    restart_policy: str
    runtime_dir: Path
    pod_dir: Path
    prepare: Callable[[Container], Awaitable[Launch]]
    on_change: Callable[[], None]
    node_up: asyncio.Event
    http: aiohttp.ClientSession
    backoff: Backoff = field(default_factory=Backoff)
    grace_seconds: Callable[[], float] = lambda: 30.0


class ContainerRunner:
    """Runs one container until the pod stops it or its restart policy says done."""

    def __init__(self, context: ContainerContext, container: Container, *, init: bool) -> None:
        self.ctx = context
        self.spec = container
        self.name: str = container["name"]
        self.init = init
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.container_id = ""
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self._last_terminated: dict[str, Any] = {}
        self.finished = False  # terminated and will not be restarted
        self.succeeded = False
        self._process: asyncio.subprocess.Process | None = None
        self._record: records.ProcessRecord | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._failures = 0
        self.log_path = context.pod_dir / f"{self.name}.log"
        self.termination_log = context.pod_dir / f"{self.name}.termination-log"

    # -- status ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ContainerStatus, with explicit nulls so a strategic merge drops stale states."""
        state_keys = ("waiting", "running", "terminated")
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": self.container_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": {key: self.state.get(key) for key in state_keys},
            "lastState": {key: self.last_state.get(key) for key in state_keys},
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.state = state
        self.ctx.on_change()

    # -- lifecycle ------------------------------------------------------------

    async def run(self) -> None:
        """Start, supervise and restart the process until stopped or finished."""
        while not self.stopping():
            await self.ctx.node_up.wait()
            if self.stopping():
                break
            exit_code = await self._run_once()
            if exit_code is None or self.stopping():
                continue  # not prepared (retried after a back-off) or being stopped
            if not self._should_restart(exit_code):
                self.finished = True
                self.succeeded = exit_code == 0
                self.ctx.on_change()
                break
            delay = self.ctx.backoff.delay(self._failures)
            if delay > 0:
                self._set_state(
                    {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off {delay:.0f}s restarting failed "
                            f"container={self.name} pod={self.ctx.pod}",
                        }
                    }
                )
                await self._pause(delay)
            if self.stopping():
                break
            self.restart_count += 1
            self.last_state = {"terminated": self._last_terminated}

    def stopping(self) -> bool:
        # A call, not an attribute, so type checkers re-read it after every
        # await: stop() may have run meanwhile.
        return self._stopping

    def _should_restart(self, exit_code: int) -> bool:
        policy = self.ctx.restart_policy
        if self.init:
            # An init container that fails is retried unless the pod never restarts.
            return exit_code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run_once(self) -> int | None:
        """Run the process once; its exit code, or None when it could not be prepared."""
        try:
            launch = await self.ctx.prepare(self.spec)
        except ConfigError as error:
            self._set_state(
                {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
            )
            self._failures += 1
            await self._pause(self.ctx.backoff.delay(self._failures))
            return None
        if self.stopping():
            return None  # stopped while the environment was being prepared
        self.termination_log.unlink(missing_ok=True)
        self.termination_log.touch()
        started_at = now()
        loop = asyncio.get_running_loop()
        begun = loop.time()
        try:
            with self.log_path.open("ab") as log_file:
                log_file.write(f"--- {started_at} starting {launch.argv!r}\n".encode())
                log_file.flush()
                self._process = await asyncio.create_subprocess_exec(
                    *launch.argv,
                    env=launch.env,
                    cwd=launch.cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
        except OSError as error:
            self._failures += 1
            self._finish(128, "StartError", str(error), started_at)
            return 128
        process = self._process
        if self.stopping():
            # stop() ran while the process was being created and could not see it.
            signal_group(process.pid, signal.SIGKILL)
        self._record = records.ProcessRecord(
            self.ctx.namespace, self.ctx.pod, self.name, process.pid,
            records.process_start_ticks(process.pid),
        )  # fmt: skip
        records.write_record(self.ctx.runtime_dir, self._record)
        self.container_id = f"localruntime://{process.pid}"
        self.started = ProbeSpec.from_container(self.spec, "startup") is None
        self.ready = False
        self._set_state({"running": {"startedAt": started_at}})
        probes = asyncio.create_task(self._probe(launch, process))
        returncode = await process.wait()
        probes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probes
        # Like a container's cgroup: nothing the process started outlives it.
        signal_group(process.pid, signal.SIGKILL)
        records.remove_record(self.ctx.runtime_dir, self._record)
        self._process = None
        exit_code = returncode if returncode >= 0 else 128 - returncode
        if loop.time() - begun >= self.ctx.backoff.reset_after:
            self._failures = 0
        self._failures += 1
        self._finish(exit_code, "Completed" if exit_code == 0 else "Error", None, started_at)
        return exit_code

    def _finish(self, exit_code: int, reason: str, message: str | None, started_at: str) -> None:
        self.ready = False
        message = message or self._termination_message(exit_code)
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": now(),
            "containerID": self.container_id,
        }
        if message:
            terminated["message"] = message
        self._last_terminated = terminated
        self._set_state({"terminated": terminated})

    def _termination_message(self, exit_code: int) -> str:
        try:
            message = self.termination_log.read_bytes()[:_MESSAGE_MAX_BYTES]
        except OSError:
            message = b""
        policy = self.spec.get("terminationMessagePolicy", "File")
        if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
            try:
                lines = self.log_path.read_bytes().splitlines(keepends=True)
            except OSError:
                lines = []
            message = b"".join(lines[-_FALLBACK_LOG_LINES:])[-_FALLBACK_LOG_MAX_BYTES:]
        return message.decode(errors="replace")

    # -- probes ---------------------------------------------------------------

    async def _probe(self, launch: Launch, process: asyncio.subprocess.Process) -> None:
        def check(spec: ProbeSpec) -> Callable[[], Awaitable[bool]]:
            return build_check(spec, self.spec, self.ctx.pod_ip, launch.env, self.ctx.http)

        startup = ProbeSpec.from_container(self.spec, "startup")
        if startup:
            await asyncio.sleep(startup.initial_delay)
            counter = ProbeState(startup)
            probe = check(startup)
            while True:
                verdict = counter.record(await probe())
                if verdict is True:
                    break
                if verdict is False:
                    await self._kill_for_restart("startup")
                    return
                await asyncio.sleep(startup.period)
            self.started = True
            self.ctx.on_change()
        readiness = ProbeSpec.from_container(self.spec, "readiness")
        liveness = ProbeSpec.from_container(self.spec, "liveness")
        if readiness is None:
            self.ready = True
            self.ctx.on_change()
        loops = [
            self._probe_loop(spec, check(spec))
            for spec in (readiness, liveness)
            if spec is not None
        ]
        await asyncio.gather(*loops)

    async def _probe_loop(self, spec: ProbeSpec, probe: Callable[[], Awaitable[bool]]) -> None:
        await asyncio.sleep(spec.initial_delay)
        counter = ProbeState(spec)
        while True:
            verdict = counter.record(await probe())
            if spec.kind == "readiness" and verdict is not None and verdict != self.ready:
                self.ready = verdict
                self.ctx.on_change()
            if spec.kind == "liveness" and verdict is False:
                await self._kill_for_restart("liveness")
                return
            await asyncio.sleep(spec.period)

    async def _kill_for_restart(self, probe: str) -> None:
        log.info("%s/%s %s: %s probe failed, killing", self.ctx.namespace, self.ctx.pod,
                 self.name, probe)  # fmt: skip
        if self._process:
            await self._terminate(self._process, self.ctx.grace_seconds())

    # -- stopping -------------------------------------------------------------

    async def stop(self, grace_seconds: float) -> None:
        """SIGTERM the process group, SIGKILL after the grace period; no more restarts."""
        self._stopping = True
        self._wake.set()
        if self._process:
            await self._terminate(self._process, grace_seconds)

    async def kill_now(self) -> None:
        """SIGKILL the process (node lost); the runner restarts it when the node is back."""
        if self._process:
            signal_group(self._process.pid, signal.SIGKILL)
            await self._process.wait()

    async def _terminate(self, process: asyncio.subprocess.Process, grace: float) -> None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), max(grace, 0))
        except TimeoutError:
            signal_group(process.pid, signal.SIGKILL)
            await process.wait()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None


def base_env(bin_dir: Path) -> dict[str, str]:
    """The environment every container starts from (before the pod's env).

    Real vLLM (its CPU build, from `kubeinfer cluster vllm`) is on the PATH
    when it has been installed, as it is in the worker images: last, so its
    virtualenv's python and pip shadow nothing.
    """
    parts = [str(bin_dir), os.environ.get("PATH", os.defpath)]
    vllm = vllm_bin_dir()
    if vllm is not None:
        parts.append(str(vllm))
    path = os.pathsep.join(parts)
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/"), "PYTHONUNBUFFERED": "1"}
    for name in ("LANG", "LC_ALL", "TMPDIR", "TZ"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env
