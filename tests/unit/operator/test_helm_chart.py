"""The Helm chart, rendered by the real `helm` (built from Go modules by the local cluster).

Every rendered object is validated against the Kubernetes 1.36 OpenAPI
schema; the ClusterRole must grant exactly ``operator_rules()`` and the
chart's CRD must be the generated one. helm is never skipped: if it can't
be built, the tests fail and say why.
"""

import json
import logging
import subprocess
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeinfer.localcluster.build import HELM, BuildError, ensure_target
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import ObjectMeta
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.router import build_router_deployment
from kubeinfer.operator.builders.worker import build_worker_pod
from kubeinfer.operator.crdgen import build_crd, render_crd
from kubeinfer.operator.docgen import render_cluster_role
from kubeinfer.operator.lease import LeaseTimings
from kubeinfer.operator.main import parse_args
from kubeinfer.operator.monitoring.alerts import rules_file
from kubeinfer.operator.monitoring.dashboards import render_dashboards
from kubeinfer.operator.monitoring.scrape import pod_monitor_relabelings
from kubeinfer.operator.rbac import (
    LEASE_NAME,
    leader_election_rules,
    operator_rules,
    operator_spec_guard,
    viewer_cluster_role,
    viewer_rules,
)

Validate = Callable[[dict[str, Any]], None]
Render = Callable[..., list[dict[str, Any]]]

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm" / "kubeinfer"
CHART_CRD = CHART / "crds" / "kubeinfer.io_inferenceservices.yaml"
CHART_RULES = CHART / "files" / "operator-clusterrole.yaml"
CHART_VIEWER = CHART / "files" / "viewer-clusterrole.yaml"
CHART_LEADER_ELECTION = CHART / "files" / "operator-leader-election-role.yaml"
NAMESPACE = "kubeinfer-system"
# helm's built-in default is old unless set at link time; pin what we validate against.
KUBE_VERSION = "1.36.0"

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        folder = ensure_target(HELM, log.info)
    except BuildError as error:
        pytest.fail(f"cannot build helm from tests/localcluster/go/helm: {error}")
    return folder / "helm"


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def render(helm: Path, tmp_path: Path) -> Render:
    """``render(values, *flags)``: the objects `helm template` prints."""

    def _render(values: dict[str, Any] | None = None, *flags: str) -> list[dict[str, Any]]:
        values_file = tmp_path / "values.json"
        values_file.write_text(json.dumps(values or {}))
        result = run_helm(
            helm, "template", "kubeinfer", str(CHART), "--namespace", NAMESPACE,
            "--kube-version", KUBE_VERSION, "--values", str(values_file), *flags,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return _render


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['kind'] for o in objects]}"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [ctr["name"] for ctr in containers] == ["operator"]
    result: dict[str, Any] = containers[0]
    return result


class TestGeneratedFiles:
    """What the chart ships is generated; these fail when a copy drifts."""

    def test_chart_crd_matches_the_generator(self) -> None:
        assert CHART_CRD.read_text() == render_crd(), (
            "helm/kubeinfer/crds/ is out of date: run "
            "`kubeinfer crds --out helm/kubeinfer/crds/` and commit the result"
        )

    def test_chart_rules_match_rbac_py(self) -> None:
        assert CHART_RULES.read_text() == render_cluster_role(), (
            "helm/kubeinfer/files/operator-clusterrole.yaml is out of date: run "
            "`kubeinfer rbac > helm/kubeinfer/files/operator-clusterrole.yaml` and commit it"
        )

    def test_chart_viewer_rules_match_rbac_py(self) -> None:
        assert yaml.safe_load(CHART_VIEWER.read_text()) == viewer_cluster_role(), (
            "helm/kubeinfer/files/viewer-clusterrole.yaml is out of date: run `make crds`"
        )

    def test_chart_leader_election_rules_match_rbac_py(self) -> None:
        assert yaml.safe_load(CHART_LEADER_ELECTION.read_text()) == {
            "rules": leader_election_rules()
        }, "helm/kubeinfer/files/operator-leader-election-role.yaml is out of date: run `make crds`"

    def test_chart_and_app_versions_match_the_images(self) -> None:
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        assert chart["apiVersion"] == "v2"
        assert chart["version"] == "0.1.0"
        assert chart["appVersion"] == c.DEFAULT_IMAGE_TAG


class TestHelm:
    def test_lint_is_clean(self, helm: Path) -> None:
        result = run_helm(helm, "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_values_schema_rejects_a_typo(self, helm: Path) -> None:
        result = run_helm(
            helm, "template", "kubeinfer", str(CHART), "--kube-version", KUBE_VERSION,
            "--set", "operator.replica=2",
        )  # fmt: skip
        assert result.returncode != 0
        assert "additional properties 'replica' not allowed" in result.stderr

    def test_service_monitor_needs_the_metrics_service(self, render: Render, helm: Path) -> None:
        result = run_helm(
            helm, "template", "kubeinfer", str(CHART), "--kube-version", KUBE_VERSION,
            "--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true",
        )  # fmt: skip
        assert result.returncode != 0
        assert "metrics.serviceMonitor.enabled needs metrics.enabled" in result.stderr


MONITORING_ON: dict[str, Any] = {
    "metrics": {"serviceMonitor": {"enabled": True}},
    "monitoring": {
        "podMonitors": {"enabled": True, "labels": {"release": "prom"}},
        "dashboards": {"enabled": True, "annotations": {"grafana_folder": "kubeinfer"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
    },
}
# The Prometheus Operator's kinds: no OpenAPI schema to validate them against
# here; TestMonitoring checks their content.
PROMETHEUS_OPERATOR_API = "monitoring.coreos.com/v1"

# What rbac.create adds: the ClusterRole and its binding, and the spec guard.
RBAC_KINDS = [
    "ClusterRole", "ClusterRoleBinding",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
]  # fmt: skip

# Values the chart must render into valid objects, each with what to expect.
CASES: list[tuple[str, dict[str, Any], Collection[str]]] = [
    (
        "defaults",
        {},
        [
            "ServiceAccount",
            *RBAC_KINDS,
            "Service",
            "Deployment",
            "Role",
            "RoleBinding",
            "PodDisruptionBudget",
        ],
    ),
    (
        "single operator without leader election",
        {"operator": {"replicas": 1, "leaderElection": {"enabled": False}}},
        {"ServiceAccount", *RBAC_KINDS, "Service", "Deployment"},
    ),
    (
        "three replicas, required anti-affinity, custom lease",
        {
            "operator": {
                "replicas": 3,
                "leaderElection": {"enabled": True, "leaseName": "ops-lock"},
            },
            "podAntiAffinity": "required",
            "podDisruptionBudget": {"minAvailable": 2},
        },
        [
            "ServiceAccount",
            *RBAC_KINDS,
            "Service",
            "Deployment",
            "Role",
            "RoleBinding",
            "PodDisruptionBudget",
        ],
    ),
    (
        "everything on",
        {
            "operator": {
                "watchNamespaces": ["team-a", "team-b"],
                "extraArgs": ["--verbose"],
                "extraEnv": [{"name": "KOPF_LOG", "value": "debug"}],
            },
            "imagePullSecrets": [{"name": "ghcr"}],
            "serviceAccount": {"annotations": {"example.com/role": "x"}},
            "podAnnotations": {"example.com/a": "b"},
            "podLabels": {"team": "ml"},
            "priorityClassName": "system-cluster-critical",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}
                                ]
                            }
                        ]
                    }
                }
            },
        },
        [
            "ServiceAccount",
            *RBAC_KINDS,
            "Service",
            "Deployment",
            "Role",
            "RoleBinding",
            "PodDisruptionBudget",
        ],
    ),
    (
        "bring your own service account and RBAC",
        {"serviceAccount": {"create": False, "name": "ops"}, "rbac": {"create": False}},
        {"Service", "Deployment", "PodDisruptionBudget"},
    ),
    (
        "no metrics service",
        {"metrics": {"enabled": False}},
        {
            "ServiceAccount",
            *RBAC_KINDS,
            "Deployment",
            "Role",
            "RoleBinding",
            "PodDisruptionBudget",
        },
    ),
    (
        "monitoring on",
        MONITORING_ON,
        [
            "ServiceAccount",
            *RBAC_KINDS,
            "Service",
            "Deployment",
            "Role",
            "RoleBinding",
            "PodDisruptionBudget",
            "ServiceMonitor",
            "PodMonitor",
            "PodMonitor",
            "PrometheusRule",
            "ConfigMap",
            "ConfigMap",
            "ConfigMap",
        ],
    ),
]


class TestRenderedObjects:
    @pytest.mark.parametrize(
        ("values", "kinds"), [(v, k) for _, v, k in CASES], ids=[n for n, _, _ in CASES]
    )
    def test_valid_kubernetes_objects(
        self,
        render: Render,
        valid_manifest: Validate,
        values: dict[str, Any],
        kinds: Collection[str],
    ) -> None:
        objects = render(values)
        assert sorted(obj["kind"] for obj in objects) == sorted(kinds)
        for obj in objects:
            if obj["apiVersion"] != PROMETHEUS_OPERATOR_API:
                valid_manifest(obj)
            if obj["kind"] not in RBAC_KINDS:
                assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]

    def test_crds_render_with_include_crds(self, render: Render, valid_manifest: Validate) -> None:
        crd = one(render({}, "--include-crds"), "CustomResourceDefinition")
        valid_manifest(crd)
        assert crd == build_crd()


class TestRBAC:
    def test_cluster_role_grants_exactly_rbac_py(self, render: Render) -> None:
        assert one(render(), "ClusterRole")["rules"] == operator_rules()

    @pytest.mark.parametrize(
        ("values", "account"),
        [({}, "kubeinfer"), ({"serviceAccount": {"name": "ops"}}, "ops")],
    )
    def test_spec_guard_is_rbac_py_for_the_operator_account(
        self, render: Render, values: dict[str, Any], account: str
    ) -> None:
        objects = render(values)
        policy, binding = operator_spec_guard(NAMESPACE, account, name="kubeinfer-spec-guard")
        for expected in (policy, binding):
            got = one(objects, expected["kind"])
            assert got["spec"] == expected["spec"]
            assert got["metadata"]["name"] == expected["metadata"]["name"]

    def test_viewer_role_is_optional_and_read_only(self, render: Render) -> None:
        roles = [o for o in render({"rbac": {"viewer": True}}) if o["kind"] == "ClusterRole"]
        (viewer,) = [r for r in roles if r["metadata"]["name"].endswith("-viewer")]
        assert viewer["rules"] == viewer_rules()
        verbs = {verb for rule in viewer["rules"] for verb in rule["verbs"]}
        assert verbs <= {"get", "list", "watch"}

    def test_binding_grants_it_to_the_operator_service_account(self, render: Render) -> None:
        objects = render()
        binding = one(objects, "ClusterRoleBinding")
        assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
        account = one(objects, "ServiceAccount")["metadata"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
        ]
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["name"]

    @pytest.mark.parametrize("lease", [LEASE_NAME, "ops-lock"])
    def test_leader_election_role_is_one_lease_in_the_release_namespace(
        self, render: Render, lease: str
    ) -> None:
        objects = render({"operator": {"leaderElection": {"enabled": True, "leaseName": lease}}})
        role, binding = one(objects, "Role"), one(objects, "RoleBinding")
        assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
        assert role["rules"] == leader_election_rules(lease)
        assert f"--leader-election-id={lease}" in operator_container(objects)["args"]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
            "name": role["metadata"]["name"],
        }  # fmt: skip
        account = one(objects, "ServiceAccount")["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]

    def test_no_leader_election_role_without_leader_election(self, render: Render) -> None:
        objects = render({"operator": {"replicas": 1, "leaderElection": {"enabled": False}}})
        assert not {"Role", "RoleBinding"} & {o["kind"] for o in objects}

    def test_existing_service_account_is_used(self, render: Render) -> None:
        objects = render({"serviceAccount": {"create": False, "name": "ops"}})
        assert "ServiceAccount" not in {obj["kind"] for obj in objects}
        assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "ops"
        assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


class TestDeployment:
    def test_two_operators_elect_a_leader_by_default(self, render: Render) -> None:
        objects = render()
        spec = one(objects, "Deployment")["spec"]
        assert spec["replicas"] == 2
        # A new pod stands by (Ready) before an old one is stopped.
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
        ctr = operator_container(objects)
        timings = LeaseTimings()
        assert ctr["args"][-6:] == [
            "--leader-elect",
            f"--leader-election-namespace={NAMESPACE}",
            f"--leader-election-id={LEASE_NAME}",
            f"--lease-duration={timings.lease_duration:g}",
            f"--renew-deadline={timings.renew_deadline:g}",
            f"--retry-period={timings.retry_period:g}",
        ]
        env = {e["name"]: e.get("valueFrom") for e in ctr["env"]}
        assert env[c.ENV_POD_NAME] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env[c.ENV_POD_NAMESPACE] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        # The chart's flags are ones the operator accepts, with these values.
        args = parse_args(ctr["args"])
        assert args.leader_elect
        assert args.timings == timings

    def test_without_leader_election_one_operator_is_recreated(self, render: Render) -> None:
        objects = render({"operator": {"replicas": 1, "leaderElection": {"enabled": False}}})
        spec = one(objects, "Deployment")["spec"]
        assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})
        assert not any(a.startswith("--leader-elect") for a in operator_container(objects)["args"])
        assert "affinity" not in spec["template"]["spec"]

    def test_replicas_without_leader_election_are_refused(self, helm: Path) -> None:
        result = run_helm(
            helm, "template", "kubeinfer", str(CHART), "--kube-version", KUBE_VERSION,
            "--set", "operator.leaderElection.enabled=false",
        )  # fmt: skip
        assert result.returncode != 0
        assert "operator.replicas > 1 needs operator.leaderElection.enabled" in result.stderr

    def test_disruption_budget_keeps_a_standby(self, render: Render) -> None:
        objects = render()
        budget = one(objects, "PodDisruptionBudget")
        labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["minAvailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # With one replica a budget of 1 would block every node drain.
        single = {"operator": {"replicas": 1, "leaderElection": {"enabled": True}}}
        assert "PodDisruptionBudget" not in {o["kind"] for o in render(single)}

    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            ({}, "preferred"),
            ({"podAntiAffinity": "required"}, "required"),
            ({"podAntiAffinity": "none"}, None),
        ],
        ids=["preferred by default", "required", "none"],
    )
    def test_replicas_spread_over_nodes(
        self, render: Render, values: dict[str, Any], expected: str | None
    ) -> None:
        objects = render(values)
        pod = one(objects, "Deployment")["spec"]["template"]
        anti = pod["spec"].get("affinity", {}).get("podAntiAffinity")
        if expected is None:
            assert anti is None
            return
        key = f"{expected}DuringSchedulingIgnoredDuringExecution"
        (term,) = anti[key]
        term = term.get("podAffinityTerm", term)
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    def test_given_affinity_is_kept_and_its_anti_affinity_wins(self, render: Render) -> None:
        node = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}]}}  # fmt: skip
        mine = {"preferredDuringSchedulingIgnoredDuringExecution": []}
        affinity = one(render({"affinity": {"nodeAffinity": node}}), "Deployment")["spec"][
            "template"
        ]["spec"]["affinity"]
        assert affinity["nodeAffinity"] == node
        assert "podAntiAffinity" in affinity
        given = {"nodeAffinity": node, "podAntiAffinity": mine}
        pod = one(render({"affinity": given}), "Deployment")["spec"]["template"]["spec"]
        assert pod["affinity"] == given

    def test_pod_security_is_restricted(self, render: Render) -> None:
        objects = render()
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        ctr = operator_container(objects)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = ctr["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        assert "privileged" not in sc
        assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys()
        # A read-only root needs a writable /tmp, and nothing from the host.
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
        assert ctr["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]

    def test_probes_use_healthz_on_the_health_port(self, render: Render) -> None:
        ctr = operator_container(render({"operator": {"healthPort": 9000}}))
        assert ctr["ports"][0] == {"name": "http", "containerPort": 9000, "protocol": "TCP"}
        for probe in ("startupProbe", "livenessProbe"):
            assert ctr[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
        # Ready while leading and while standing by.
        assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert "--health-port=9000" in ctr["args"]

    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            ({}, ["--all-namespaces"]),
            (
                {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
                ["--namespace=team-a", "--namespace=team-b"],
            ),
        ],
        ids=["all namespaces", "listed namespaces"],
    )
    def test_watched_namespaces(
        self, render: Render, values: dict[str, Any], expected: list[str]
    ) -> None:
        args = operator_container(render(values))["args"]
        scope = [a for a in args if a == "--all-namespaces" or a.startswith("--namespace=")]
        assert scope == expected

    def test_default_images_are_the_released_ones(self, render: Render) -> None:
        ctr = operator_container(render())
        tag = c.DEFAULT_IMAGE_TAG
        assert ctr["image"] == f"{c.IMAGE_REPOSITORY_OPERATOR}:{tag}"
        assert ctr["command"] == ["kubeinfer-operator"]
        assert ctr["args"][1:] == [
            f"--worker-image={c.IMAGE_REPOSITORY_WORKER}:{tag}",
            f"--worker-cpu-image={c.IMAGE_REPOSITORY_WORKER_CPU}:{tag}",
            f"--router-image={c.IMAGE_REPOSITORY_ROUTER}:{tag}",
            "--resync-seconds=2",
            "--health-port=8080",
            "--metrics-port=9090",
            *ctr["args"][-6:],  # leader election (TestDeployment)
        ]
        assert ctr["args"][-6] == "--leader-elect"

    def test_images_and_flags_from_values(self, render: Render) -> None:
        ctr = operator_container(
            render(
                {
                    "operator": {
                        "image": {
                            "repository": "reg.local/op",
                            "tag": "dev",
                            "pullPolicy": "Always",
                        },
                        "resyncSeconds": 5,
                        "extraArgs": ["--verbose"],
                    },
                    "worker": {
                        "image": {"repository": "reg.local/worker", "tag": "w1"},
                        "cpuImage": {"repository": "reg.local/worker-cpu", "tag": "c1"},
                    },
                    "router": {"image": {"repository": "reg.local/router", "tag": "r1"}},
                }
            )
        )
        assert (ctr["image"], ctr["imagePullPolicy"]) == ("reg.local/op:dev", "Always")
        assert "--worker-image=reg.local/worker:w1" in ctr["args"]
        assert "--worker-cpu-image=reg.local/worker-cpu:c1" in ctr["args"]
        assert "--router-image=reg.local/router:r1" in ctr["args"]
        assert "--resync-seconds=5" in ctr["args"]
        assert ctr["args"][-1] == "--verbose"


class TestMetrics:
    def test_service_selects_the_operator_pod(self, render: Render) -> None:
        objects = render()
        service = one(objects, "Service")
        labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"] == [
            {"name": "http-metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
        ]
        ports = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in ports

    def test_service_monitor_is_off_by_default(self, render: Render) -> None:
        assert "ServiceMonitor" not in {obj["kind"] for obj in render()}

    def test_service_monitor_scrapes_the_metrics_service(self, render: Render) -> None:
        objects = render(
            {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
        )
        monitor = one(objects, "ServiceMonitor")
        service = one(objects, "Service")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prom"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= (
            service["metadata"]["labels"].items()
        )
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        assert monitor["spec"]["endpoints"] == [
            {
                "port": "http-metrics",
                "path": "/metrics",
                "interval": "30s",
                "scrapeTimeout": "10s",
                "relabelings": pod_monitor_relabelings(),
            }
        ]


def _flags(values: dict[str, Any], prefix: str = "") -> list[str]:
    flags = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flags += _flags(value, f"{prefix}{key}.")
        elif not isinstance(value, dict):
            flags += ["--set", f"{prefix}{key}={str(value).lower()}"]
    return flags


class TestMonitoring:
    """The chart's scraping, dashboards and alert rules (docs/operations.md)."""

    @pytest.mark.parametrize("switch", [True, False], ids=["monitoring on", "monitoring off"])
    def test_lint_is_clean(self, helm: Path, switch: bool) -> None:
        values = {
            "metrics": {"serviceMonitor": {"enabled": switch}, "scrapeAnnotations": switch},
            "monitoring": {
                name: {"enabled": switch}
                for name in ("podMonitors", "dashboards", "prometheusRule")
            },
        }
        result = run_helm(
            helm, "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), *_flags(values)
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_everything_is_off_by_default(self, render: Render) -> None:
        kinds = {obj["kind"] for obj in render()}
        assert not kinds & {"PodMonitor", "PrometheusRule", "ConfigMap", "ServiceMonitor"}

    def test_prometheus_rule_is_the_rules_file(self, render: Render) -> None:
        rule = one(render(MONITORING_ON), "PrometheusRule")
        assert rule["apiVersion"] == PROMETHEUS_OPERATOR_API
        assert rule["metadata"]["labels"]["release"] == "prom"
        shipped = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
        assert rule["spec"] == shipped
        assert rule["spec"] == rules_file()

    def test_pod_monitors_scrape_the_ports_the_pods_name(
        self, render: Render, meta: ObjectMeta, images: Images
    ) -> None:
        monitors = {
            m["spec"]["selector"]["matchLabels"][c.LABEL_COMPONENT]: m
            for m in render(MONITORING_ON)
            if m["kind"] == "PodMonitor"
        }
        assert set(monitors) == {c.COMPONENT_WORKER, c.COMPONENT_ROUTER}
        spec = InferenceServiceSpec.model_validate({"model": {"name": "m", "source": "org/m"}})
        worker = build_worker_pod(meta, spec, revision="r1", replica=0, images=images)
        router = build_router_deployment(meta, spec, images=images)["spec"]["template"]
        for component, pod in ((c.COMPONENT_WORKER, worker), (c.COMPONENT_ROUTER, router)):
            monitor = monitors[component]
            assert monitor["spec"]["namespaceSelector"] == {"any": True}
            assert monitor["spec"]["selector"]["matchLabels"].items() <= (
                pod["metadata"]["labels"].items()
            )
            (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
            assert endpoint["relabelings"] == pod_monitor_relabelings()
            # The PodMonitor and the pod's prometheus.io annotations agree.
            ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
            annotations = pod["metadata"]["annotations"]
            assert str(ports[endpoint["port"]]) == annotations["prometheus.io/port"]
            assert endpoint["path"] == annotations["prometheus.io/path"] == "/metrics"
            assert annotations["prometheus.io/scrape"] == "true"

    def test_operator_pod_is_scraped_on_its_metrics_port(self, render: Render) -> None:
        objects = render({"operator": {"metricsPort": 9191}})
        annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9191",
            "prometheus.io/path": "/metrics",
        }
        monitor = one(render(MONITORING_ON), "ServiceMonitor")
        assert monitor["spec"]["endpoints"][0]["relabelings"] == pod_monitor_relabelings()
        off = render({"metrics": {"scrapeAnnotations": False}, "podAnnotations": {"a": "b"}})
        assert one(off, "Deployment")["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}

    def test_dashboards_ship_for_the_grafana_sidecar(self, render: Render) -> None:
        maps = [obj for obj in render(MONITORING_ON) if obj["kind"] == "ConfigMap"]
        shipped = {}
        for config_map in maps:
            assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
            assert config_map["metadata"]["annotations"] == {"grafana_folder": "kubeinfer"}
            shipped.update(config_map["data"])
        assert shipped == {name: text.rstrip("\n") for name, text in render_dashboards().items()}
        for text in shipped.values():
            assert json.loads(text)["uid"].startswith("kubeinfer-")

    def test_values_schema_rejects_a_typo(self, helm: Path) -> None:
        result = run_helm(
            helm, "template", "kubeinfer", str(CHART), "--kube-version", KUBE_VERSION,
            "--set", "monitoring.dashboard.enabled=true",
        )  # fmt: skip
        assert result.returncode != 0
        assert "additional properties 'dashboard' not allowed" in result.stderr
