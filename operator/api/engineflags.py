"""What a spec may not ask of vLLM: reserved flags and model source schemes.

Defined once and enforced three times, with the same words: as CEL rules in
the CRD (the API server rejects at ``kubectl apply``), by pydantic (the
operator's own parsing), and by the worker before it starts vLLM.
"""

from dataclasses import dataclass

from pydantic import JsonValue


@dataclass(frozen=True)
class ReservedFlags:
    """Flags extraArgs may not set, and why."""

    flags: frozenset[str]
    reason: str

    def message(self, flag: str) -> str:
        return f"engineArgs.extraArgs may not set {flag}: {self.reason}"

    def regex(self) -> str:
        """An RE2 pattern for an argument that sets one of the flags
        (``--flag`` or ``--flag=value``; vLLM reads ``_`` as ``-``)."""
        names = []
        for flag in sorted(self.flags):
            dashes = len(flag) - len(flag.lstrip("-"))
            names.append(flag[:dashes] + flag[dashes:].replace("-", "[-_]"))
        return f"^({'|'.join(names)})(=.*)?$"


# Flags the worker sets itself: the operator, the router and the probes
# rely on them, so extraArgs may not move them.
MANAGED = ReservedFlags(
    frozenset({"--host", "--port", "--served-model-name", "--model", "--uds", "--root-path"}),
    "the worker sets it",
)
# Secrets come from Secrets (HF_TOKEN), never from the spec.
SECRETS = ReservedFlags(
    frozenset({"--api-key", "--hf-token"}),
    "put secrets in a Secret (model.secretRef), never in the spec",
)
# One worker pod has exactly one GPU.
MULTI_GPU = ReservedFlags(
    frozenset(
        {"--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp", "--data-parallel-size"}
    ),
    "a worker pod has exactly one GPU",
)
RESERVED = (MANAGED, SECRETS, MULTI_GPU)

# model.source: a hub id (org/name), an absolute path, or one of these.
SOURCE_SCHEMES = ("pvc", "s3", "gs", "hf")
SOURCE_SCHEME_MESSAGE = (
    "model.source scheme is not supported; use a hub id (org/name), "
    + ", ".join(f"{scheme}://" for scheme in SOURCE_SCHEMES)
    + " or an absolute path"
)


def flag_name(arg: str) -> str | None:
    """The flag an argument sets (``--max_model_len=8`` -> ``--max-model-len``),
    or None for a value."""
    if not arg.startswith("-") or arg == "-" or _is_number(arg):
        return None
    name = arg.split("=", 1)[0]
    return name[:2] + name[2:].replace("_", "-") if name.startswith("--") else name


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def reserved_flag_problem(args: list[str]) -> str | None:
    """Why these extraArgs may not be used, or None."""
    for arg in args:
        flag = flag_name(arg)
        for reserved in RESERVED:
            if flag in reserved.flags:
                return reserved.message(flag)
    return None


def source_scheme_problem(source: str) -> str | None:
    if "://" in source and source.split("://", 1)[0] not in SOURCE_SCHEMES:
        return SOURCE_SCHEME_MESSAGE
    return None


def _cel(rule: str, message: str) -> JsonValue:
    return {"rule": rule, "message": message}


def extra_args_cel() -> list[JsonValue]:
    """CEL rules on EngineArgs: one per group of reserved flags."""
    return [
        _cel(
            f"!has(self.extraArgs) || self.extraArgs.all(a, !a.matches('{reserved.regex()}'))",
            reserved.message("any of " + ", ".join(sorted(reserved.flags))),
        )
        for reserved in RESERVED
    ]


def source_scheme_cel() -> JsonValue:
    """A CEL rule on ModelSpec for the source's scheme."""
    schemes = "|".join(SOURCE_SCHEMES)
    return _cel(
        f"!self.source.contains('://') || self.source.matches('^({schemes})://')",
        SOURCE_SCHEME_MESSAGE,
    )
