"""The alert rules, checked by Prometheus' own promtool (Debian's package).

`promtool check rules` on the shipped file, and `promtool test rules` with
one case per alert that fires and one that stays silent. The test copy of
the rules drops the annotations (promtool would compare their rendered
text); expressions, `for` and labels are the shipped ones.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeinfer.localcluster.prometheus import PrometheusMissingError, promtool
from kubeinfer.operator.monitoring.alerts import ALERTS, rules_file

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "helm" / "kubeinfer" / "files" / "prometheus-rules.yaml"
RUNBOOKS = REPO / "docs" / "operations.md"

ISVC = {"service_namespace": "ml", "kubeinfer_io_service": "chat"}
POD = {"namespace": "ml", "pod": "chat-abc-0", "node": "gpu-1", "kubeinfer_io_service": "chat"}
ROUTER = {"namespace": "ml", "kubeinfer_io_service": "chat"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def ttft(le_fast: str) -> list[dict[str, str]]:
    """TTFT buckets: every request under 0.5 s (fast), or all between 0.5 and 5 s."""
    fast = "0+100x20" if le_fast == "fast" else "0x20"
    return [
        series("kubeinfer_router_backend_ttft_seconds_bucket", {**ROUTER, "le": "0.5"}, fast),
        series("kubeinfer_router_backend_ttft_seconds_bucket", {**ROUTER, "le": "5.0"}, "0+100x20"),
        series(
            "kubeinfer_router_backend_ttft_seconds_bucket", {**ROUTER, "le": "+Inf"}, "0+100x20"
        ),
    ]


def requests(ok_per_min: int, errors_per_min: int, code: str = "500") -> list[dict[str, str]]:
    return [
        series("kubeinfer_router_requests_total", {**ROUTER, "code": "200"}, f"0+{ok_per_min}x20"),
        series(
            "kubeinfer_router_requests_total", {**ROUTER, "code": code}, f"0+{errors_per_min}x20"
        ),
    ]


# (alert, case, input series, eval time, labels of the expected alerts: [] = silent)
CASES: list[tuple[str, str, list[dict[str, str]], str, list[dict[str, str]]]] = [
    (
        "KubeinferNoReadyWorker", "fires",
        [series("kubeinfer_inferenceservice_replicas_ready", ISVC, "0x10"),
         series("kubeinfer_inferenceservice_replicas_desired", ISVC, "2x10")],
        "5m", [ISVC],
    ),
    (
        "KubeinferNoReadyWorker", "scaled to zero is not an outage",
        [series("kubeinfer_inferenceservice_replicas_ready", ISVC, "0x10"),
         series("kubeinfer_inferenceservice_replicas_desired", ISVC, "0x10")],
        "5m", [],
    ),
    (
        "KubeinferWorkersNotReady", "fires after 15 minutes",
        [series("kubeinfer_inferenceservice_replicas_ready", ISVC, "1x30"),
         series("kubeinfer_inferenceservice_replicas_desired", ISVC, "2x30")],
        "20m", [ISVC],
    ),
    (
        "KubeinferWorkersNotReady", "silent while a replacement starts",
        [series("kubeinfer_inferenceservice_replicas_ready", ISVC, "1x10 2x20"),
         series("kubeinfer_inferenceservice_replicas_desired", ISVC, "2x30")],
        "20m", [],
    ),
    ("KubeinferHighErrorRate", "fires", requests(60, 10), "12m", [ROUTER]),
    ("KubeinferHighErrorRate", "silent at 1.6 %", requests(60, 1), "12m", []),
    ("KubeinferHighTTFT", "fires", ttft("slow"), "15m", [ROUTER]),
    ("KubeinferHighTTFT", "silent", ttft("fast"), "15m", []),
    (
        "KubeinferRouterSaturated", "fires on a full queue",
        [series("kubeinfer_router_queue_length", {**ROUTER, "pod": "r"}, "95x20"),
         series("kubeinfer_router_queue_capacity", {**ROUTER, "pod": "r"}, "100x20"),
         *requests(60, 0, code="429")],
        "10m", [ROUTER],
    ),
    (
        "KubeinferRouterSaturated", "fires on 429s",
        [series("kubeinfer_router_queue_length", {**ROUTER, "pod": "r"}, "0x20"),
         series("kubeinfer_router_queue_capacity", {**ROUTER, "pod": "r"}, "100x20"),
         *requests(60, 5, code="429")],
        "10m", [ROUTER],
    ),
    (
        "KubeinferRouterSaturated", "silent",
        [series("kubeinfer_router_queue_length", {**ROUTER, "pod": "r"}, "10x20"),
         series("kubeinfer_router_queue_capacity", {**ROUTER, "pod": "r"}, "100x20"),
         *requests(60, 0, code="429")],
        "10m", [],
    ),
    (
        "KubeinferGPUFault", "fires on an unhealthy GPU",
        [series("kubeinfer_gpu_healthy", POD, "1 1 0 0 0")],
        "3m", [POD],
    ),
    (
        "KubeinferGPUFault", "fires on an Xid",
        [series("kubeinfer_gpu_healthy", POD, "1x5"),
         series("kubeinfer_gpu_xid_events_total", {**POD, "gpu": "G", "xid": "48"}, "0 0 1 1 1")],
        "3m", [POD],
    ),
    (
        "KubeinferGPUFault", "silent",
        [series("kubeinfer_gpu_healthy", POD, "1x15"),
         series("kubeinfer_gpu_xid_events_total", {**POD, "gpu": "GPU-1", "xid": "48"}, "1x15")],
        "12m", [],
    ),
    (
        "KubeinferGPUStuck", "fires",
        [series("kubeinfer_gpu_utilization_ratio", {**POD, "gpu": "GPU-1"}, "0x10"),
         series("vllm:num_requests_running", {**POD, "engine": "0"}, "3x10")],
        "7m", [POD],
    ),
    (
        "KubeinferGPUStuck", "silent while busy",
        [series("kubeinfer_gpu_utilization_ratio", {**POD, "gpu": "GPU-1"}, "0.8x10"),
         series("vllm:num_requests_running", {**POD, "engine": "0"}, "3x10")],
        "7m", [],
    ),
    (
        "KubeinferCanaryRolledBack", "fires",
        [series("kubeinfer_inferenceservice_condition",
                {**ISVC, "condition": "RolledBack", "reason": "CanaryFailed"}, "0 1 1")],
        "2m", [{**ISVC, "condition": "RolledBack", "reason": "CanaryFailed"}],
    ),
    (
        "KubeinferCanaryRolledBack", "silent",
        [series("kubeinfer_inferenceservice_condition",
                {**ISVC, "condition": "RolledBack", "reason": "NoRollback"}, "0 0 0")],
        "2m", [],
    ),
    (
        "KubeinferInsufficientGPU", "fires",
        [series("kubeinfer_inferenceservice_condition",
                {**ISVC, "condition": "Degraded", "reason": "InsufficientGPU"}, "1x10")],
        "6m", [{**ISVC, "condition": "Degraded", "reason": "InsufficientGPU"}],
    ),
    (
        "KubeinferInsufficientGPU", "silent for another degradation",
        [series("kubeinfer_inferenceservice_condition",
                {**ISVC, "condition": "Degraded", "reason": "ReplacingFailedPods"}, "1x10")],
        "6m", [],
    ),
    (
        "KubeinferOperatorDown", "fires",
        [series("kubeinfer_router_queue_length", ROUTER, "0x10")],
        "6m", [{"result": "ok"}],
    ),
    (
        "KubeinferOperatorDown", "silent",
        [series("kubeinfer_operator_reconciles_total", {"result": "ok"}, "0+10x10")],
        "6m", [],
    ),
    (
        "KubeinferOperatorNoLeader", "fires",
        [series("kubeinfer_operator_leader", {"pod": "op-a"}, "0x10"),
         series("kubeinfer_operator_leader", {"pod": "op-b"}, "0x10")],
        "4m", [{}],
    ),
    (
        "KubeinferOperatorNoLeader", "silent",
        [series("kubeinfer_operator_leader", {"pod": "op-a"}, "1x10"),
         series("kubeinfer_operator_leader", {"pod": "op-b"}, "0x10")],
        "4m", [],
    ),
    (
        "KubeinferReconcileErrors", "fires",
        [series("kubeinfer_operator_reconciles_total", {"result": "ok"}, "0+30x20"),
         series("kubeinfer_operator_reconciles_total", {"result": "error"}, "0+30x20")],
        "17m", [{}],
    ),
    (
        "KubeinferReconcileErrors", "silent",
        [series("kubeinfer_operator_reconciles_total", {"result": "ok"}, "0+30x20"),
         series("kubeinfer_operator_reconciles_total", {"result": "error"}, "0+1x20")],
        "17m", [],
    ),
]  # fmt: skip

SEVERITY = {alert.name: alert.severity for alert in ALERTS}


def _unit_tests() -> dict[str, Any]:
    tests = []
    for alert, _case, inputs, at, expected in CASES:
        tests.append(
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": alert,
                        "exp_alerts": [
                            {"exp_labels": {**labels, "severity": SEVERITY[alert]}}
                            for labels in expected
                        ],
                    }
                ],
            }
        )
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}


def _without_annotations() -> dict[str, Any]:
    rules = rules_file()
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    return rules


def _promtool(*args: str) -> str:
    try:
        result = promtool(*args)
    except PrometheusMissingError as error:
        pytest.fail(str(error))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_shipped_rules_pass_promtool_check() -> None:
    out = _promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(ALERTS)} rules found" in out


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    fired = {alert for alert, _, _, _, expected in CASES if expected}
    silent = {alert for alert, _, _, _, expected in CASES if not expected}
    names = {alert.name for alert in ALERTS}
    assert fired == names
    assert silent == names


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_without_annotations()))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(_unit_tests(), sort_keys=False))
    _promtool("test", "rules", str(tmp_path / "tests.yaml"))


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The harness itself: a case expecting the wrong labels must fail."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_without_annotations()))
    suite = _unit_tests()
    suite["tests"][0]["alert_rule_test"][0]["exp_alerts"] = []
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    result = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode != 0
    assert "KubeinferNoReadyWorker" in result.stdout + result.stderr


@pytest.mark.parametrize("alert", [a.name for a in ALERTS])
def test_every_alert_has_a_runbook(alert: str) -> None:
    text = RUNBOOKS.read_text()
    assert f"### {alert}\n" in text, f"docs/operations.md has no runbook section for {alert}"
    section = text.split(f"### {alert}\n", 1)[1].split("\n### ", 1)[0]
    for part in ("**Means**", "**Look at**", "**Do**"):
        assert part in section, f"the runbook of {alert} lacks {part}"
