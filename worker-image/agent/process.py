"""The engine child process: start it, copy its output, see it exit, end its whole tree.

The same for vLLM and the simulated engine. The engine's output goes to
the agent's stderr (so `kubectl logs` shows it) and its last lines are
kept, to explain an exit in the termination message.

The engine runs in a session of its own: a SIGTERM (or a terminal's
Ctrl-C) sent to the agent's whole process group must not reach vLLM,
which would abort every running request instead of draining.

Its exit is seen on the pid itself (a pidfd), never on pipe EOF: vLLM's
EngineCore and worker processes inherit its stdout, so after a SIGKILL
of the API server the pipe stays open as long as they live, and asyncio's
`Process.wait()` (which waits for the pipes too) never returned.

No process of the engine's tree outlives the engine or the agent:

- when the engine exits, its process group (= its session, since vLLM
  never calls setsid) is SIGKILLed at once;
- the agent is a child subreaper, so grandchildren orphaned by the
  engine's death re-parent to it and are reaped, not left to init;
- the engine gets a parent-death signal, and a tiny guardian process in
  its own session waits on a pipe from the agent: if the agent dies
  without saying goodbye (SIGKILL, OOM kill) the pipe closes and the
  guardian SIGKILLs the engine's group. PDEATHSIG alone only covers the
  direct child, not vLLM's EngineCore.
"""

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KEEP_LINES = 200
# Longer lines (progress bars redrawn with \r) are cut for the record.
MAX_LINE = 4096
# How long the agent waits for a SIGKILLed group to vanish (and be reaped).
TREE_GONE_SECONDS = 5.0
TREE_POLL_SECONDS = 0.02
# The guardian: read the engine's group id, then wait for EOF. b"bye"
# before EOF means the agent ended the tree itself (the id may be reused).
_GUARDIAN = """
import os, signal, sys
data = sys.stdin.buffer.read()
pgid, _, rest = data.partition(b"\\n")
if pgid and b"bye" not in rest:
    try:
        os.killpg(int(pgid), signal.SIGKILL)
    except OSError:
        pass
"""


class EngineChild:
    """One engine process and everything it starts."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], pass_fds: Sequence[int] = ()):
        self.argv = list(argv)
        self._env = dict(env)
        self._pass_fds = tuple(pass_fds)
        self._process: subprocess.Popen[bytes] | None = None
        self._exited: asyncio.Future[int] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._guardian: subprocess.Popen[bytes] | None = None
        self._guardian_pipe: int | None = None
        self.output: deque[str] = deque(maxlen=KEEP_LINES)
        self.stop_requested = False
        self.killed = False  # SIGKILLed by stop() after the grace period

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        if self._exited is None or not self._exited.done():
            return None
        return self._exited.result()

    async def start(self) -> None:
        """Start the process. Raises OSError when it cannot be executed."""
        loop = asyncio.get_running_loop()
        # Popen itself: fork+exec is quick, and the pidfd below needs the pid now.
        process = self._process = self._spawn()
        self._guard(process.pid)
        self._exited = loop.create_future()
        pidfd = os.pidfd_open(process.pid)
        loop.add_reader(pidfd, self._on_pidfd, pidfd)
        assert process.stdout is not None
        reader = asyncio.StreamReader(limit=2**20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), process.stdout)
        self._pump = asyncio.create_task(self._copy_output(reader))

    def _spawn(self) -> "subprocess.Popen[bytes]":
        _become_subreaper()
        return subprocess.Popen(
            self.argv,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=self._pass_fds,
            start_new_session=True,
            preexec_fn=_die_with_agent(os.getpid()),
        )

    def _guard(self, pgid: int) -> None:
        read_end, write_end = os.pipe()
        try:
            self._guardian = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GUARDIAN],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a group SIGKILL of the agent must miss it
            )
        except OSError as error:
            os.close(write_end)
            log.warning("no guardian for the engine's process tree: %s", error)
            return
        finally:
            os.close(read_end)
        os.write(write_end, f"{pgid}\n".encode())
        self._guardian_pipe = write_end

    def _on_pidfd(self, pidfd: int) -> None:
        """The engine exited: record its status, then end whatever it left behind."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(pidfd)
        os.close(pidfd)
        assert self._process is not None
        assert self._exited is not None
        pid = self._process.pid
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = self._process.returncode if self._process.returncode is not None else -9
        self._process.returncode = code
        self._kill_group(signal.SIGKILL)
        if not self._exited.done():
            self._exited.set_result(code)

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
        """Wait for the exit (at once, whatever the pipes do) and its tree's end.

        Returns the exit status (negative: killed by that signal).
        """
        assert self._exited is not None
        code = await asyncio.shield(self._exited)
        await self._tree_gone()
        if self._pump is not None:
            # The group is gone, so the pipe is closed: the last lines arrive now.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pump), 2.0)
        return code

    def send_signal(self, sig: signal.Signals) -> None:
        if self._process is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, sig)

    def _kill_group(self, sig: signal.Signals) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, sig)

    async def _tree_gone(self) -> None:
        """Reap the group's orphans (re-parented to us) until none is left, or give up."""
        if self._process is None:
            return
        pgid = self._process.pid
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TREE_GONE_SECONDS
        while _reap_group_orphans(pgid):
            if loop.time() > deadline:
                log.warning("engine process group %d still has processes", pgid)
                break
            self._kill_group(signal.SIGKILL)
            await asyncio.sleep(TREE_POLL_SECONDS)
        self._dismiss_guardian()

    def _dismiss_guardian(self) -> None:
        if self._guardian_pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._guardian_pipe, b"bye")
            os.close(self._guardian_pipe)
            self._guardian_pipe = None
        if self._guardian is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._guardian.wait(1.0)

    async def stop(self, grace_s: float) -> int | None:
        """SIGTERM, then SIGKILL (the whole group) after `grace_s` seconds.

        Returns the exit status.
        """
        if self._process is None or self._exited is None:
            return None
        self.stop_requested = True
        self.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), grace_s)
        except TimeoutError:
            log.warning("engine did not stop within %.0f s; killing it", grace_s)
            self.killed = True
            self._kill_group(signal.SIGKILL)
        return await self.wait()

    def kill_now(self) -> None:
        """Last resort (the agent is leaving on an error): SIGKILL the whole group."""
        self.stop_requested = True
        self._kill_group(signal.SIGKILL)


def _become_subreaper() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in (task / "children").read_text().split()]
    return pids


def _reap_group_orphans(pgid: int) -> bool:
    """Reap our children in group `pgid`; True while the group still has a process."""
    for pid in _children():
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pgid:
                os.waitpid(pid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_agent(agent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL the engine when the agent dies, even by SIGKILL."""

    def preexec() -> None:
        # Runs in the child between fork and exec: keep it minimal.
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != agent_pid:
            os._exit(1)  # the agent died before prctl took effect

    return preexec
