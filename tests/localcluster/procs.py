"""Start and stop long-running processes, each in its own process group.

Every component and every pod process leads its own process group, so a
stop reaches its children too and one pod can be killed without touching
the others. Optionally the process is tied to its parent with
PR_SET_PDEATHSIG, so a crashed test session leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the thread that spawned it exits."""
    # Runs in the child between fork and exec: keep it minimal.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    tie_to_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start argv as the leader of a new session, output appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent if tie_to_parent else None,
        )


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send sig to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except OSError as error:
        if error.errno == errno.ESRCH:
            return False
        raise
    return True


def stop_group(pgid: int, grace_seconds: float, poll: Callable[[], object] | None = None) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after the grace period."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if poll:
            poll()
        if not _group_has_live_members(pgid):
            return
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _group_has_live_members(pgid):
        if poll:
            poll()
        time.sleep(0.05)


def _group_has_live_members(pgid: int) -> bool:
    # Zombies keep a group "alive" for killpg(0) until their parent reaps them.
    return group_alive(pgid) and bool(group_members(pgid))


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in a group."""
    members = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_path.parent.name))
    return members
