"""`kubectl kubeinfer preview -f FILE` / `--from-cluster NAME --set path=value`.

Changes nothing: the object goes to the API server as a server-side dry
run (``dryRun=All``), so the CRD's schema and CEL rules judge it exactly
as `kubectl apply` would; the answer then goes through the operator's own
planning (kubeinfer.operator.preview).
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubeinfer.operator.api import constants as c
from kubeinfer.operator.api.resource import InferenceService, format_validation_error
from kubeinfer.operator.clicommon import (
    CommandError,
    connect,
    dump,
    global_flags,
    namespace_of,
    option,
    output_of,
    run_command,
    table,
)
from kubeinfer.operator.kube import ApiError, KubeClient, NotFoundError, object_path
from kubeinfer.operator.preview import Preview, preview
from pydantic import ValidationError

FIELD_MANAGER = "kubectl-kubeinfer-preview"
# What a live object carries that a file to apply must not.
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")


def load_objects(path: str) -> list[dict[str, Any]]:
    """The InferenceServices in a YAML/JSON file ('-': stdin)."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as error:
        raise CommandError(f"{path}: not YAML: {error}") from error
    objects = [d for d in docs if isinstance(d, dict) and d.get("kind") == c.KIND]
    if not objects:
        raise CommandError(f"{path}: no {c.KIND} in the file")
    return objects


def set_field(obj: dict[str, Any], assignment: str) -> None:
    """``spec.replicas=4`` (the value is YAML: numbers, booleans, lists)."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise CommandError(f"--set {assignment!r}: expected path=value")
    keys = path.split(".")
    target = obj
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise CommandError(f"--set {assignment!r}: {key} is not an object")
    target[keys[-1]] = yaml.safe_load(raw)


def _for_apply(live: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in live["metadata"].items() if k not in _SERVER_FIELDS}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith((f"{c.GROUP}/last-handled", "kubectl.kubernetes.io/"))
    }
    meta["annotations"] = annotations
    return {
        "apiVersion": live["apiVersion"],
        "kind": live["kind"],
        "metadata": meta,
        "spec": live.get("spec") or {},
    }


async def dry_run_apply(kube: KubeClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply with dryRun=All: the object as it would be stored
    (defaults applied, validated), or ApiError with the server's message."""
    meta = obj["metadata"]
    return await kube.request(
        "PATCH",
        object_path(c.KIND, meta["namespace"], meta["name"]),
        body=obj,
        content_type="application/apply-patch+yaml",
        query=[("dryRun", "All"), ("fieldManager", FIELD_MANAGER), ("force", "true")],
    )


async def validated(kube: KubeClient, obj: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The object as the API server would store it, and how it was checked.

    A dry run is authorized like the real request, so a user who may only
    read gets 403: then kubeinfer's own models (the same rules as the
    CRD's schema and CEL) check it, and the note names the missing right.
    """
    try:
        return await dry_run_apply(kube, obj), "server-side dry run passed"
    except ApiError as error:
        if error.status != 403:
            raise
        refused = str(error)
    try:
        model = InferenceService.model_validate(obj)
    except ValidationError as invalid:
        raise CommandError(
            f"{format_validation_error(invalid)} (checked by kubeinfer's own validation: "
            f"the dry run was refused: {refused})"
        ) from invalid
    note = (
        "checked by kubeinfer's own validation (the CRD's rules); the server-side dry run "
        f"was refused: {refused}"
    )
    return model.model_dump(mode="json", by_alias=True, exclude_none=True), note


def render_preview(p: Preview) -> str:
    lines = [
        f"InferenceService {p.namespace}/{p.name}: "
        + ("changed" if p.exists else "new")
        + f" ({p.validation})",
        f"Revision:   {p.revision}"
        + (f" (new; stable is {p.stable_revision})" if p.new_revision else ""),
        f"Change:     {p.rollout}",
    ]
    if p.changed:
        lines.append(f"Fields:     {', '.join(p.changed)}")
    lines.append(
        f"GPUs:       {p.gpus_needed} at the peak of the change, {p.gpus_free} free now on "
        "nodes the workers may use"
    )
    if p.steps:
        lines.append("Steps:")
        lines += [
            f"  {s.weight:>3}%  canary pods {s.canary_pods}, stable pods {s.stable_pods}, "
            f"GPUs {s.gpus}"
            for s in p.steps
        ]
    for event in p.events:
        lines.append(f"Event:      {event}")
    text = "\n".join(lines) + "\n"
    if p.pods:
        text += "New worker pods (first step):\n" + table(
            ["POD", "REVISION", "REPLICA", "NODE", "FREE NOW", "WHY NOT"],
            [
                [
                    pod.pod,
                    pod.revision,
                    pod.replica,
                    " | ".join(pod.nodes) if pod.nodes else None,
                    "yes" if pod.nodes else "no",
                    pod.why_not,
                ]
                for pod in p.pods
            ],
        )
    if p.deletes:
        text += f"Pods removed: {', '.join(p.deletes)}\n"
    for warning in p.warnings:
        text += f"Warning: {warning}\n"
    return text


async def _preview(args: argparse.Namespace) -> int:
    kube = await connect(args)
    try:
        if option(args, "filename"):
            objects = load_objects(args.filename)
        else:
            namespace = namespace_of(args)
            try:
                live = await kube.request("GET", object_path(c.KIND, namespace, args.from_cluster))
            except NotFoundError as error:
                raise CommandError(
                    f"inferenceservice {namespace}/{args.from_cluster} not found"
                ) from error
            objects = [_for_apply(live)]
        for obj in objects:
            for assignment in option(args, "set") or []:
                set_field(obj, assignment)
        results = []
        for obj in objects:
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", namespace_of(args))
            if "name" not in meta:
                raise CommandError("the InferenceService has no metadata.name")
            try:
                current: dict[str, Any] | None = await kube.request(
                    "GET", object_path(c.KIND, meta["namespace"], meta["name"])
                )
            except NotFoundError:
                current = None
            answer, note = await validated(kube, obj)
            nodes = (await kube.request("GET", "/api/v1/nodes"))["items"]
            pods = (await kube.request("GET", "/api/v1/pods"))["items"]
            try:
                result = preview(answer, current, nodes=nodes, pods=pods, now=time.time())
            except ValidationError as error:
                raise CommandError(
                    f"the operator would reject it: {format_validation_error(error)}"
                ) from error
            result.validation = note
            results.append(result)
    finally:
        await kube.close()
    if output_of(args) == "table":
        print("\n".join(render_preview(r) for r in results), end="")
    else:
        data = [r.to_dict() for r in results]
        print(dump(data[0] if len(data) == 1 else {"items": data}, output_of(args)), end="")
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser(
        "preview",
        parents=[global_flags()],
        help="what applying a file would do (dry run): revision, canary, GPUs, nodes, warnings",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", "--filename", help="InferenceService YAML ('-': stdin)")
    source.add_argument("--from-cluster", metavar="NAME", help="the live object, changed by --set")
    parser.add_argument(
        "--set",
        action="append",
        metavar="PATH=VALUE",
        help="change a field first, e.g. --set spec.replicas=4 (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    return run_command(lambda: _preview(args))
