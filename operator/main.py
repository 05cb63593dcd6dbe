"""`kubeinfer-operator`: run the kopf operator."""

import argparse
import logging
import os
from dataclasses import dataclass

import kopf
import prometheus_client
import uvloop
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.metrics import FleetCollector, register_fleet


@dataclass(frozen=True)
class Options:
    images: Images
    resync_seconds: float
    fleet: FleetCollector


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
    parser.add_argument("--health-port", type=int, default=8080, help="serves /healthz")
    parser.add_argument("--metrics-port", type=int, default=9090, help="serves /metrics (0: off)")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


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
    uvloop.run(
        kopf.operator(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=f"http://{host}:{args.health_port}/healthz",
            memo=kopf.Memo(options=options),
        )
    )
    return 0
