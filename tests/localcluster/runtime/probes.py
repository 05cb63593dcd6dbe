"""Container probes (httpGet, tcpSocket, exec) with kubelet's thresholds."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubeinfer.localcluster.runtime.podspec import Container, named_port


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a container, with Kubernetes' defaults filled in."""

    kind: str  # startup | readiness | liveness
    action: dict[str, Any]
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def from_container(cls, container: Container, kind: str) -> ProbeSpec | None:
        probe = container.get(f"{kind}Probe")
        if not probe:
            return None
        return cls(
            kind=kind,
            action=probe,
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


ProbeCheck = Callable[[], Awaitable[bool]]


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # kubelet does not verify HTTPS probes either
    return context


def build_check(
    spec: ProbeSpec,
    container: Container,
    pod_ip: str,
    env: Mapping[str, str],
    session: aiohttp.ClientSession,
) -> ProbeCheck:
    """A coroutine factory that runs the probe once and says whether it passed.

    Raises ConfigError (from named_port) for a probe on an undeclared port name.
    """
    action = spec.action
    if "httpGet" in action:
        get = action["httpGet"]
        scheme = str(get.get("scheme", "HTTP")).lower()
        host = get.get("host") or pod_ip
        url = f"{scheme}://{host}:{named_port(container, get['port'])}{get.get('path', '/')}"
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}

        async def http_check() -> bool:
            try:
                async with session.get(
                    url,
                    headers=headers,
                    ssl=_insecure() if scheme == "https" else False,
                    timeout=aiohttp.ClientTimeout(total=spec.timeout),
                    allow_redirects=False,
                ) as response:
                    return 200 <= response.status < 400
            except (aiohttp.ClientError, TimeoutError, OSError):
                return False

        return http_check
    if "tcpSocket" in action:
        tcp = action["tcpSocket"]
        host, port = tcp.get("host") or pod_ip, named_port(container, tcp["port"])

        async def tcp_check() -> bool:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), spec.timeout
                )
            except (OSError, TimeoutError):
                return False
            writer.close()
            return True

        return tcp_check
    if "exec" in action:
        command = list(action["exec"]["command"])

        async def exec_check() -> bool:
            try:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    env=dict(env),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            except OSError:
                return False
            try:
                return await asyncio.wait_for(process.wait(), spec.timeout) == 0
            except TimeoutError:
                process.kill()
                await process.wait()
                return False

        return exec_check

    async def unsupported() -> bool:
        return False  # grpc probes are not supported by the local runtime

    return unsupported


class ProbeState:
    """Counts consecutive results the way kubelet does."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self.successes = 0
        self.failures = 0

    def record(self, passed: bool) -> bool | None:
        """Feed one result; return the new verdict when a threshold is crossed."""
        if passed:
            self.successes += 1
            self.failures = 0
            if self.successes >= self.spec.success_threshold:
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.spec.failure_threshold:
                return False
        return None
