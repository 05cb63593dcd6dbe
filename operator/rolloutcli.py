"""`kubeinfer status NAME` and `kubeinfer rollout pause|resume|promote|abort|undo NAME`.

The pure parts (what to print, what to patch) are functions over plain
dicts; ``run`` does the API calls as the user running the command (so an
undo is done with the user's rights, not the operator's).
"""

import argparse
from typing import Any

from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.status import InferenceServiceStatus
from kubeinfer.operator.clicommon import (
    CommandError,
    connect,
    dump,
    global_flags,
    namespace_of,
    output_of,
    run_command,
)
from kubeinfer.operator.kube import NotFoundError, object_path


class RolloutCommandError(CommandError):
    """The command can't be done (no such revision, ...); the message says why."""


def render_status(obj: dict[str, Any]) -> str:
    """A human summary of one InferenceService."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    status = InferenceServiceStatus.model_validate(obj.get("status") or {})
    ro = status.rollout
    lines = [
        f"Name:       {meta['namespace']}/{meta['name']}",
        f"Model:      {(spec.get('model') or {}).get('name')}",
        f"Phase:      {status.phase.value}",
        f"Ready:      {status.ready_text}",
        f"Placement:  {(spec.get('gpu') or {}).get('placement', 'spread')}",
        f"Endpoint:   {status.router_endpoint or '-'}",
        f"Stable:     {status.stable_revision or '-'}",
        f"Canary:     {status.canary_revision or '-'} ({status.canary_weight}%)",
        f"Rollout:    {ro.phase.value} step {ro.step + 1}: {ro.message or '-'}",
    ]
    if ro.last_analysis is not None:
        a = ro.last_analysis
        verdict = {True: "passed", False: "failed", None: "pending"}[a.passed]
        lines.append(f"Analysis:   step {a.step + 1} {verdict}: {a.message}")
        lines.append(
            f"            canary {a.canary.requests} req, {a.canary.error_rate:.1%} errors, "
            f"p99 {a.canary.p99_latency_ms or 0:.0f} ms | stable {a.stable.requests} req, "
            f"p99 {a.stable.p99_latency_ms or 0:.0f} ms"
        )
    lines.append("Conditions:")
    lines += [
        f"  {c.type:<12} {c.status.value:<6} {c.reason}: {c.message}" for c in status.conditions
    ]
    lines.append("Replicas:")
    lines += [
        f"  {r.pod:<40} {r.revision:<11} {r.node or '-':<14} "
        f"{'ready' if r.ready else 'not ready'}{' draining' if r.draining else ''}"
        f"{f' GPU {r.gpu_uuid}' if r.gpu_uuid else ''}"
        f"{f' {r.gpu_health.value}' if r.gpu_health else ''}"
        f"{f' ({r.last_failure})' if r.last_failure else ''}"
        for r in status.replica_statuses
    ]
    lines.append("History:")
    lines += [
        f"  {h.number:>3} {h.revision} {h.outcome:<9} {h.created_at or ''}"
        for h in status.revision_history
    ]
    for warning in status.warnings:
        lines.append(f"Warning:    {warning}")
    return "\n".join(lines) + "\n"


def undo_patch(obj: dict[str, Any], to_revision: int | None) -> dict[str, Any]:
    """The spec patch that restores a revision from the history.

    Without ``to_revision``: the revision before the current stable one,
    like ``kubectl rollout undo``. The change then rolls out as a canary.

    Raises:
        RolloutCommandError: when the history has no such revision.
    """
    status = InferenceServiceStatus.model_validate(obj.get("status") or {})
    history = status.revision_history
    if to_revision is not None:
        chosen = next((h for h in history if h.number == to_revision), None)
        if chosen is None:
            numbers = ", ".join(str(h.number) for h in history) or "none"
            raise RolloutCommandError(f"no revision {to_revision} in the history (have: {numbers})")
    else:
        older = [h for h in history if h.revision != status.stable_revision]
        if not older:
            raise RolloutCommandError("no previous revision to roll back to")
        chosen = older[-1]
    return {"spec": dict(chosen.template)}


async def _run(args: argparse.Namespace) -> str:
    namespace = namespace_of(args)
    kube = await connect(args)
    try:
        try:
            obj = await kube.request("GET", object_path(c.KIND, namespace, args.name))
        except NotFoundError as error:
            raise RolloutCommandError(
                f"inferenceservice {namespace}/{args.name} not found"
            ) from error
        if args.command == "status":
            if output_of(args) != "table":
                return dump(obj.get("status") or {}, output_of(args))
            return render_status(obj)
        if args.action == "undo":
            await kube.request(
                "PATCH",
                object_path(c.KIND, namespace, args.name),
                body=undo_patch(obj, args.to_revision),
                content_type="application/merge-patch+json",
            )
            return f"inferenceservice {args.name} rolled back (the restored revision rolls out)\n"
        # Every action is an annotation value; `resume` is consumed by the
        # operator, and also releases a rollout held by a failed step.
        patch = {"metadata": {"annotations": {c.ANNOTATION_ROLLOUT: args.action}}}
        await kube.request(
            "PATCH",
            object_path(c.KIND, namespace, args.name),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return f"inferenceservice {args.name}: {args.action} requested\n"
    finally:
        await kube.close()


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    status = sub.add_parser(
        "status",
        parents=[global_flags()],
        help="replicas, revisions, weights and analysis of one service",
    )
    status.add_argument("name")
    rollout = sub.add_parser(
        "rollout",
        parents=[global_flags()],
        help="control a rollout: pause|resume|promote|abort|undo",
    )
    rollout.add_argument("action", choices=["pause", "resume", "promote", "abort", "undo"])
    rollout.add_argument("name")
    rollout.add_argument("--to-revision", type=int, default=None, help="undo: revision number")


def run(args: argparse.Namespace) -> int:
    async def work() -> int:
        print(await _run(args), end="")
        return 0

    return run_command(work)
