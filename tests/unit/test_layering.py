"""Every import-linter contract can fail: one added import line breaks it.

The package is copied (its Python files, in the installed layout) into a
temporary folder, one line is added per contract, and the real
`lint-imports` runs over the copy with the repository's `.importlinter`.
Each contract must be reported broken, naming the import that was added.
"""

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Where each package's sources live (pyproject.toml's package-dir).
SOURCES = {
    "operator": REPO / "operator",
    "router": REPO / "router",
    "worker": REPO / "worker-image" / "agent",
    "localcluster": REPO / "tests" / "localcluster",
}
# contract id -> (file inside the package copy, the one line that breaks it,
# the importer -> imported pair lint-imports must name).
BREAKERS = {
    "api-is-pure": (
        "operator/api/spec.py",
        "import kubeinfer.operator.plan",
        "kubeinfer.operator.api.spec -> kubeinfer.operator.plan",
    ),
    "kopf-at-the-edge": (
        "operator/reconciler.py",
        "import kopf",
        "kubeinfer.operator.reconciler -> kopf",
    ),
    "components-use-only-the-api": (
        "router/app.py",
        "import kubeinfer.operator.rollout",
        "kubeinfer.router.app -> kubeinfer.operator.rollout",
    ),
    "worker-without-router": (
        "worker/agent.py",
        "import kubeinfer.router.pool",
        "kubeinfer.worker.agent -> kubeinfer.router.pool",
    ),
    "policies-without-http": (
        "router/policies.py",
        "import aiohttp",
        "kubeinfer.router.policies -> aiohttp",
    ),
    "product-without-localcluster": (
        "worker/launcher.py",
        "import kubeinfer.localcluster.state",
        "kubeinfer.worker.launcher -> kubeinfer.localcluster.state",
    ),
    "operator-core-is-pure": (
        "operator/plan.py",
        "import kubeinfer.operator.kube",
        "kubeinfer.operator.plan -> kubeinfer.operator.kube",
    ),
}


def contracts() -> dict[str, str]:
    """Contract id -> name, from the repository's .importlinter."""
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    prefix = "importlinter:contract:"
    return {
        section.removeprefix(prefix): config[section]["name"]
        for section in config.sections()
        if section.startswith(prefix)
    }


def copy_package(root: Path) -> None:
    # A regular package, so that the copy (first on PYTHONPATH) is the one
    # found, not merged with the installed namespace package.
    (root / "kubeinfer").mkdir()
    (root / "kubeinfer" / "__init__.py").write_text("")
    for name, source in SOURCES.items():
        shutil.copytree(
            source,
            root / "kubeinfer" / name,
            ignore=shutil.ignore_patterns("__pycache__", "go", "*.lock", "fixtures"),
        )


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    shutil.copy(REPO / ".importlinter", root / ".importlinter")
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_contract_has_a_breaking_line() -> None:
    assert set(BREAKERS) == set(contracts())


def test_the_copy_is_clean_and_each_line_breaks_its_contract(tmp_path: Path) -> None:
    copy_package(tmp_path)
    clean = lint(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    for relative, line, _ in BREAKERS.values():
        with (tmp_path / "kubeinfer" / relative).open("a") as file:
            file.write(f"\n{line}  # noqa\n")
    broken = lint(tmp_path)
    assert broken.returncode != 0
    report = broken.stdout
    names = contracts()
    for contract, (_, _, pair) in BREAKERS.items():
        assert f"{names[contract]} BROKEN" in " ".join(report.split()), contract
        assert pair in report, pair
    assert f"Contracts: 0 kept, {len(names)} broken." in report
