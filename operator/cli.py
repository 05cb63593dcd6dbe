"""kubeinfer: GPU inventory, placement preview, live view and rollout control.

  kubectl kubeinfer gpus                  GPU nodes, who holds each GPU, health
  kubectl kubeinfer preview -f FILE       what applying FILE would do (dry run)
  kubectl kubeinfer top [NAME] [--once]   live per-worker load, latency and GPU
  kubectl kubeinfer status NAME           replicas, revisions, canary, analysis
  kubectl kubeinfer rollout ACTION NAME   pause|resume|promote|abort|undo

kubectl's -n, -A, --context and --kubeconfig (or KUBECONFIG) are understood;
-o table|json|yaml picks the output. `kubeinfer` is the same program.
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


def kubectl_main(argv: list[str] | None = None) -> int:
    """`kubectl-kubeinfer`: kubectl runs it for `kubectl kubeinfer ...`."""
    return main(argv, prog="kubectl kubeinfer")


def main(argv: list[str] | None = None, prog: str = "kubeinfer") -> int:
    args = sys.argv[1:] if argv is None else argv
    plugins = plugin_commands()
    if args and args[0] in plugins:
        command: Callable[[list[str]], int] = plugins[args[0]].load()
        return command(args[1:])
    from kubeinfer.operator.clicommon import global_flags

    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        parents=[global_flags()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, ep in sorted(plugins.items()):
        sub.add_parser(name, help=f"from {ep.dist.name if ep.dist else ep.value}")
    crds = sub.add_parser("crds", help="write the CRD YAML generated from the API models")
    crds.add_argument("--out", default="crds/", help="folder to write into")
    docs = sub.add_parser("docs", help="write the API field reference generated from the models")
    docs.add_argument("--out", default="docs/api.md", help="file to write ('-': stdout)")
    rbac = sub.add_parser(
        "rbac", help="print the operator's ClusterRole YAML (the Helm chart ships it)"
    )
    rbac.add_argument(
        "--viewer",
        action="store_true",
        help="the read-only ClusterRole for `kubectl kubeinfer` users instead",
    )
    monitoring = sub.add_parser(
        "monitoring", help="write the chart's dashboards, alert rules and scrape configs"
    )
    monitoring.add_argument("--out", default="helm/kubeinfer/files", help="folder to write into")
    from kubeinfer.operator import gpuscli, previewcli, rolloutcli, topcli

    rolloutcli.add_parsers(sub)
    gpuscli.add_parser(sub)
    previewcli.add_parser(sub)
    topcli.add_parser(sub)
    parsed = parser.parse_args(args)
    if parsed.command in ("status", "rollout"):
        return rolloutcli.run(parsed)
    if parsed.command == "gpus":
        return gpuscli.run(parsed)
    if parsed.command == "preview":
        return previewcli.run(parsed)
    if parsed.command == "top":
        return topcli.run(parsed)
    if parsed.command == "crds":
        from kubeinfer.operator.crdgen import write_crds

        for path in write_crds(parsed.out):
            print(path)
        return 0
    if parsed.command == "monitoring":
        # Lazily: grafana-foundation-sdk is a development dependency.
        from kubeinfer.operator.monitoring.generate import write_files

        for path in write_files(parsed.out):
            print(path)
        return 0
    if parsed.command in ("docs", "rbac"):
        from kubeinfer.operator import docgen

        if parsed.command == "rbac" and parsed.viewer:
            import yaml
            from kubeinfer.operator.rbac import viewer_cluster_role

            sys.stdout.write(yaml.safe_dump(viewer_cluster_role(), sort_keys=False))
        elif parsed.command == "rbac":
            sys.stdout.write(docgen.render_cluster_role())
        elif parsed.out == "-":
            sys.stdout.write(docgen.render_api_reference())
        else:
            Path(parsed.out).write_text(docgen.render_api_reference())
            print(parsed.out)
        return 0
    raise AssertionError(f"unhandled command {parsed.command}")
