"""CPU time and memory of one process, from /proc (Linux only)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    cpu_seconds: float  # user + system, all threads
    rss_mib: float
    hwm_mib: float  # peak RSS so far (VmHWM)


def read_sample(pid: int) -> Sample:
    """Raises OSError when the process is gone."""
    with open(f"/proc/{pid}/stat") as handle:
        # The command name may hold spaces; the fields after ")" are fixed.
        fields = handle.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    memory: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0]) / 1024
    return Sample(time.monotonic(), (utime + stime) / TICKS, memory["VmRSS"], memory["VmHWM"])


@dataclass
class Sampler:
    """Samples a process every interval, so CPU and RSS can be read for any span."""

    pid: int
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            try:
                self.samples.append(read_sample(self.pid))
            except OSError:
                return
            await asyncio.sleep(self.interval)

    def now(self) -> Sample:
        sample = read_sample(self.pid)
        self.samples.append(sample)
        return sample

    def peak_rss_mib(self) -> float:
        return max(s.hwm_mib for s in self.samples)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process (those still alive)."""
    found = {}
    for name, pid in pids.items():
        try:
            found[name] = read_sample(pid).cpu_seconds
        except OSError:
            continue
    return found


def cpu_percent(
    after: dict[str, float], before: dict[str, float], wall_s: float
) -> dict[str, float]:
    """Percent of one core each process used between two cpu_seconds() readings."""
    return {
        name: 100 * (after[name] - before[name]) / wall_s
        for name in after
        if name in before and wall_s > 0
    }
