"""Why the worker stopped: exit codes, the termination message, engine log reading.

Kubernetes shows the container's termination message in the pod status
and in `kubectl describe pod`; the operator copies it into the
InferenceService's per-replica status. One line, stating the cause.
"""

import logging
import re
import signal
from collections.abc import Sequence

log = logging.getLogger(__name__)

# Kubernetes keeps at most 4096 bytes of a termination message.
MAX_MESSAGE_BYTES = 4096


def write_termination_message(path: str, message: str) -> None:
    """Write the one-line reason where Kubernetes looks for it; never raise."""
    line = " ".join(message.split())
    data = line.encode()[:MAX_MESSAGE_BYTES].decode(errors="ignore")
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(data + "\n")
    except OSError as error:
        log.warning("cannot write termination message to %s: %s", path, error)


# What a failed vLLM prints, most specific first: (pattern, reason template).
# The template may use {source}, {revision} and {line} (the matching line).
_ENGINE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory"),
        "CUDA out of memory {phase}",
    ),
    (
        re.compile(
            r"No available memory for the cache blocks|"
            r"less than desired GPU memory utilization|"
            r"larger than the maximum number of tokens that can be stored in KV cache"
        ),
        "not enough GPU memory for the KV cache {phase}: {line}",
    ),
    (
        re.compile(r"GatedRepoError|401 Client Error|Access to model .* is restricted"),
        "model access denied: {source} (set model.secretRef to a Secret with a hub token)",
    ),
    (
        re.compile(r"RevisionNotFoundError|Invalid rev id"),
        "model revision not found: {source}@{revision}",
    ),
    (
        re.compile(
            r"RepositoryNotFoundError|Repository Not Found|"
            r"is not a local folder and is not a valid model identifier|"
            r"does not appear to have a file named config\.json|"
            r"Invalid repository ID|No such file or directory: .*config\.json"
        ),
        "model not found: {source}",
    ),
    (
        re.compile(r"LocalEntryNotFoundError|Cannot connect to the hub|ConnectionError"),
        "cannot download the model {source}: {line}",
    ),
    (
        re.compile(r"error: unrecognized arguments|error: argument"),
        "invalid vLLM flag in engineArgs.extraArgs: {line}",
    ),
    (
        re.compile(r"CUDA error|cudaError|NCCL error|no CUDA-capable device"),
        "CUDA error {phase}: {line}",
    ),
    (
        re.compile(r"EngineDeadError|EngineCore encountered an issue|Engine core .* died"),
        "engine core died {phase}: {line}",
    ),
    (re.compile(r"ValueError: |pydantic.*ValidationError"), "invalid engine arguments: {line}"),
]
_ERROR_LINE = re.compile(r"(Error|error|Exception|FATAL|Traceback)")
# vLLM's log prefix: "(EngineCore_DP0 pid=7) ERROR 11-22 04:40:39 [core.py:700] ".
_LOG_PREFIX = re.compile(
    r"^(\(\w+ pid=\d+\)\s*)?(ERROR|CRITICAL|WARNING|INFO|DEBUG)"
    r"(\s+[\d-]+ [\d:.,]+)?(\s+\[[^\]]*\])?\s+"
)


def _clean(line: str) -> str:
    line = _LOG_PREFIX.sub("", line.strip())
    return line[:300]


def classify_engine_exit(
    output: Sequence[str],
    returncode: int,
    *,
    loaded: bool,
    source: str,
    revision: str | None = None,
) -> str:
    """The reason an engine process exited, from its last output lines.

    `loaded`: whether it had answered /health (serving) or was still loading.
    """
    phase = "while serving" if loaded else "while loading"
    for pattern, template in _ENGINE_PATTERNS:
        for line in reversed(output):
            if pattern.search(line):
                return template.format(
                    phase=phase, source=source, revision=revision or "?", line=_clean(line)
                )
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory? check worker.resources.memory)" if name == "SIGKILL" else ""
        return f"engine killed by {name} {phase}{hint}"
    for line in reversed(output):
        if _ERROR_LINE.search(line) and not line.lstrip().startswith(("File ", "Traceback")):
            return f"engine exited with code {returncode} {phase}: {_clean(line)}"
    return f"engine exited with code {returncode} {phase}"
