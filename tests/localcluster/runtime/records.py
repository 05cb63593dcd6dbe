"""Files that say which local process runs which container.

The runtime writes one record per running container; `cluster kill` reads
them to signal a pod's process, and `cluster down` sweeps them so that no
process outlives the cluster even if the runtime itself was killed.
"""

from __future__ import annotations

import json
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

from kubeinfer.localcluster.procs import signal_group, stop_group


@dataclass(frozen=True)
class ProcessRecord:
    namespace: str
    pod: str
    container: str
    pid: int  # also the process group id: every container leads its own group
    start_ticks: int  # from /proc/<pid>/stat, so a reused pid is never signalled


def process_start_ticks(pid: int) -> int:
    """The start time of pid in clock ticks since boot (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[19])


def _still_ours(record: ProcessRecord) -> bool:
    ticks = process_start_ticks(record.pid)
    # Leader gone: the group id cannot be reused while members remain, so
    # whatever is still in the group was started by us.
    return ticks == 0 or ticks == record.start_ticks


def pod_dir(runtime_dir: Path, namespace: str, pod: str) -> Path:
    return runtime_dir / "pods" / f"{namespace}_{pod}"


def record_path(runtime_dir: Path, namespace: str, pod: str, container: str) -> Path:
    return pod_dir(runtime_dir, namespace, pod) / f"{container}.pid.json"


def write_record(runtime_dir: Path, record: ProcessRecord) -> None:
    path = record_path(runtime_dir, record.namespace, record.pod, record.container)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(record)))


def remove_record(runtime_dir: Path, record: ProcessRecord) -> None:
    record_path(runtime_dir, record.namespace, record.pod, record.container).unlink(missing_ok=True)


def read_records(runtime_dir: Path) -> list[ProcessRecord]:
    records = []
    for path in sorted((runtime_dir / "pods").glob("*/*.pid.json")):
        try:
            records.append(ProcessRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return records


def signal_pod(
    runtime_dir: Path,
    namespace: str,
    pod: str,
    container: str | None = None,
    sig: signal.Signals = signal.SIGKILL,
) -> list[ProcessRecord]:
    """Send sig to the process group of a pod's container(s); return those signalled."""
    hit = []
    for record in read_records(runtime_dir):
        if (record.namespace, record.pod) != (namespace, pod):
            continue
        if container and record.container != container:
            continue
        if _still_ours(record) and signal_group(record.pid, sig):
            hit.append(record)
    return hit


def sweep_pod_processes(runtime_dir: Path) -> int:
    """Stop every pod process still recorded; return how many groups were alive."""
    alive = 0
    for record in read_records(runtime_dir):
        if _still_ours(record) and signal_group(record.pid, signal.SIGKILL):
            alive += 1
            stop_group(record.pid, grace_seconds=0)
        remove_record(runtime_dir, record)
    return alive
