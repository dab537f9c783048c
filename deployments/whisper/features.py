"""Whisper log-mel features in PyTorch (no torchaudio, no librosa)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_FRAMES = 3000  # 30 s window the encoder always sees
CHUNK_SAMPLES = N_FRAMES * HOP_LENGTH
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 100 mel frames/s
ENCODER_FRAMES_PER_SECOND = FRAMES_PER_SECOND / 2  # 50 encoder positions/s


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    mel = f / f_sp
    log_region = f >= min_log_hz
    mel[log_region] = min_log_mel + np.log(f[log_region] / min_log_hz) / logstep
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    f = f_sp * m
    log_region = m >= min_log_mel
    f[log_region] = min_log_hz * np.exp(logstep * (m[log_region] - min_log_mel))
    return f


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> torch.Tensor:
    """Slaney-normalised triangular mel filterbank, (n_mels, n_fft // 2 + 1), like librosa."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sr / 2.0]))[0], n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


def log_mel(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """16 kHz mono float audio (samples,) -> normalised log-mel (n_mels, samples // 160 + 1).

    Like faster-whisper, one hop of zeros is appended before the STFT.
    """
    return log_mel_batch(audio[None], [audio.shape[-1]], n_mels)[0][0]


def log_mel_batch(
    audio: torch.Tensor, lengths: list[int], n_mels: int = 80
) -> tuple[torch.Tensor, list[int]]:
    """Several rows at once (a GPU batch's features in a dozen kernels, not a dozen per row):
    ``audio`` (rows, samples), row k's first ``lengths[k]`` samples real and zeros after ->
    (rows, n_mels, frames) with zeros past each row's own frame count (its samples // 160 +
    1), and those counts.  Each row is what :func:`log_mel` of it alone gives: the frames of
    a row read no sample past its own end + one hop, which the appended hop makes zeros in
    both cases, and its normalisation peak is taken over its own frames."""
    audio = torch.nn.functional.pad(audio, (0, HOP_LENGTH))
    window = torch.hann_window(N_FFT, device=audio.device)
    frames = [n // HOP_LENGTH + 1 for n in lengths]
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., : max(frames)].abs() ** 2
    mel = mel_filters(n_mels).to(audio.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    real = torch.arange(max(frames), device=audio.device) < torch.tensor(frames, device=audio.device)[:, None]
    real = real[:, None, :]
    peak = log_spec.masked_fill(~real, -torch.inf).amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return ((log_spec + 4.0) / 4.0).masked_fill(~real, 0.0), frames


def pad_frames(mel: torch.Tensor, n_frames: int = N_FRAMES) -> torch.Tensor:
    """Zero-pad (or trim) the log-mel to the encoder's fixed 30 s window."""
    if mel.shape[-1] >= n_frames:
        return mel[..., :n_frames]
    return torch.nn.functional.pad(mel, (0, n_frames - mel.shape[-1]))
