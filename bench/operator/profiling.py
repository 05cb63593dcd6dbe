"""Optional: where the operator's CPU goes, sampled with py-spy (--py-spy).

py-spy is not a dependency of the project; install it anywhere
(`pip install --target /tmp/pyspy py-spy`) and pass its binary. Each phase
writes py-spy's raw (collapsed-stack) output, and the report lists the
functions that were on the stack in most samples.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SAMPLES_PER_SECOND = 50


class PySpy:
    """`py-spy record` on one process, one file per phase."""

    def __init__(self, binary: Path, pid: int, out_dir: Path) -> None:
        self.binary = binary
        self.pid = pid
        self.out_dir = out_dir
        self._running: tuple[str, subprocess.Popen[bytes]] | None = None
        self.outputs: dict[str, Path] = {}

    def start(self, phase: str) -> None:
        self.stop()
        out = self.out_dir / f"operator-{phase}.pyspy.txt"
        argv = [str(self.binary), "record", "--pid", str(self.pid), "--output", str(out),
                "--format", "raw", "--rate", str(SAMPLES_PER_SECOND), "--nonblocking"]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._running = (phase, process)
        self.outputs[phase] = out

    def stop(self) -> None:
        if self._running is None:
            return
        _, process = self._running
        self._running = None
        # SIGINT makes py-spy write its output and exit.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(:\d+)?\)$")


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    short = "/".join(Path(match["file"]).parts[-2:])
    return f"{match['function']} ({short})"


def _package(frame: str) -> str:
    """The top folder (site-packages) or module (stdlib) of a frame's file."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    parts = Path(match["file"]).parts
    return parts[0] if len(parts) > 1 else parts[-1].removesuffix(".py")


@dataclass(frozen=True)
class Profile:
    samples: int  # busy samples
    by_package: list[tuple[float, str]]  # self time: where the CPU was spent
    functions: list[tuple[float, str]]  # inclusive: what it was spent for


def summarise(raw: Path, count: int = 20) -> Profile:
    """Shares of busy samples, by package (self) and by function (inclusive).

    py-spy leaves idle threads out, but not a pool thread waiting for work
    in concurrent.futures; those samples are dropped. The frames every
    busy sample shares (the entry point, the event loop) are left out of
    the function list.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = stack.split(";")
        if "concurrent/futures/thread.py" in frames[-1]:
            continue
        samples = int(number)
        busy += samples
        own[_package(frames[-1])] += samples
        for function in {_function(frame) for frame in frames}:
            inclusive[function] += samples
    if not busy:
        return Profile(0, [], [])
    everywhere = max(inclusive.values())
    functions = [(n / busy, f) for f, n in inclusive.most_common() if n < 0.98 * everywhere]
    return Profile(
        samples=busy,
        by_package=[(n / busy, p) for p, n in own.most_common(12)],
        functions=functions[:count],
    )
