"""`kubeinfer`: the command-line entry point.

Subcommands dispatch to the module that owns them, imported lazily so that
`kubeinfer crds` does not pay for a Kubernetes client.
"""

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "cluster":
        from kubeinfer.localcluster.cli import main as cluster_main

        return cluster_main(args[1:])
    if args and args[0] == "demo":
        from kubeinfer.localcluster.demo import main as demo_main

        return demo_main(args[1:])
    parser = argparse.ArgumentParser(prog="kubeinfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("cluster", help="the local control plane: up|down|status|env|build")
    sub.add_parser("demo", help="the whole product on the local control plane (make demo)")
    crds = sub.add_parser("crds", help="write the CRD YAML generated from the API models")
    crds.add_argument("--out", default="crds/", help="folder to write into")
    docs = sub.add_parser("docs", help="write the API field reference generated from the models")
    docs.add_argument("--out", default="docs/api.md", help="file to write ('-': stdout)")
    sub.add_parser("rbac", help="print the operator's ClusterRole YAML (the Helm chart ships it)")
    monitoring = sub.add_parser(
        "monitoring", help="write the chart's dashboards, alert rules and scrape configs"
    )
    monitoring.add_argument("--out", default="helm/kubeinfer/files", help="folder to write into")
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
    if parsed.command == "monitoring":
        # Lazily: grafana-foundation-sdk is a development dependency.
        from kubeinfer.operator.monitoring.generate import write_files

        for path in write_files(parsed.out):
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
