"""kubectl's flags for `kubectl kubeinfer` (parsing and the kubeconfig's
namespace), and the plugin's console script."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubeinfer.operator import gpuscli, previewcli, rolloutcli, topcli
from kubeinfer.operator.clicommon import global_flags, namespace_of, option, table
from kubeinfer.operator.previewcli import set_field


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[global_flags()])
    sub = parser.add_subparsers(dest="command", required=True)
    rolloutcli.add_parsers(sub)
    gpuscli.add_parser(sub)
    previewcli.add_parser(sub)
    topcli.add_parser(sub)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "team", "-o", "json", "gpus"],
        ["gpus", "-n", "team", "-o", "json"],
        ["--namespace", "team", "gpus", "--output", "json"],
    ],
)
def test_flags_before_or_after_the_command(argv: list[str]) -> None:
    args = parse(argv)
    assert (args.command, option(args, "namespace"), option(args, "output")) == (
        "gpus",
        "team",
        "json",
    )


def test_bad_output_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse(["gpus", "-o", "xml"])


def _kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    user = {"name": "u", "user": {"token": "t"}}
    cluster = {"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "a",
                "clusters": [cluster],
                "users": [user],
                "contexts": [
                    {"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "from-a"}},
                    {"name": "b", "context": {"cluster": "c", "user": "u"}},
                ],
            }
        )
    )
    return path


def test_namespace_comes_from_the_flag_the_context_or_default(tmp_path: Path) -> None:
    config = str(_kubeconfig(tmp_path))
    assert namespace_of(parse(["gpus", "--kubeconfig", config])) == "from-a"
    assert namespace_of(parse(["gpus", "--kubeconfig", config, "--context", "b"])) == "default"
    assert namespace_of(parse(["gpus", "--kubeconfig", config, "-n", "x"])) == "x"


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("spec.replicas=4", {"spec": {"replicas": 4}}),
        ("spec.gpu.placement=pack", {"spec": {"gpu": {"placement": "pack"}}}),
        ("spec.rollout.steps=[10, 100]", {"spec": {"rollout": {"steps": [10, 100]}}}),
    ],
)
def test_set_field(assignment: str, expected: dict) -> None:
    obj: dict = {}
    set_field(obj, assignment)
    assert obj == expected


def test_set_field_needs_a_value() -> None:
    with pytest.raises(previewcli.CommandError, match="expected path=value"):
        set_field({}, "spec.replicas")


def test_table_aligns_columns_like_kubectl() -> None:
    assert table(["NAME", "N"], [["a", 1], ["long-name", None]]) == (
        "NAME        N\na           1\nlong-name   -\n"
    )


def test_the_plugin_binary_is_installed_and_named_for_kubectl() -> None:
    binary = shutil.which("kubectl-kubeinfer", path=str(Path(sys.executable).parent))
    assert binary, "the kubectl-kubeinfer console script is not installed"
    done = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: kubectl kubeinfer")
    for command in ("gpus", "preview", "top", "status", "rollout"):
        assert command in done.stdout
