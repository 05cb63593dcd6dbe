"""`kubeinfer-router`: the command line.

    kubeinfer-router --config routes.yaml            # a file, reloaded on change
    kubeinfer-router --watch NAMESPACE/NAME          # the operator's ConfigMap
    kubeinfer-router --config routes.yaml --processes 4

With ``--processes N`` a supervisor starts N router processes that share
the port (SO_REUSEPORT: the kernel spreads connections), each with a
control socket so that ``/metrics`` and ``/debug/backends`` from any of them
show the whole pod. The supervisor restarts a process that dies and passes
SIGTERM on for a graceful drain.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from kubeinfer.router.config import Settings, TableError, load_table_file
from kubeinfer.router.pool import EjectionPolicy

log = logging.getLogger("kubeinfer.router")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubeinfer-router",
        description="OpenAI-compatible, GPU-aware load balancer for kubeinfer workers.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="FILE",
                     help="routing table file (YAML or JSON), reloaded when it changes")
    src.add_argument("--watch", metavar="NAMESPACE/NAME",
                     help="watch the routing table ConfigMap (key routes.json)")
    d = Settings()
    p.add_argument("--host", default=d.host,
                   help="address to bind (default: $KUBEINFER_BIND_HOST or 0.0.0.0)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    p.add_argument("--processes", type=int, default=1,
                   help="router processes sharing the port via SO_REUSEPORT (default 1)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help="largest request body; larger ones get 413 (default 32 MiB)")
    p.add_argument("--access-log", default="-", metavar="-|off|FILE",
                   help="JSON access log: stdout (-), off, or a file (default -)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--eject-after", type=int, default=d.ejection.consecutive_failures,
                   help="consecutive failed attempts that eject a backend (default 3)")
    p.add_argument("--eject-seconds", type=float, default=d.ejection.base_seconds,
                   help="first ejection time; doubles on each repeat (default 1)")
    p.add_argument("--eject-max-seconds", type=float, default=d.ejection.max_seconds,
                   help="longest ejection (default 30)")
    p.add_argument("--retry-budget-ratio", type=float, default=d.retry_budget_ratio,
                   help="retries allowed per request on average (default 0.2)")
    p.add_argument("--retry-budget-min-per-second", type=float,
                   default=d.retry_budget_min_per_second,
                   help="retries always allowed per second (default 5)")
    p.add_argument("--scrape-interval", type=float, default=d.scrape_interval,
                   help="seconds between scrapes of each backend's /metrics; 0 = off (default 2)")
    p.add_argument("--stats-window", type=int, default=d.stats_window,
                   help="seconds of the sliding window in /debug/backends (default 60)")
    p.add_argument("--upstream-idle-timeout", type=float, default=d.upstream_idle_timeout,
                   help="don't reuse backend connections idle longer than this (default 4; "
                        "vLLM closes them after 5)")
    p.add_argument("--drain-seconds", type=float, default=d.drain_seconds,
                   help="on SIGTERM, wait this long for requests in flight (default 30)")
    p.add_argument("--request-read-timeout", type=float, default=d.request_read_timeout,
                   help="seconds a client has to send a whole request once its connection is "
                        f"idle; slower clients are cut (default {d.request_read_timeout:g})")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--control-dir", help=argparse.SUPPRESS)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        config=args.config,
        watch=args.watch,
        processes=max(1, args.processes),
        max_body_bytes=args.max_body_bytes,
        access_log=args.access_log,
        log_level=args.log_level,
        ejection=EjectionPolicy(consecutive_failures=args.eject_after,
                                base_seconds=args.eject_seconds,
                                max_seconds=args.eject_max_seconds),
        retry_budget_ratio=args.retry_budget_ratio,
        retry_budget_min_per_second=args.retry_budget_min_per_second,
        scrape_interval=args.scrape_interval,
        stats_window=args.stats_window,
        upstream_idle_timeout=args.upstream_idle_timeout,
        drain_seconds=args.drain_seconds,
        request_read_timeout=args.request_read_timeout,
        worker_index=args.worker_index,
        control_dir=args.control_dir,
    )


async def serve(settings: Settings) -> None:
    """Run one router process until SIGTERM/SIGINT, then drain."""
    from kubeinfer.router.app import Router
    from kubeinfer.router.sources import ConfigMapSource, FileSource

    router = Router(settings)
    if settings.config is not None:
        source = FileSource(settings.config, router.apply_table, router.reject_table,
                            settings.reload_interval)
        source.check()
        await router.start()
        router.spawn(source.run(), "config-file")
    else:
        assert settings.watch is not None
        namespace, _, name = settings.watch.partition("/")
        await router.start()
        router.spawn(ConfigMapSource(namespace, name, router.apply_table,
                                     router.reject_table).run(), "configmap-watch")
    log.info("kubeinfer-router listening on %s:%d (process %s, pid %d)", settings.host,
             router.port, settings.worker_index if settings.worker_index is not None else 0,
             os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining: %d connections open", len(router.connections))
    await router.stop()


def supervise(argv: list[str], settings: Settings) -> int:
    """Start ``settings.processes`` router processes and keep them running."""
    control = tempfile.mkdtemp(prefix="kubeinfer-router-")
    stopping = False
    children: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(i: int) -> None:
        children[i] = subprocess.Popen(
            [sys.executable, "-P", "-m", "kubeinfer.router.main", *argv,
             "--worker-index", str(i), "--control-dir", control])

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(settings.processes):
        spawn(i)
    try:
        return _watch_children(children, spawn, lambda: stopping)
    finally:
        shutil.rmtree(control, ignore_errors=True)


def _watch_children(children: dict[int, subprocess.Popen[bytes]],
                    spawn: Callable[[int], None], stopping: Callable[[], bool]) -> int:
    """Restart children that die until told to stop; then wait for all of them."""
    restarts: dict[int, float] = {}
    code = 0
    while children:
        time.sleep(0.2)
        for i, child in list(children.items()):
            rc = child.poll()
            if rc is None:
                continue
            if stopping():
                del children[i]
                code = code or (rc if rc > 0 else 0)
                continue
            # Crash: restart, but not in a tight loop.
            delay = 0.0 if time.monotonic() - restarts.get(i, -1e9) > 10 else 2.0
            log.error("router process %d exited with %s; restarting in %.0fs", i, rc, delay)
            time.sleep(delay)
            restarts[i] = time.monotonic()
            spawn(i)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.config is not None and settings.worker_index is None:
        if not os.path.exists(settings.config):
            print(f"kubeinfer-router: {settings.config}: no such file", file=sys.stderr)
            return 2
        try:
            load_table_file(settings.config)
        except TableError as exc:
            # Start anyway (not ready) and pick up the fix when the file changes.
            log.error("routing table %s is not usable yet: %s", settings.config, exc)
    if settings.watch is not None and "/" not in settings.watch:
        print("kubeinfer-router: --watch takes NAMESPACE/NAME", file=sys.stderr)
        return 2
    if settings.processes > 1 and settings.worker_index is None:
        return supervise(argv, settings)
    import uvloop

    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
