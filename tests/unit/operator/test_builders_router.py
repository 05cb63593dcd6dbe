"""Router manifests, the routing table and RBAC."""

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubeinfer.operator.api import ObjectMeta, RoutingTable
from kubeinfer.operator.builders.common import Images
from kubeinfer.operator.builders.router import (
    build_router_deployment,
    build_router_role,
    build_router_role_binding,
    build_router_service,
    build_router_service_account,
    build_worker_network_policy,
)
from kubeinfer.operator.builders.routing import (
    RouteTarget,
    build_routes_configmap,
    build_routing_table,
    normalise_weights,
)
from kubeinfer.operator.rbac import operator_cluster_role, operator_cluster_role_binding
from operator_helpers import make_spec

Validate = Callable[[dict[str, Any]], None]


def test_every_router_manifest_is_valid(
    meta: ObjectMeta, images: Images, valid_manifest: Validate
) -> None:
    spec = make_spec(routing={"apiKeySecretRef": {"name": "keys", "key": "k"}, "routerReplicas": 3})
    for manifest in (
        build_router_deployment(meta, spec, images=images),
        build_router_service(meta),
        build_router_service_account(meta),
        build_router_role(meta),
        build_router_role_binding(meta),
        build_worker_network_policy(meta),
        operator_cluster_role(),
        operator_cluster_role_binding("kubeinfer-system"),
    ):
        valid_manifest(manifest)


def test_router_deployment(meta: ObjectMeta, images: Images) -> None:
    spec = make_spec(
        routing={
            "apiKeySecretRef": {"name": "keys", "key": "k"},
            "routerReplicas": 3,
            "routerProcesses": 2,
        }
    )
    dep = build_router_deployment(meta, spec, images=images)
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert dep["spec"]["replicas"] == 3
    assert "--watch=team-a/llm-routes" in c["args"]
    assert "--processes=2" in c["args"]
    assert c["image"] == images.router
    assert pod["serviceAccountName"] == "llm-router"
    env = {e["name"]: e for e in c["env"]}
    assert env["KUBEINFER_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "keys", "key": "k"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )


def test_router_role_reads_only_its_routing_table(meta: ObjectMeta) -> None:
    (rule,) = build_router_role(meta)["rules"]
    assert rule["resources"] == ["configmaps"]
    assert rule["resourceNames"] == ["llm-routes"]
    assert set(rule["verbs"]) == {"get", "list", "watch"}


def test_operator_never_writes_specs_or_secrets() -> None:
    rules = operator_cluster_role()["rules"]
    for rule in rules:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
    on_services = [r for r in rules if "inferenceservices" in r["resources"]]
    assert on_services, rules
    for rule in on_services:
        assert "update" not in rule["verbs"], rule


def test_network_policy_admits_only_routers_and_prometheus(meta: ObjectMeta) -> None:
    policy = build_worker_network_policy(meta)
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    ingress, scrape = policy["spec"]["ingress"]
    # Prometheus, from any namespace, reaches only the agent's port (its
    # /metrics), never the engine's API.
    assert scrape == {
        "from": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": 8081}],
    }
    assert ingress["ports"] == [
        {"protocol": "TCP", "port": 8000},
        {"protocol": "TCP", "port": 8081},
    ]
    assert ingress["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "kubeinfer.io/service": "llm",
                    "app.kubernetes.io/component": "router",
                }
            }
        }
    ]


class TestRoutingTable:
    TARGETS = [
        RouteTarget("llm-b-1", "127.1.0.3", "b"),
        RouteTarget("llm-a-0", "127.1.0.2", "a"),
        RouteTarget("llm-a-9", "127.1.0.9", "a", draining=True),
    ]

    def test_table_from_targets(self, meta: ObjectMeta) -> None:
        spec = make_spec(
            routing={"strategy": "weighted", "retries": 1},
            model={"name": "m", "source": "o/m", "engineArgs": {"maxNumSeqs": 32}},
        )
        table = build_routing_table(
            meta, spec, targets=self.TARGETS, revision_weights={"a": 90, "b": 10}, generation=4
        )
        assert [b.name for b in table.backends] == ["llm-a-0", "llm-a-9", "llm-b-1"]
        first = table.backends[0]
        assert first.url == "http://127.1.0.2:8000"
        assert first.health_url == "http://127.1.0.2:8081/ready"
        assert first.max_concurrency == 32
        assert table.backends[1].draining is True
        assert table.revision_weights == {"a": 90, "b": 10}
        assert (table.strategy.value, table.retries, table.generation, table.model) == (
            "weighted",
            1,
            4,
            "m",
        )

    def test_configmap_round_trips(self, meta: ObjectMeta, valid_manifest: Validate) -> None:
        table = build_routing_table(
            meta, make_spec(), targets=self.TARGETS, revision_weights={}, generation=1
        )
        cm = build_routes_configmap(meta, table)
        valid_manifest(cm)
        assert cm["metadata"]["name"] == "llm-routes"
        assert RoutingTable.model_validate(json.loads(cm["data"]["routes.json"])) == table

    @pytest.mark.parametrize(
        ("weights", "available", "expected"),
        [
            ({"a": 90, "b": 10}, {"a", "b"}, {"a": 90, "b": 10}),
            ({"a": 90, "b": 10}, {"a"}, {"a": 100}),  # canary has no ready pod yet
            ({"a": 75, "b": 25}, {"b"}, {"b": 100}),
            ({"a": 0, "b": 100}, {"a", "b"}, {"b": 100}),
            ({"a": 1, "b": 1, "c": 1}, {"a", "b", "c"}, {"a": 34, "b": 33, "c": 33}),
            ({"a": 50}, set(), {}),
            ({}, {"a"}, {}),
        ],
    )
    def test_normalise_weights(
        self, weights: dict[str, int], available: set[str], expected: dict[str, int]
    ) -> None:
        assert normalise_weights(weights, available) == expected


def test_router_pods_leave_a_lost_node_after_30_s(meta: ObjectMeta, images: Images) -> None:
    pod = build_router_deployment(meta, make_spec(), images=images)["spec"]["template"]["spec"]
    tolerations = {t["key"]: t for t in pod["tolerations"]}
    assert set(tolerations) == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    for toleration in tolerations.values():
        assert toleration["effect"] == "NoExecute"
        assert toleration["tolerationSeconds"] == 30
