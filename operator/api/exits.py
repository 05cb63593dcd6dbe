"""How a worker ends: its exit classes and the kinds of GPU fault it names.

One vocabulary for both sides of the pod boundary. The worker exits with an
``ExitCode`` and writes a one-line termination message; the operator reads
the exit code from the pod status (never the message text) to decide what
the failure means, and shows the message to people. A GPU fault's message
starts with a ``GpuFault`` kind, so people and alerts can tell them apart.
"""

import enum


class ExitCode(enum.IntEnum):
    """The worker's exit status; every failure is non-zero."""

    OK = 0  # stopped on request (SIGTERM), after draining
    INTERNAL = 1  # a bug in the agent
    USAGE = 2  # invalid command line or spec
    STARTUP = 3  # a start-up check failed: no GPU, not enough memory, model not found
    GPU_FAULT = 4  # the GPU failed or needs service (Xid, ECC, lost, stuck, unreadable)
    ENGINE = 5  # the engine exited, crashed or stopped answering


class GpuFault(enum.StrEnum):
    """The first words of a GPU-fault termination message (exit code GPU_FAULT)."""

    LOST = "GPU lost"  # fallen off the bus (Xid 79): NVML answers GPU_IS_LOST
    FAULT = "GPU fault"  # a critical Xid or uncorrectable ECC errors
    STUCK = "GPU stuck"  # 0 % utilisation with requests running
    UNREADABLE = "GPU unreadable"  # NVML reads keep failing
    NEEDS_SERVICE = "GPU needs service"  # row remapping failed: the GPU must be reset

    def message(self, detail: str) -> str:
        return f"{self.value}: {detail}"
