"""The long socket-fuzz run (marker ``fuzz``, ``make fuzz``): the same check as the short one
in test_security.py with many more connections (RAYSCRIBE_FUZZ_CONNECTIONS, default 2000)."""

from __future__ import annotations

import pytest

from tests.e2e import test_security
from tests.e2e.test_security import secure_url  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]


def test_long_socket_fuzz(secure_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import os

    monkeypatch.setenv("RAYSCRIBE_FUZZ_CONNECTIONS", os.environ.get("RAYSCRIBE_FUZZ_CONNECTIONS", "2000"))
    test_security.test_socket_fuzzer_crashes_nothing_and_a_good_stream_stays_correct(secure_url)
