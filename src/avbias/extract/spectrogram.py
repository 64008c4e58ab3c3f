"""Audio features with torchaudio, in the two literature recipes.

stft  (OGM-GE, CREMA-D): 22,050 Hz tiled to 3 s, |STFT| n_fft 512 hop 353, log(x + 1e-7) -> 257 x 188.
fbank (OGM-GE, Kinetics-Sounds): 16 kHz, Kaldi fbank 128 mel, 10 ms shift, padded or cut to 1,024 frames,
      normalised (x - mean) / (2 std) with AudioSet's mean -4.503877 and std 5.141276 -> 128 x 1024.
Both are returned as (frequency, time) float32.
"""

from __future__ import annotations

import functools
from typing import Any

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


def kaldi_fbank(samples: np.ndarray, sample_rate: int, num_mel_bins: int, frame_shift_ms: float,
                target_frames: int, norm_mean: float, norm_std: float) -> np.ndarray:
    """Normalised log-mel filterbank: float32 (num_mel_bins, target_frames)."""
    wave = torch.from_numpy(samples.astype(np.float32)).unsqueeze(0)
    wave = wave - wave.mean()
    with torch.no_grad():
        fbank = torchaudio.compliance.kaldi.fbank(
            wave, htk_compat=True, sample_frequency=sample_rate, use_energy=False, window_type="hanning",
            num_mel_bins=num_mel_bins, dither=0.0, frame_shift=frame_shift_ms,
        )                                                          # (frames, mel)
    frames = fbank.shape[0]
    if frames < target_frames:
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, target_frames - frames))
    fbank = fbank[:target_frames]
    return ((fbank - norm_mean) / (norm_std * 2)).T.contiguous().numpy()


def audio_features(samples: np.ndarray, recipe: dict[str, Any]) -> np.ndarray:
    """The recipe's features of a decoded waveform at recipe['sample_rate']."""
    length = int(round(recipe["duration_s"] * recipe["sample_rate"]))
    if recipe["audio"] == "stft":
        return log_spectrogram(fit_duration(samples, length), recipe["n_fft"], recipe["hop_length"])
    return kaldi_fbank(samples[:length], recipe["sample_rate"], recipe["num_mel_bins"], recipe["frame_shift_ms"],
                       recipe["target_frames"], recipe["norm_mean"], recipe["norm_std"])
