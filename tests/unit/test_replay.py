"""ReplayBuffer: the client's unacknowledged audio, by stream sample index (sans-I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.replay import ReplayBuffer


def ramp(start: int, stop: int) -> np.ndarray:
    """Samples whose value is their own stream index, so any read can be checked exactly."""
    return np.arange(start, stop, dtype=np.float32)


def filled(sizes: list[int], max_s: float = 100.0, rate: int = 10) -> ReplayBuffer:
    buf = ReplayBuffer(rate, max_s)
    at = 0
    for n in sizes:
        buf.append(ramp(at, at + n))
        at += n
    return buf


def test_append_and_read_across_chunk_boundaries() -> None:
    buf = filled([4, 3, 5])  # chunks [0,4) [4,7) [7,12)
    assert (buf.base, buf.end) == (0, 12)
    np.testing.assert_array_equal(buf.read(0, 12), ramp(0, 12))
    np.testing.assert_array_equal(buf.read(2, 9), ramp(2, 9))  # spans all three chunks
    np.testing.assert_array_equal(buf.read(4, 7), ramp(4, 7))  # exactly one chunk
    np.testing.assert_array_equal(buf.read(3, 5), ramp(3, 5))  # one sample either side of a boundary
    np.testing.assert_array_equal(buf.read(10, 20), ramp(10, 12))  # past the end: what there is
    assert buf.read(5, 5).size == 0 and buf.read(12, 15).size == 0
    assert buf.read(0, 12).dtype == np.float32


def test_appended_samples_are_float32() -> None:
    buf = ReplayBuffer(10, 100.0)
    buf.append(np.arange(3, dtype=np.float64))
    out = buf.read(0, 3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.0, 1.0, 2.0])


def test_ack_drops_what_the_server_has() -> None:
    buf = filled([4, 3, 5])
    buf.ack(4)  # a chunk boundary
    assert buf.base == 4
    np.testing.assert_array_equal(buf.read(4, 12), ramp(4, 12))
    buf.ack(6)  # inside a chunk: the chunk is cut, not dropped whole
    assert buf.base == 6
    np.testing.assert_array_equal(buf.read(6, 12), ramp(6, 12))
    with pytest.raises(ValueError, match="dropped"):
        buf.read(5, 12)
    buf.ack(3)  # an older ack changes nothing
    assert buf.base == 6
    np.testing.assert_array_equal(buf.read(6, 8), ramp(6, 8))
    buf.append(ramp(12, 14))
    assert buf.end == 14
    np.testing.assert_array_equal(buf.read(6, 14), ramp(6, 14))


def test_ack_of_everything_then_more_audio() -> None:
    buf = filled([4, 3])
    buf.ack(7)
    assert (buf.base, buf.end) == (7, 7)
    assert buf.read(7, 10).size == 0
    buf.append(ramp(7, 10))
    np.testing.assert_array_equal(buf.read(7, 10), ramp(7, 10))
    with pytest.raises(ValueError):
        buf.read(6, 10)


def test_ack_beyond_the_end_is_clamped_to_the_end() -> None:
    buf = filled([4, 3])
    buf.ack(50)
    assert (buf.base, buf.end) == (7, 7)  # never past what was captured
    buf.append(ramp(7, 9))
    assert (buf.base, buf.end) == (7, 9)
    np.testing.assert_array_equal(buf.read(7, 9), ramp(7, 9))  # new audio is kept, not dropped


def test_overflow_drops_the_oldest_audio() -> None:
    buf = ReplayBuffer(10, 0.5)  # 5 samples at 10 Hz
    assert buf.max_samples == 5
    buf.append(ramp(0, 3))
    buf.append(ramp(3, 6))
    assert (buf.base, buf.end) == (1, 6)  # the oldest sample went, inside the first chunk
    np.testing.assert_array_equal(buf.read(1, 6), ramp(1, 6))
    with pytest.raises(ValueError, match="before 1"):
        buf.read(0, 6)
    buf.append(ramp(6, 13))  # one chunk longer than the whole buffer
    assert (buf.base, buf.end) == (8, 13)
    np.testing.assert_array_equal(buf.read(8, 13), ramp(8, 13))
    with pytest.raises(ValueError):
        buf.read(7, 13)
    kept = sum(len(buf.read(i, i + 1)) for i in range(buf.base, buf.end))
    assert kept == buf.max_samples


def test_overflow_after_ack() -> None:
    buf = filled([3], max_s=0.5)
    buf.ack(2)
    buf.append(ramp(3, 8))
    assert (buf.base, buf.end) == (3, 8)
    np.testing.assert_array_equal(buf.read(3, 8), ramp(3, 8))


def test_empty_appends_change_nothing() -> None:
    buf = ReplayBuffer(10, 0.5)
    buf.append(np.zeros(0, dtype=np.float32))
    assert (buf.base, buf.end) == (0, 0)
    assert buf.read(0, 10).size == 0
    buf.append(ramp(0, 4))
    buf.append(np.zeros(0, dtype=np.float32))
    assert (buf.base, buf.end) == (0, 4)
    np.testing.assert_array_equal(buf.read(0, 4), ramp(0, 4))


def test_tiny_buffer_keeps_at_least_one_sample() -> None:
    buf = ReplayBuffer(10, 0.0)
    assert buf.max_samples == 1
    buf.append(ramp(0, 3))
    assert (buf.base, buf.end) == (2, 3)
    np.testing.assert_array_equal(buf.read(2, 3), [2.0])


def test_overflow_never_drops_audio_a_live_connection_has_still_to_send() -> None:
    buf = ReplayBuffer(rate=10, max_s=1.0)  # 10 samples
    buf.append(np.arange(8, dtype=np.float32), keep_from=0)
    buf.append(np.arange(8, dtype=np.float32), keep_from=3)  # over by 6, but 3.. is unsent
    assert buf.base == 3 and buf.end == 16
    buf.append(np.arange(2, dtype=np.float32))  # disconnected: the bound applies again
    assert buf.base == 8 and buf.end == 18
