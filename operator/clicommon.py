"""What every user-facing command shares: kubectl's flags, output formats, errors.

`kubectl kubeinfer ...` (the `kubectl-kubeinfer` plugin, krew's convention)
and `kubeinfer ...` are the same program. Like kubectl it reads
``--kubeconfig`` (else KUBECONFIG, else ~/.kube/config), ``--context``,
``-n/--namespace`` (else the context's namespace, else ``default``) and
``-A/--all-namespaces``; ``-o table|json|yaml`` picks the output.
"""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import yaml
from kubeinfer.operator.kube import ApiError, KubeClient, NotFoundError, api_error
from kubernetes_asyncio.client.exceptions import ApiException

OUTPUTS = ("table", "json", "yaml")


class CommandError(Exception):
    """The command can't be done; the message says why (exit status 1)."""


def global_flags() -> argparse.ArgumentParser:
    """kubectl's flags, accepted before and after the subcommand.

    Defaults are SUPPRESS so that a subcommand's copy of a flag does not
    overwrite what was given before the subcommand.
    """
    flags = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    flags.add_argument("--kubeconfig", default=s, help="kubeconfig file (else KUBECONFIG)")
    flags.add_argument("--context", default=s, help="kubeconfig context to use")
    flags.add_argument("-n", "--namespace", default=s, help="namespace (else the context's)")
    flags.add_argument(
        "-A", "--all-namespaces", action="store_true", default=s, help="every namespace"
    )
    flags.add_argument("-o", "--output", choices=OUTPUTS, default=s, help="table, json or yaml")
    return flags


def option(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def namespace_of(args: argparse.Namespace) -> str:
    """-n, else the namespace of the kubeconfig context, else default."""
    given = option(args, "namespace")
    if given:
        return str(given)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not option(args, "kubeconfig"):
        path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
        if os.path.exists(path):
            with open(path) as handle:
                return handle.read().strip() or "default"
    from kubernetes_asyncio.config import ConfigException, list_kube_config_contexts

    try:
        contexts, active = list_kube_config_contexts(option(args, "kubeconfig"))
    except (ConfigException, OSError):
        return "default"
    wanted = option(args, "context")
    chosen = active
    if wanted:
        chosen = next((ctx for ctx in contexts if ctx.get("name") == wanted), None)
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


async def connect(args: argparse.Namespace) -> KubeClient:
    from kubernetes_asyncio.config import ConfigException

    try:
        return await KubeClient.connect(option(args, "kubeconfig"), option(args, "context"))
    except (ConfigException, OSError) as error:
        raise CommandError(f"cannot load the kubeconfig: {error}") from error


def output_of(args: argparse.Namespace) -> str:
    return str(option(args, "output") or "table")


def dump(data: Any, output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """kubectl's plain table: upper-case headers, columns 3 spaces apart."""
    cells = [[str(h) for h in headers]] + [
        ["-" if v is None or v == "" else str(v) for v in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def run_command(work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run one command; API refusals print the API server's own message
    (a missing permission names the verb, resource and user)."""
    try:
        return asyncio.run(work())
    except ApiError as error:
        kind = error.reason or f"HTTP {error.status}"
        print(f"Error from server ({kind}): {error}", file=sys.stderr)
        return 1
    except NotFoundError as error:
        cause = error.__cause__
        message = str(api_error(cause)) if isinstance(cause, ApiException) else str(error)
        print(f"Error from server (NotFound): {message}", file=sys.stderr)
        return 1
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
