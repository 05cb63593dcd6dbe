"""Entry point: `python -m kubeinfer.localcluster.runtime --kubeconfig ... --state-dir ...`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from kubeinfer.localcluster.runtime.agent import Runtime
from kubeinfer.localcluster.runtime.container import Backoff


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubeinfer-localruntime")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="admin kubeconfig")
    parser.add_argument("--state-dir", type=Path, required=True, help="pod dirs, logs, records")
    parser.add_argument(
        "--bin-dir",
        type=Path,
        # The virtualenv's console scripts sit next to its python (do not resolve the link).
        default=Path(sys.executable).parent,
        help="where console scripts such as kubeinfer-worker are found",
    )
    parser.add_argument("--backoff-initial", type=float, default=1.0)
    parser.add_argument("--backoff-max", type=float, default=30.0)
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = Runtime(
        args.kubeconfig,
        args.state_dir,
        args.bin_dir,
        Backoff(initial=args.backoff_initial, maximum=args.backoff_max),
    )
    await runtime.run(stop)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
