"""`kubeinfer`: the command-line entry point.

Subcommands dispatch to the module that owns them, imported lazily so that
`kubeinfer crds` does not pay for a Kubernetes client.
"""

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

# Commands that other distributions add (the local cluster adds `cluster`
# and `demo`): found by entry point, never imported by the product.
COMMANDS_GROUP = "kubeinfer.commands"


def plugin_commands() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    plugins = plugin_commands()
    if args and args[0] in plugins:
        command: Callable[[list[str]], int] = plugins[args[0]].load()
        return command(args[1:])
    parser = argparse.ArgumentParser(prog="kubeinfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, ep in sorted(plugins.items()):
        sub.add_parser(name, help=f"from {ep.dist.name if ep.dist else ep.value}")
    crds = sub.add_parser("crds", help="write the CRD YAML generated from the API models")
    crds.add_argument("--out", default="crds/", help="folder to write into")
    docs = sub.add_parser("docs", help="write the API field reference generated from the models")
    docs.add_argument("--out", default="docs/api.md", help="file to write ('-': stdout)")
    sub.add_parser("rbac", help="print the operator's ClusterRole YAML (the Helm chart ships it)")
    from kubeinfer.operator import rolloutcli

    rolloutcli.add_parsers(sub)
    parsed = parser.parse_args(args)
    if parsed.command in ("status", "rollout"):
        return rolloutcli.run(parsed)
    if parsed.command == "crds":
        from kubeinfer.operator.crdgen import write_crds

        for path in write_crds(parsed.out):
            print(path)
        return 0
    if parsed.command in ("docs", "rbac"):
        from kubeinfer.operator import docgen

        if parsed.command == "rbac":
            sys.stdout.write(docgen.render_cluster_role())
        elif parsed.out == "-":
            sys.stdout.write(docgen.render_api_reference())
        else:
            Path(parsed.out).write_text(docgen.render_api_reference())
            print(parsed.out)
        return 0
    raise AssertionError(f"unhandled command {parsed.command}")
