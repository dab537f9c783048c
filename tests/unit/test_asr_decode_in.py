"""Where the ASR replica runs a batch (``BatchConfig.decode_in``): on its event loop where the
engine is on a GPU (its host work holds the GIL), in a worker thread elsewhere."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from deployments.asr import ASRModel, BatchConfig


def replica_on(device: str) -> ASRModel:
    replica = object.__new__(ASRModel.func_or_class)  # no engine load: only the choice is tested
    replica.engine = SimpleNamespace(device=device)
    return replica  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("device", "decode_in", "in_loop"),
    [
        ("cuda", "auto", True),
        ("cuda:1", "auto", True),
        ("cpu", "auto", False),
        ("fake", "auto", False),
        ("cuda", "thread", False),
        ("cpu", "loop", True),
    ],
)
def test_decode_in_picks_the_loop_on_a_gpu_unless_told(device: str, decode_in: str, in_loop: bool) -> None:
    assert replica_on(device).in_loop(BatchConfig.model_validate({"decode_in": decode_in})) is in_loop


def test_decode_in_is_one_of_three() -> None:
    assert BatchConfig().decode_in == "auto"
    with pytest.raises(ValidationError, match="decode_in"):
        BatchConfig.model_validate({"decode_in": "process"})
