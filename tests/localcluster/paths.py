"""Where the local cluster keeps its sources, build outputs and state.

Build outputs live outside the repository (under the XDG cache directory)
so a fresh clone on the same machine reuses binaries that took many
minutes to build.
"""

from __future__ import annotations

import os
from pathlib import Path

# The Go modules sit next to this file (tests/localcluster/go/...). The
# editable install links this file into a link tree, so resolve the link.
PACKAGE_DIR = Path(__file__).resolve().parent
GO_MODULES_DIR = PACKAGE_DIR / "go"

ENV_CACHE_DIR = "KUBEINFER_CACHE_DIR"
ENV_CLUSTER_DIR = "KUBEINFER_CLUSTER_DIR"


def cache_dir() -> Path:
    """The root of everything cached for kubeinfer on this machine."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kubeinfer"


def bin_root() -> Path:
    """Built binaries, one folder per module and version hash."""
    return cache_dir() / "bin"


def default_cluster_dir() -> Path:
    """State of the cluster that `kubeinfer cluster up` starts by hand."""
    explicit = os.environ.get(ENV_CLUSTER_DIR)
    if explicit:
        return Path(explicit)
    return cache_dir() / "cluster"
