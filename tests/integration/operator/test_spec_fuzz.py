"""Fuzzing InferenceService specs against the real API server (hypothesis).

Specs are a valid simulated service with one to three fields changed; the
changes are drawn from the CRD's own schema (every leaf field: boundary
values on both sides, random values, wrong types, enum members and
strangers, pattern matches and misses). Each spec goes to the API server:

- refused: a 422 whose message names the field (a person can fix it);
- accepted: what the server stored is a spec the operator's pydantic model
  accepts too. The CRD's schema and CEL rules are generated from those
  models; an object the server stores but the operator refuses would be
  applied successfully and then fail at reconcile time: a bug.

A second property creates accepted specs for real with the operator
running: each gets its status (a Ready/Progressing/Degraded condition at
its generation), the operator stays alive and healthy, and it does not
loop on errors (reconcile errors and Warning events stay bounded).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from kubeinfer.localcluster.client import KubeClient, KubeError
from kubeinfer.localcluster.operatorproc import OperatorProcess, isvc_path, simulated_service
from kubeinfer.localcluster.waiting import wait_for
from kubeinfer.operator.api.spec import InferenceServiceSpec
from kubeinfer.operator.crdgen import build_crd
from pydantic import ValidationError

pytestmark = pytest.mark.cluster

_fuzz = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)


def _leaves(
    node: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    if node.get("type") == "object" and "properties" in node:
        yield path, node  # the section itself can be replaced too
        for key, child in node["properties"].items():
            yield from _leaves(child, (*path, key))
    else:
        yield path, node


SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
LEAVES = [(path, node) for path, node in _leaves(SCHEMA) if path]

_wrong = st.sampled_from([None, "1", "", True, 1.5, [], {}, -1, 2**31, 2**63 - 1])
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _numbers(node: dict[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    lo, hi = node.get("minimum"), node.get("maximum")
    edges: list[Any] = []
    step = 1 if integer else 0.001
    for bound in (lo, hi):
        if bound is not None:
            edges += [bound - step, bound, bound + step]
    base = st.integers(-(2**40), 2**40) if integer else st.floats(-1e9, 1e9, allow_nan=False)
    return (st.sampled_from(edges) if edges else base) | base


def values_for(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    kind = node.get("type")
    if kind == "integer":
        good = _numbers(node, True)
    elif kind == "number":
        good = _numbers(node, False) | _numbers(node, True)
    elif kind == "boolean":
        good = st.booleans()
    elif kind == "string":
        parts: list[st.SearchStrategy[Any]] = [st.text(max_size=20)]
        if "enum" in node:
            parts.append(st.sampled_from([*node["enum"], "bogus", node["enum"][0].upper()]))
        if "pattern" in node:
            parts.append(st.from_regex(node["pattern"], fullmatch=True).map(lambda s: s[:300]))
        if "maxLength" in node:
            parts.append(st.just("a" * (node["maxLength"] + 1)))
        good = st.one_of(parts)
    elif kind == "array":
        item = node.get("items", {})
        inner = values_for(item) if item.get("type") != "object" else _json
        flags = st.sampled_from(
            [
                "--enforce-eager",
                "--port=1",
                "--max-model-len=99",
                "x",
                "--",
                "--seed",
                "--tensor-parallel-size=2",
                "--model=x",
            ]
        )
        good = st.lists(inner | flags, max_size=node.get("maxItems", 5) + 1)
    else:
        good = _json
    return good | _wrong


def _mutation(
    leaf: tuple[tuple[str, ...], dict[str, Any]],
) -> st.SearchStrategy[tuple[tuple[str, ...], Any]]:
    path, node = leaf
    return st.tuples(st.just(path), values_for(node))


_mutations = st.lists(st.sampled_from(LEAVES).flatmap(_mutation), min_size=1, max_size=3)


def mutated(base: dict[str, Any], changes: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    for path, value in changes:
        node = spec
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = copy.deepcopy(value)  # sampled values are shared objects
    return spec


_names = (f"fz-{i}" for i in itertools.count())


def dry_run(kube: KubeClient, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = simulated_service(next(_names))
    body["spec"] = spec
    return dict(kube.create(f"{isvc_path(namespace)}?dryRun=All", body))


def names_a_field(message: str, changes: list[tuple[tuple[str, ...], Any]]) -> bool:
    words = set(re.findall(r"[A-Za-z][A-Za-z0-9]*", message))
    # The changed field, or its parent (setting one field of an absent
    # object can leave a required sibling missing: "secretRef.name:
    # Required value"); not just any section ("model" is in many messages).
    return any(key in words for path, _ in changes for key in path[-2:])


BASE = simulated_service("base", replicas=1)["spec"]


@settings(_fuzz, max_examples=settings.default.max_examples * 3)
@given(changes=_mutations)
@example(changes=[(("model", "engineArgs", "extraArgs"), ["--tensor-parallel-size=2"])])
def test_every_spec_is_refused_readably_or_accepted_by_the_operator_too(
    kube: KubeClient,
    namespace: str,
    operator_identity: Path,
    changes: list[tuple[tuple[str, ...], Any]],
) -> None:
    spec = mutated(BASE, changes)
    refused: KubeError | None = None
    try:
        stored = dry_run(kube, namespace, spec)
    except KubeError as error:
        refused = error
    if refused is not None:
        try:
            InferenceServiceSpec.model_validate(spec)
            event("refused by the API server, accepted by pydantic")
        except ValidationError:
            event("refused by both")
        assert refused.status == 422, (refused.status, refused.message, changes)
        assert names_a_field(refused.message, changes), (refused.message, changes)
        return
    event("accepted")
    try:
        InferenceServiceSpec.model_validate(stored["spec"])
    except ValidationError as error:
        pytest.fail(f"the API server stored a spec the operator refuses: {changes}\n{error}")


# What would make one example start many processes (the session's cluster is
# small and shared): the fuzzed service keeps one worker and one router.
_HEAVY = {("replicas",), ("autoscaling",), ("routing", "routerReplicas"),
          ("routing", "routerProcesses"), ("worker", "engine"), ("worker", "image"),
          ("gpu", "count")}  # fmt: skip
LIGHT_LEAVES = [leaf for leaf in LEAVES if not any(leaf[0][: len(h)] == h for h in _HEAVY)]
_light_mutations = st.lists(
    st.sampled_from(LIGHT_LEAVES).flatmap(_mutation), min_size=1, max_size=3
)
# Reconcile passes to watch after the first status: a service whose every
# pass fails would log an error (and retry) in each.
MAX_ERROR_LINES = 2


def _reconciles(operator: OperatorProcess) -> float:
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith("kubeinfer_operator_reconciles_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@settings(
    _fuzz,
    max_examples=max(4, settings.default.max_examples // 10),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much],
)  # fmt: skip
@given(changes=_light_mutations)
def test_accepted_specs_are_reconciled_without_error_loops(
    kube: KubeClient, namespace: str, running_operator: OperatorProcess,
    changes: list[tuple[tuple[str, ...], Any]],
) -> None:  # fmt: skip
    spec = mutated(simulated_service("base", replicas=1)["spec"], changes)
    try:
        dry_run(kube, namespace, spec)
    except KubeError:
        assume(False)  # refusals are the other property's business
    name = next(_names)
    body = simulated_service(name)
    body["spec"] = spec
    kube.create(isvc_path(namespace), body)
    log = Path(running_operator.log)
    try:

        def reconciled() -> dict[str, Any] | None:
            obj = kube.get(isvc_path(namespace, name))
            status = obj.get("status") or {}
            done = status.get("observedGeneration") == obj["metadata"]["generation"]
            return status if done and status.get("conditions") else None

        status = wait_for(reconciled, 60, interval=0.2, what=f"a status for {name} ({changes})")
        assert {c["type"] for c in status["conditions"]} & {"Ready", "Progressing", "Degraded"}
        # A few more passes (over all services) later ...
        seen = _reconciles(running_operator)
        wait_for(lambda: _reconciles(running_operator) >= seen + 4, 60, interval=0.2,
                 what="more reconcile passes")  # fmt: skip
        # ... the operator is alive and healthy, and this service did not fail pass after pass.
        assert running_operator.process.poll() is None, running_operator.tail()
        # fz-1, not fz-10 or fz-1-router.
        marker = re.compile(rf"{re.escape(namespace)}/{re.escape(name)}(?![\w-])")
        lines = log.read_text(errors="replace").splitlines()
        bad = (" ERROR ", " WARNING ")
        errors = [line for line in lines if marker.search(line) and any(b in line for b in bad)]
        assert len(errors) <= MAX_ERROR_LINES, (changes, errors[-5:])
        events = kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
        # The InferenceService's own (the router Service shares its name).
        warnings = [e for e in events if e["type"] == "Warning"
                    and e["involvedObject"].get("kind") == "InferenceService"
                    and e["involvedObject"].get("name") == name]  # fmt: skip
        assert sum(e.get("count", 1) for e in warnings) <= MAX_ERROR_LINES, (changes, warnings)
    finally:
        kube.delete(isvc_path(namespace, name))
