"""The engine child process: start it, copy its output, stop it.

The same for vLLM and the simulated engine. The engine's output goes to
the agent's stderr (so `kubectl logs` shows it) and its last lines are
kept, to explain an exit in the termination message.

The engine runs in a session of its own: a SIGTERM (or a terminal's
Ctrl-C) sent to the agent's whole process group must not reach vLLM,
which would abort every running request instead of draining. It gets a
parent-death signal instead, so it never outlives the agent.
"""

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
KEEP_LINES = 200
# Longer lines (progress bars redrawn with \r) are cut for the record.
MAX_LINE = 4096


class EngineChild:
    """One engine process."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], pass_fds: Sequence[int] = ()):
        self.argv = list(argv)
        self._env = dict(env)
        self._pass_fds = tuple(pass_fds)
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.output: deque[str] = deque(maxlen=KEEP_LINES)
        self.stop_requested = False

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    async def start(self) -> None:
        """Start the process. Raises OSError when it cannot be executed."""
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            pass_fds=self._pass_fds,
            start_new_session=True,
            preexec_fn=_die_with_agent(os.getpid()),
        )
        assert self._process.stdout is not None
        self._pump = asyncio.create_task(self._copy_output(self._process.stdout))

    async def _copy_output(self, stream: asyncio.StreamReader) -> None:
        out = sys.stderr.buffer
        pending = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            with contextlib.suppress(OSError, ValueError):
                out.write(chunk)
                out.flush()
            pending += chunk
            *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                if line.strip():
                    self.output.append(line[:MAX_LINE].decode(errors="replace"))
            pending = pending[-MAX_LINE:]
        if pending.strip():
            self.output.append(pending.decode(errors="replace"))

    async def wait(self) -> int:
        """Wait for the exit and for its last output. Returns the exit status."""
        assert self._process is not None
        code = await self._process.wait()
        if self._pump is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pump), 2.0)
        return code

    def send_signal(self, sig: signal.Signals) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)

    async def stop(self, grace_s: float) -> int | None:
        """SIGTERM, then SIGKILL after `grace_s` seconds. Returns the exit status."""
        if self._process is None:
            return None
        self.stop_requested = True
        self.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self._process.wait(), grace_s)
        except TimeoutError:
            log.warning("engine did not stop within %.0f s; killing it", grace_s)
            self.send_signal(signal.SIGKILL)
            return await self._process.wait()


def _die_with_agent(agent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL the engine when the agent dies, even by SIGKILL."""

    def preexec() -> None:
        # Runs in the child between fork and exec: keep it minimal.
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != agent_pid:
            os._exit(1)  # the agent died before prctl took effect

    return preexec
