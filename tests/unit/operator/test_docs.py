"""README, docs/ and kind-config.yaml: generated parts up to date, examples that parse."""

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubeinfer.operator.api import RoutingTable, parse_spec
from kubeinfer.operator.api.constants import GROUP, VERSION
from kubeinfer.operator.crdgen import build_crd
from kubeinfer.operator.docgen import render_api_reference

REPO = Path(__file__).resolve().parents[3]
API_DOC = REPO / "docs" / "api.md"
README = REPO / "README.md"
KIND_CONFIG = REPO / "kind-config.yaml"
GPU_MOUNT = "/var/run/nvidia-container-devices/all"


def markdown_files() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def field_paths(node: dict[str, Any], path: str) -> list[str]:
    """Every field path of a CRD schema, spelled as docs/api.md does."""
    paths = []
    for name, prop in node.get("properties", {}).items():
        child = f"{path}.{name}"
        paths.append(child)
        paths += field_paths(prop, child)
        if "properties" in prop.get("items", {}):
            paths += field_paths(prop["items"], child + "[]")
    return paths


class TestApiReference:
    def test_committed_reference_matches_the_generator(self) -> None:
        assert API_DOC.read_text() == render_api_reference(), (
            "docs/api.md is out of date with the API models: "
            "run `.venv/bin/kubeinfer docs --out docs/api.md` and commit the result"
        )

    def test_every_field_and_rule_is_documented(self) -> None:
        text = render_api_reference()
        schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for part in ("spec", "status"):
            for path in field_paths(schema["properties"][part], part):
                assert f"| `{path}` |" in text, path
        messages = re.findall(r"message: (.+)", yaml.safe_dump(build_crd(), width=1000))
        assert messages
        for message in messages:
            assert message.strip("'") in text

    @pytest.mark.parametrize(
        ("row", "default"),
        [
            ("spec.replicas", "`1`"),
            ("spec.model.name", "**required**"),
            ("spec.rollout.steps", "`[10, 25, 50, 100]`"),
            # Nested defaults made by a factory never reach the schema.
            ("spec.routing.routerResources.memory", "`512Mi`"),
            ("spec.worker.resources.memory", "`32Gi`"),
            ("spec.gpu.tolerations[].operator", "`Equal`"),
            ("spec.model.revision", "—"),
        ],
    )
    def test_defaults(self, row: str, default: str) -> None:
        line = next(
            line for line in render_api_reference().splitlines() if line.startswith(f"| `{row}` |")
        )
        assert line.split(" | ")[2] == default


class TestReadme:
    def test_starts_with_the_two_commands(self) -> None:
        lines = README.read_text().splitlines()
        assert lines[0] == "# kubeinfer"
        description = [line for line in lines[1:6] if line and not line.startswith("```")]
        assert len(description[0]) > 20, "a one-line description comes first"
        first_block = fenced_blocks(README.read_text(), "sh")[0]
        commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
        assert commands[:2] == ["make demo", "make test"]

    def test_quick_start_uses_the_minimal_example(self) -> None:
        text = README.read_text()
        assert "kubectl apply -f examples/minimal.yaml" in text
        assert "kubectl get infsvc" in text
        assert (REPO / "examples" / "minimal.yaml").is_file()


def yaml_documents() -> list[tuple[str, Any]]:
    """Every YAML document in a ```yaml block of the README and docs/."""
    found = []
    for path in markdown_files():
        for block in fenced_blocks(path.read_text(), "yaml"):
            for index, doc in enumerate(yaml.safe_load_all(block)):
                found.append((f"{path.name}:{len(found)}.{index}", doc))
    return found


CHART = REPO / "helm" / "kubeinfer"


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over the chart's values.yaml."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merged(base[key], value)
        else:
            out[key] = value
    return out


def chart_values_are_valid(values: dict[str, Any]) -> None:
    """As `helm install` checks them: merged over values.yaml, against the schema."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(merged(defaults, values), schema)


def check_inference_service(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == f"{GROUP}/{VERSION}"
    parse_spec(doc["spec"])


def check_argo_application(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "argoproj.io/v1alpha1"
    source = doc["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").is_file()
    chart_values_are_valid(source["helm"]["valuesObject"])


def check_flux_git_repository(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    assert doc["spec"]["url"]
    assert set(doc["spec"]["ref"]) <= {"tag", "branch", "commit", "semver", "name"}


def check_flux_helm_release(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    assert (REPO / doc["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").is_file()
    chart_values_are_valid(doc["spec"]["values"])


def check_keda_scaled_object(doc: dict[str, Any]) -> None:
    """In depth (fields, types, exported metric names) in test_autoscaling_docs.py."""
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    target = doc["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == (f"{GROUP}/{VERSION}", "InferenceService")


# How each kind of document in the docs is checked; a document of another
# kind fails the test until a check is added here.
CHECKS = {
    "InferenceService": check_inference_service,
    "Application": check_argo_application,
    "GitRepository": check_flux_git_repository,
    "HelmRelease": check_flux_helm_release,
    "ScaledObject": check_keda_scaled_object,
}
DOCUMENTS = yaml_documents()


class TestMarkdown:
    def test_docs_have_yaml_examples(self) -> None:
        assert len(DOCUMENTS) >= len(CHECKS)

    @pytest.mark.parametrize("doc", [d for _, d in DOCUMENTS], ids=[i for i, _ in DOCUMENTS])
    def test_every_yaml_example_is_valid(self, doc: Any) -> None:
        assert isinstance(doc, dict), "a YAML example is a mapping"
        if set(doc) == {"spec"}:
            # A fragment of an InferenceService spec: valid over the minimal example.
            minimal = yaml.safe_load((REPO / "examples" / "minimal.yaml").read_text())
            parse_spec(merged(minimal["spec"], doc["spec"]))
            return
        if "kind" not in doc:
            # The router's config file (docs/router.md): the operator writes
            # it from the same model.
            RoutingTable.model_validate(doc)
            return
        assert doc["kind"] in CHECKS, f"no check for a {doc['kind']} example: add one"
        CHECKS[doc["kind"]](doc)

    @pytest.mark.parametrize(
        "path", [README, REPO / "docs" / "install.md", API_DOC], ids=lambda p: p.name
    )
    def test_links_to_repository_files_resolve(self, path: Path) -> None:
        prose = re.sub(r"```.*?```|`[^`\n]*`", "", path.read_text(), flags=re.S)
        targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose)
        local = [t for t in targets if "://" not in t]
        assert local
        missing = [t for t in local if not (path.parent / t).exists()]
        assert missing == []


class TestKindConfig:
    def test_is_a_kind_cluster(self) -> None:
        config = yaml.safe_load(KIND_CONFIG.read_text())
        assert config["kind"] == "Cluster"
        assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
        roles = [node["role"] for node in config["nodes"]]
        assert roles.count("control-plane") == 1
        assert roles.count("worker") >= 2

    def test_exactly_one_node_gets_the_gpus(self) -> None:
        # Every kind node sees the host's /dev/nvidia*; two nodes with GPUs
        # would both advertise all of them (see the file's comments).
        nodes = yaml.safe_load(KIND_CONFIG.read_text())["nodes"]
        gpu_nodes = [
            node
            for node in nodes
            if any(
                m["containerPath"].startswith(GPU_MOUNT.rsplit("/", 1)[0])
                for m in node.get("extraMounts", [])
            )
        ]
        assert len(gpu_nodes) == 1
        (gpu,) = gpu_nodes
        assert gpu["role"] == "worker"
        assert {"hostPath": "/dev/null", "containerPath": GPU_MOUNT} in gpu["extraMounts"]
        assert gpu["labels"]["nvidia.com/gpu.present"] == "true"
        for node in nodes:
            if node is not gpu:
                assert node["labels"]["nvidia.com/gpu.deploy.operands"] == "false"
