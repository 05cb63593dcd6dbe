"""`kubeinfer-operator`: run the kopf operator, optionally as one of several
replicas that elect a leader on a Lease (docs/ha.md)."""

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NoReturn

import kopf
import prometheus_client
import uvloop
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.health import HealthState, start_health_server
from kubeinfer.operator.kube import KubeClient
from kubeinfer.operator.leader import (
    DEFAULT_LEASE_NAME,
    EXIT_LEADERSHIP_LOST,
    LeaderElector,
    default_identity,
)
from kubeinfer.operator.lease import InvalidTimingsError, LeaseTimings
from kubeinfer.operator.metrics import LEADER, FleetCollector, register_fleet

logger = logging.getLogger("kubeinfer.operator")


@dataclass(frozen=True)
class Options:
    images: Images
    resync_seconds: float
    fleet: FleetCollector
    # Leader election's check before every write (None: no election).
    fence: Callable[[], None] | None = None
    # Leader election's identity: kopf's Events name it as reportingInstance.
    identity: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubeinfer-operator", description=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--namespace", action="append", default=[], help="watch this namespace")
    where.add_argument("--all-namespaces", action="store_true", help="watch all (default)")
    parser.add_argument("--worker-image", default=Images().worker)
    parser.add_argument(
        "--worker-cpu-image",
        default=Images().worker_cpu,
        help="worker image for InferenceServices with gpu.count 0 (vLLM's CPU backend)",
    )
    parser.add_argument("--router-image", default=Images().router)
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=5.0,
        help="reconcile every InferenceService at least this often",
    )
    parser.add_argument("--health-port", type=int, default=8080, help="serves /healthz and /readyz")
    parser.add_argument("--metrics-port", type=int, default=9090, help="serves /metrics (0: off)")
    election = parser.add_argument_group("leader election (docs/ha.md)")
    election.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="reconcile only while holding the Lease; stand by otherwise",
    )
    election.add_argument(
        "--leader-election-namespace",
        default=os.environ.get(c.ENV_POD_NAMESPACE),
        help=f"namespace of the Lease (default: ${c.ENV_POD_NAMESPACE})",
    )
    election.add_argument("--leader-election-id", default=DEFAULT_LEASE_NAME, help="Lease name")
    election.add_argument(
        "--leader-election-identity",
        default=None,
        help=f"this candidate's name (default: ${c.ENV_POD_NAME} or the host name, "
        "plus a random suffix)",
    )
    defaults = LeaseTimings()
    election.add_argument("--lease-duration", type=float, default=defaults.lease_duration)
    election.add_argument("--renew-deadline", type=float, default=defaults.renew_deadline)
    election.add_argument("--retry-period", type=float, default=defaults.retry_period)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.leader_elect:
        if not args.leader_election_namespace:
            parser.error(
                f"--leader-elect needs --leader-election-namespace or ${c.ENV_POD_NAMESPACE}"
            )
        try:
            args.timings = LeaseTimings(args.lease_duration, args.renew_deadline, args.retry_period)
        except InvalidTimingsError as error:
            parser.error(str(error))
    return args


def exit_leadership_lost(reason: str) -> NoReturn:
    """Stop at once, mid-handler if need be: a standby may take over the
    moment the lease runs out, and two writers must never overlap. The
    kubelet restarts the container, which then stands by."""
    logger.critical("leadership lost (%s): exiting so that a standby takes over", reason)
    logging.shutdown()
    os._exit(EXIT_LEADERSHIP_LOST)


async def run_kopf(
    args: argparse.Namespace,
    options: Options,
    stop: asyncio.Event,
    ready: asyncio.Event,
) -> None:
    await kopf.operator(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        memo=kopf.Memo(options=options),
        stop_flag=stop,
        ready_flag=ready,
    )


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def reclaim_signals(stop: asyncio.Event, ready: asyncio.Event) -> None:
    """kopf installs its own signal handlers as it starts, and then leaves a
    task waiting on our stop flag that only the flag ends (kopf's shutdown
    would wait 5 s for it). Once kopf is up, signals set our flag again."""
    await ready.wait()
    stop_on_signals(stop)


async def serve(args: argparse.Namespace, options: Options, host: str) -> None:
    stop, ready = asyncio.Event(), asyncio.Event()
    stop_on_signals(stop)
    # Created before kopf starts, so that kopf's shutdown (which cancels
    # every task younger than itself) leaves it alone.
    reclaiming = asyncio.create_task(reclaim_signals(stop, ready), name="signals")
    identity = args.leader_election_identity or default_identity(os.environ.get(c.ENV_POD_NAME))
    health = HealthState(identity=identity, ready=ready.is_set)
    runner = await start_health_server(health, host, args.health_port)
    try:
        if not args.leader_elect:
            LEADER.set(1)
            health.role = "leader"
            await run_kopf(args, options, stop, ready)
            return
        await serve_elected(args, options, identity, health, stop, ready)
    finally:
        reclaiming.cancel()
        await runner.cleanup()


async def serve_elected(
    args: argparse.Namespace,
    options: Options,
    identity: str,
    health: HealthState,
    stop: asyncio.Event,
    ready: asyncio.Event,
) -> None:
    # The elector's own client has no fence: it must renew and release.
    lease_kube = await KubeClient.connect()
    elector = LeaderElector(
        lease_kube,
        namespace=args.leader_election_namespace,
        name=args.leader_election_id,
        identity=identity,
        timings=args.timings,
        on_lost=exit_leadership_lost,
    )
    health.role = "standby"
    health.ready = lambda: elector.reachable
    try:
        acquiring = asyncio.create_task(elector.acquire(), name="leader election")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            logger.info("stopped while standing by")
            return
        stopping.cancel()
        health.role = "leader"
        health.ready = ready.is_set
        # Before kopf starts, as reclaiming above.
        holding = asyncio.create_task(elector.hold(), name="lease renewal")
        running = asyncio.create_task(
            run_kopf(args, replace(options, fence=elector.fence, identity=identity), stop, ready),
            name="kopf",
        )
        await asyncio.wait({holding, running}, return_when=asyncio.FIRST_COMPLETED)
        if holding.done():
            exit_leadership_lost(holding.result())
        holding.cancel()
        health.role = "stopping"
        # kopf has stopped (its daemons are done): nothing writes any more.
        await elector.release()
        running.result()
    finally:
        await lease_kube.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # One line per handler run is noise at hundreds of pods; transitions
    # are logged (and posted as Events) by the reconciler.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Registers the handlers on kopf's default registry.
    from kubeinfer.operator import handlers  # noqa: F401

    host = os.environ.get(c.ENV_BIND_HOST, "0.0.0.0")
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port, addr=host)
    options = Options(
        images=Images(
            worker=args.worker_image, worker_cpu=args.worker_cpu_image, router=args.router_image
        ),
        resync_seconds=args.resync_seconds,
        fleet=register_fleet(),
    )
    uvloop.run(serve(args, options, host))
    return 0
