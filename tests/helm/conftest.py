"""Chart tier: render helm/rayscribe offline with the real Helm engine (helm-python-sdk).

Each values set is rendered once per session; tests read the parsed objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import CHART, ROOT, VARIANTS, Obj, helm, render, variant_values


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.helm)


@pytest.fixture(scope="session")
def chart() -> Iterator[Any]:
    if helm is None:
        pytest.skip("helm-python-sdk is not installed (pip install -e '.[k8s]'; x86_64 Linux only)")
    helm.disable_logging()  # the loader logs each followed symlink (files/ray_config.yaml)
    with helm.Chart.load(CHART) as c:
        yield c


@pytest.fixture(scope="session")
def rendered(chart: Any) -> dict[str, list[Obj]]:
    return {name: render(chart, variant_values(name)) for name in VARIANTS}


@pytest.fixture(scope="session")
def ray_config() -> Obj:
    return dict(yaml.safe_load((ROOT / "ray_config.yaml").read_text()))
