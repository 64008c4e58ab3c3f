"""Log-magnitude spectrograms with torchaudio, as in OGM-GE's CREMA-D recipe."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torchaudio


def fit_duration(samples: np.ndarray, length: int) -> np.ndarray:
    """Tile a short clip and cut to `length` samples (OGM-GE tiles CREMA-D audio to 3 s)."""
    reps = -(-length // max(samples.size, 1))
    return np.tile(samples, reps)[:length]


@functools.cache
def _stft(n_fft: int, hop_length: int) -> torchaudio.transforms.Spectrogram:
    # power=1: magnitude, centre-padded Hann window, like librosa.stft's defaults in the reference code.
    return torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop_length, power=1.0)


def log_spectrogram(samples: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """log(|STFT| + 1e-7): float32 (n_fft // 2 + 1, frames)."""
    wave = torch.from_numpy(np.clip(samples, -1.0, 1.0).astype(np.float32))
    with torch.no_grad():
        magnitude = _stft(n_fft, hop_length)(wave)
    return torch.log(magnitude + 1e-7).numpy()
