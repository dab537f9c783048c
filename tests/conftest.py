from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVALSET = Path(os.environ.get("RAYSCRIBE_EVALSET", ROOT.parent / "shared" / "evalset"))


@pytest.fixture(scope="session")
def evalset() -> Path:
    if not (EVALSET / "manifest.jsonl").is_file():
        pytest.skip(f"evalset not found at {EVALSET} (set RAYSCRIBE_EVALSET)")
    return EVALSET


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's status once it has reported, without the interpreter's teardown.

    Two fresh-clone runs (stops 21 and 23) passed every test and then died of a segfault in
    that teardown, past faulthandler (no Python frame: the native destructors of the
    libraries the suite loads in this process, Ray's driver, torch, onnxruntime, and their
    threads): CI read a green suite as red.  Nothing a test checks runs after this point."""
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:  # no session ran (a usage error): the normal exit
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)
