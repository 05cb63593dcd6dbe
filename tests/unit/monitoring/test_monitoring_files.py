"""The chart's monitoring files are generated (`kubeinfer monitoring`, `make crds`)."""

from pathlib import Path

import pytest
from kubeinfer.operator.monitoring.generate import render_files

FILES = Path(__file__).resolve().parents[3] / "helm" / "kubeinfer" / "files"
GENERATED = render_files()


@pytest.mark.parametrize("relative", sorted(GENERATED))
def test_shipped_file_matches_the_generator(relative: str) -> None:
    assert (FILES / relative).read_text() == GENERATED[relative], (
        f"helm/kubeinfer/files/{relative} is out of date: run "
        "`kubeinfer monitoring --out helm/kubeinfer/files` (or `make crds`) and commit it"
    )


def test_no_stale_dashboard_is_shipped() -> None:
    shipped = {f"dashboards/{p.name}" for p in (FILES / "dashboards").glob("*.json")}
    assert shipped == {name for name in GENERATED if name.startswith("dashboards/")}
