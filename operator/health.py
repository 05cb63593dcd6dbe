"""The operator's /healthz (liveness) and /readyz (readiness) endpoints.

kopf's own liveness endpoint exists only while kopf runs; a standby runs no
kopf, yet must be alive and Ready (a rolling update of the operator's
Deployment waits for the new pod to be Ready, and a new pod stands by
until the old one lets the lease go). So the process serves both itself.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class HealthState:
    """What the endpoints answer; main keeps it current."""

    identity: str
    role: str = "starting"  # standby | leader | stopping
    alive: Callable[[], bool] = field(default=lambda: True)
    ready: Callable[[], bool] = field(default=lambda: False)

    def answer(self) -> dict[str, str]:
        return {"role": self.role, "identity": self.identity}


def build_health_app(state: HealthState) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response(state.answer(), status=200 if state.alive() else 503)

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response(state.answer(), status=200 if state.ready() else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_health_server(state: HealthState, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_health_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
