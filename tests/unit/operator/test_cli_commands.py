"""`kubeinfer`'s commands from other distributions arrive by entry point."""

import subprocess
import sys
from pathlib import Path

from kubeinfer.operator.cli import plugin_commands

KUBEINFER = Path(sys.executable).parent / "kubeinfer"


def test_the_local_cluster_adds_cluster_and_demo() -> None:
    commands = plugin_commands()
    assert {"cluster", "demo"} <= commands.keys()
    for name in ("cluster", "demo"):
        dist = commands[name].dist
        assert dist is not None
        assert dist.name == "kubeinfer-localcluster"


def test_help_lists_them_and_they_run() -> None:
    listed = subprocess.run(
        [str(KUBEINFER), "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "cluster" in listed
    assert "demo" in listed
    cluster = subprocess.run(
        [str(KUBEINFER), "cluster", "--help"], capture_output=True, text=True, timeout=60
    )
    assert cluster.returncode == 0, cluster.stderr
    assert "usage: kubeinfer cluster" in cluster.stdout
