from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVALSET = Path(os.environ.get("RAYSCRIBE_EVALSET", ROOT.parent / "shared" / "evalset"))


@pytest.fixture(scope="session")
def evalset() -> Path:
    if not (EVALSET / "manifest.jsonl").is_file():
        pytest.skip(f"evalset not found at {EVALSET} (set RAYSCRIBE_EVALSET)")
    return EVALSET
