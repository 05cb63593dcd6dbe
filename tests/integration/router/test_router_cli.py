"""`kubeinfer-router` as users run it: a process with --config, several
processes sharing the port, and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
from kubeinfer.localcluster.waiting import async_wait_for
from routerhelpers import HOST, make_table, start_router_process

COMPLETION = {"model": "tiny", "prompt": "hello", "max_tokens": 8}


def start_cli(
    tmp_path: Path, table_urls: list[str], *args: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    proc, port, log = start_router_process(tmp_path, make_table(table_urls), *args)
    return proc, f"http://{HOST}:{port}", log


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    async def ready() -> bool:
        async with session.get(url + "/readyz") as r:
            return r.status == 200

    await async_wait_for(ready, 15.0, interval=0.05, what=f"router at {url}")


async def test_processes_share_the_port_and_report_together(mocks, session, tmp_path: Path) -> None:
    backends = await mocks(2)
    proc, url, log = start_cli(
        tmp_path, [f"http://{HOST}:{m.port}" for m in backends], "--processes", "2"
    )
    try:
        await wait_ready(session, url)
        for _ in range(60):
            # A new connection each time, so the kernel spreads them over processes.
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.post(url + "/v1/completions", json=COMPLETION) as r,
            ):
                assert r.status == 200
                await r.read()
        # Whichever process answers, the stats are the pod's.
        for _ in range(4):
            async with aiohttp.ClientSession() as fresh, fresh.get(url + "/debug/backends") as r:
                doc = await r.json()
            assert sum(b["requests"] for b in doc["backends"]) == 60
            assert doc["revisions"]["r1"]["requests"] == 60
        assert sum(m.state.requests for m in backends) == 60
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0, log.read_text()


async def test_sigterm_drains_requests_in_flight(mocks, session, tmp_path: Path) -> None:
    (m,) = await mocks(1, delay=1.0)
    proc, url, log = start_cli(tmp_path, [f"http://{HOST}:{m.port}"])
    try:
        await wait_ready(session, url)
        pending = asyncio.create_task(session.post(url + "/v1/completions", json=COMPLETION))
        await async_wait_for(_running(m), 5.0, interval=0.02)
        proc.send_signal(signal.SIGTERM)
        resp = await pending
        assert resp.status == 200  # finished although the router was told to stop
        resp.release()
        assert await asyncio.to_thread(proc.wait, 10) == 0
        assert "draining" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",
        "-m",
        "kubeinfer.router.main",
        "--config",
        str(tmp_path / "nope.yaml"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"no such file" in err


def _running(m):
    async def check() -> bool:
        return m.state.running == 1

    return check
