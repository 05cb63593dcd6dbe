"""The state file of a running cluster, and the claim on its loopback octet.

Several clusters may run on one machine (two test sessions, a demo). Each
claims one octet B so that its pods live in 127.B.0.0/16 and never share
an address (and a port) with another cluster's pods.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubeinfer.localcluster.procs import pid_alive

_CLAIMS_DIR = Path(tempfile.gettempdir()) / "kubeinfer-localcluster-octets"
# 127.0.x.x is left alone: 127.0.0.1 is where every server of the machine lives.
_OCTETS = range(1, 255)


@dataclass
class Component:
    name: str
    pid: int
    log: str
    # The command line, so that a chaos test can restart it in place.
    argv: list[str] = field(default_factory=list)


@dataclass
class ClusterState:
    """What `cluster down|status|env` need to know about a running cluster."""

    root: str
    octet: int
    server: str
    kubeconfig: str
    kubectl: str
    components: list[Component] = field(default_factory=list)
    # The process the components die with (PR_SET_PDEATHSIG), if any: a
    # component restarted later must die with it too, and only then.
    tied_to: int | None = None

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        raw["components"] = [Component(**c) for c in raw.get("components", [])]
        return cls(**raw)


def _claim_path(octet: int) -> Path:
    return _CLAIMS_DIR / str(octet)


def _claim_is_live(path: Path) -> bool:
    try:
        pids = [int(p) for p in path.read_text().split()]
    except (OSError, ValueError):
        return False
    return any(pid_alive(pid) for pid in pids)


def claim_octet(owner_pids: list[int], preferred: int = 1) -> int:
    """Claim a free octet for a new cluster; the claim lives while any owner pid does.

    Raises RuntimeError when every octet is taken.
    """
    _CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    for octet in [preferred, *(o for o in _OCTETS if o != preferred)]:
        path = _claim_path(octet)
        if path.exists() and _claim_is_live(path):
            continue
        path.unlink(missing_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue  # another cluster won the race
        with os.fdopen(fd, "w") as handle:
            handle.write(" ".join(str(pid) for pid in owner_pids))
        return octet
    raise RuntimeError(f"no free loopback octet left in {_CLAIMS_DIR}")


def update_claim(octet: int, owner_pids: list[int]) -> None:
    """Hand the claim over to the cluster's long-lived processes."""
    _claim_path(octet).write_text(" ".join(str(pid) for pid in owner_pids))


def release_octet(octet: int) -> None:
    _claim_path(octet).unlink(missing_ok=True)
