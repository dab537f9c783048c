"""Log-mel features of a batch: each row is what it is alone."""

from __future__ import annotations

import torch

from deployments.whisper.features import log_mel, log_mel_batch


def test_batched_rows_equal_each_row_alone() -> None:
    """Rows of different lengths zero-padded into one tensor: each row's frames and its
    normalisation (the peak of its own frames) are its own, and its padding stays zero."""
    rng = torch.Generator().manual_seed(4)
    lengths = [16000 * 3 + 77, 4000, 16000 * 7, 241]
    rows = [torch.randn(n, generator=rng) * 0.1 for n in lengths]
    rows[1] *= 20  # a loud row: its peak must not clip the quiet ones
    batch = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mel, frames = log_mel_batch(batch, lengths)
    assert mel.shape == (len(rows), 80, max(frames))
    for k, row in enumerate(rows):
        alone = log_mel(row)
        assert frames[k] == alone.shape[-1] == lengths[k] // 160 + 1
        torch.testing.assert_close(mel[k, :, : frames[k]], alone, atol=1e-5, rtol=1e-5)
        assert not mel[k, :, frames[k] :].any()
