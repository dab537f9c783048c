"""The Dockerfiles cannot be built here: check what can be checked offline, that they pin what
pyproject.toml, the Makefile and the chart pin, and install in the Makefile's order."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from tests.helm.chart import CHART, ROOT

IMAGES = ROOT / "helm" / "images"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pin(requirements: list[str], package: str) -> str:
    (spec,) = [r for r in requirements if re.match(rf"{re.escape(package)}(\[[^]]*\])?==", r)]
    return spec.split("==", 1)[1].split(";")[0].strip()


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SERVER = PYPROJECT["project"]["optional-dependencies"]["server"]
MAKEFILE = (ROOT / "Makefile").read_text()
RAY = pin(SERVER, "ray")
TORCH = pin(SERVER, "torch")
(SILERO,) = re.findall(r"--no-deps silero-vad==([0-9.]+)", MAKEFILE)


def test_chart_ray_version_is_the_pinned_ray() -> None:
    assert yaml.safe_load((CHART / "values.yaml").read_text())["rayVersion"] == RAY


@pytest.mark.parametrize(("name", "suffix"), [("Dockerfile.cpu", ""), ("Dockerfile.cuda", "-gpu")])
def test_dockerfile_pins_and_install_order(name: str, suffix: str) -> None:
    text = (IMAGES / name).read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert base == f"rayproject/ray:{RAY}-py311{suffix}"
    assert re.findall(r"^USER (\S+)", text, re.MULTILINE) == ["1000:100"]
    torch = text.index(f"pip install --no-cache-dir torch=={TORCH}")
    package = text.index('pip install --no-cache-dir ".[server]"')
    silero = text.index(f"pip install --no-cache-dir --no-deps silero-vad=={SILERO}")
    assert torch < package < silero
    assert (CPU_INDEX in text) == (name == "Dockerfile.cpu")  # the CUDA image takes PyPI's torch
    assert f"torch=={TORCH}" in MAKEFILE


def test_build_context_leaves_out_the_venv() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignored)
