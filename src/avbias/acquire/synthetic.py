"""Synthetic audio-visual datasets in the real datasets' exact layouts and codecs.

Each clip carries its class in both modalities, at a strength set per modality in dB:
- audio: a harmonic voice whose spectral envelope peaks at a class-specific formant, over a
  class-independent voice (actor pitch, syllable rhythm) and white noise;
- video: a class-coloured, class-shaped object moving over an actor-tinted background with a smooth
  colour-noise field.
The class signal's power over the noise's power is `audio_snr_db` / `visual_snr_db`, so either modality
can be made the dominant one; `audio_class_snr_offset_db` / `visual_class_snr_offset_db` (one dB value per
class) plant a per-class capability on top. An offset scales the class signal only: the noise and the
nuisances stay the same for every class, so the noise level carries no class information. Everything is
deterministic given the seed and the clip id.

Layouts: CREMA-D (`AudioWAV/*.wav` + `VideoFlash/*.flv`) and Kinetics (`<split>/<ytid>_<start>_<end>.mp4`,
H.264 + AAC, 10 s, clip ids and classes taken from the real Kinetics-Sounds split).
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import tempfile
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avbias.class_plan import cue_probs, drawn_cue, per_class_values
from avbias.datasets import CREMAD_EMOTIONS, CREMAD_FIRST_ACTOR, CREMAD_SENTENCES
from avbias.errors import DataError, ParamsError
from avbias.ffmpeg import ffmpeg_exe
from avbias.io import atomic_path
from avbias.parallel import process_pool

AUDIO_RATE = 16_000                  # rate the waveform is rendered at (CREMA-D AudioWAV: 16 kHz mono PCM)
FORMANTS_HZ = (500.0, 850.0, 1300.0, 1850.0, 2500.0, 3300.0)   # CREMA-D's 6 classes (calibrated)
FORMANT_BANDWIDTH_HZ = 180.0
NOISE_GRID = (9, 12)                 # coarse grid of the smooth visual noise field (rows, cols)
MODALITIES = ("audio", "visual")
PIPE_BYTES = 1 << 20                 # pipe to ffmpeg: room for two raw frames, so rendering and encoding overlap


@dataclass(frozen=True)
class VideoFormat:
    size: tuple[int, int]            # width, height
    fps: int
    codec_args: tuple[str, ...]      # ffmpeg output options: codecs and container
    suffix: str


# CREMA-D VideoFlash: FLV1 480x360 at 30 fps with an AAC track.
CREMAD_VIDEO = VideoFormat((480, 360), 30, ("-c:v", "flv1", "-q:v", "5", "-c:a", "aac", "-b:a", "64k",
                                           "-ar", "22050", "-f", "flv"), ".flv")
# Kinetics (CVDF): H.264 + AAC in mp4; real clips vary in size, 340x256 at 25-30 fps is common.
KINETICS_VIDEO = VideoFormat((320, 240), 25, ("-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
                                              "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-ar", "44100",
                                              "-f", "mp4"), ".mp4")


def class_formant(label: int, num_classes: int) -> float:
    """Formant frequency of a class: CREMA-D's calibrated table, else log-spaced over the voice band."""
    if num_classes == len(FORMANTS_HZ):
        return FORMANTS_HZ[label]
    return float(np.geomspace(450.0, 3500.0, num_classes)[label])


def offset_key(modality: str) -> str:
    return f"{modality}_class_snr_offset_db"


def class_snr_offsets(params: dict[str, Any], modality: str, num_classes: int) -> np.ndarray:
    """The per-class dB offsets of a modality (zeros when the key is absent, null or an empty list)."""
    offsets = per_class_values(params, offset_key(modality), num_classes, "dB offset")
    if offsets is None:
        return np.zeros(num_classes)
    if not np.all(np.isfinite(offsets)):
        raise ParamsError(f"synth.{offset_key(modality)}: offsets must be finite, got {offsets.tolist()!r}")
    return offsets


# The generator's name for it (the analysis reads the same plan through avbias.class_plan).
class_cue_probs = cue_probs


def cue_label(params: dict[str, Any], modality: str, clip: SynthClip) -> int:
    """The class whose cue the clip carries in a modality (class_plan.drawn_cue)."""
    return drawn_cue(params["seed"], clip.clip_id, modality, clip.label,
                     cue_probs(params, modality, clip.num_classes))


def cue_clip(params: dict[str, Any], modality: str, clip: SynthClip) -> SynthClip:
    """The clip as a modality renders it: the cue's class in place of the label (nuisances unchanged)."""
    label = cue_label(params, modality, clip)
    return clip if label == clip.label else dataclasses.replace(clip, label=label)


def class_snr_db(params: dict[str, Any], modality: str, label: int, num_classes: int) -> tuple[float, float]:
    """(global SNR, per-class offset) in dB of one modality for one class; the planted SNR is their sum."""
    return float(params[f"{modality}_snr_db"]), float(class_snr_offsets(params, modality, num_classes)[label])


@dataclass(frozen=True)
class SynthClip:
    clip_id: str
    label: int
    actor: int                       # nuisance index: background tint and voice pitch
    duration_s: float
    num_classes: int = len(CREMAD_EMOTIONS)
    video_path: str = ""             # Kinetics layout: the video's path relative to the dataset root


def clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(clip_id.encode())])


def plan_clips(params: dict[str, Any]) -> list[SynthClip]:
    """The clip list: actors x sentences x emotions, ids and intensity levels as in CREMA-D."""
    clips = []
    for a in range(params["num_actors"]):
        actor = CREMAD_FIRST_ACTOR + a
        for sentence in CREMAD_SENTENCES[: params["num_sentences"]]:
            for label, emotion in enumerate(CREMAD_EMOTIONS):
                level = "XX" if sentence != "IEO" or emotion == "NEU" else ("LO", "MD", "HI")[a % 3]
                clip_id = f"{actor}_{sentence}_{emotion}_{level}"
                rng = clip_rng(params["seed"], clip_id)
                duration = float(np.clip(rng.normal(2.6, 0.6), params["min_duration_s"], params["max_duration_s"]))
                clips.append(SynthClip(clip_id, label, a, round(duration, 3)))
    return clips


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x))) + 1e-12


def _harmonic_sums(phase: np.ndarray, amplitudes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rows sum_k amplitudes[r, k] * sin(k * phase + offsets[k]), k = 1..K, for each row r.

    Horner's scheme in z = exp(i phase): K complex multiply-adds instead of an (n, K) table of sines
    (5x faster; equal to the direct sum within 1e-11)."""
    z = np.exp(1j * phase)
    coeffs = amplitudes * np.exp(1j * offsets)               # (rows, K)
    acc = np.zeros((len(coeffs), phase.size), complex)
    for k in range(coeffs.shape[1] - 1, -1, -1):
        acc += coeffs[:, k:k + 1]
        acc *= z
    return acc.imag


def audio_parts(clip: SynthClip, snr_db: float, seed: int,
                offset_db: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three components of a clip's waveform before mixing: (class signal, voice, noise).

    snr_db sets the noise: power(noise) = power(unscaled class signal) / 10^(snr_db / 10). offset_db, the
    class's planted offset, then scales the class signal only, so power(signal) / power(noise) is
    snr_db + offset_db in dB and the noise and voice do not depend on the offset."""
    rng = clip_rng(seed, clip.clip_id + "/audio")
    n = int(round(clip.duration_s * AUDIO_RATE))
    t = np.arange(n) / AUDIO_RATE
    # Nuisance: actor pitch, jitter, vibrato and syllable rhythm.
    f0 = (95.0 + 130.0 * ((clip.actor * 0.618034) % 1.0)) * rng.uniform(0.95, 1.05)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5.0 * t))) / AUDIO_RATE
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 2 * np.pi)) ** 2
    harmonics = np.arange(1, int(7000 // f0) + 1)
    formant = class_formant(clip.label, clip.num_classes) * rng.uniform(0.97, 1.03)
    class_amp = np.exp(-0.5 * ((harmonics * f0 - formant) / FORMANT_BANDWIDTH_HZ) ** 2)
    voice_amp = 0.3 / np.sqrt(harmonics)            # class-independent voice with spectral tilt
    class_sum, voice_sum = _harmonic_sums(phase, np.stack([class_amp, voice_amp]),
                                          rng.uniform(0, 2 * np.pi, harmonics.size))
    signal = syllables * class_sum
    voice = syllables * voice_sum
    noise = rng.standard_normal(n) * np.sqrt(_power(signal) / 10 ** (snr_db / 10))
    if offset_db:
        signal = signal * 10 ** (offset_db / 20)
    return signal, voice, noise


def render_audio(clip: SynthClip, snr_db: float, seed: int, offset_db: float = 0.0) -> np.ndarray:
    """Mono float waveform in [-1, 1] at AUDIO_RATE: class signal + voice + noise (audio_parts), peak 0.9."""
    signal, voice, noise = audio_parts(clip, snr_db, seed, offset_db)
    mix = signal + voice + noise
    return (0.9 * mix / np.max(np.abs(mix))).astype(np.float32)


def _hsv_to_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, u = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    return np.array([(val, u, p), (q, val, p), (p, val, u), (p, q, val), (u, p, val), (val, p, q)][i])


def _class_mask(label: int, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """One shape per class: disc, square, diamond, horizontal bar, vertical bar, ring."""
    dx, dy = np.abs(xx - cx), np.abs(yy - cy)
    shape = label % 6
    if shape in (0, 5):
        d2 = dx**2 + dy**2
        return (d2 <= r**2) if shape == 0 else (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == 1:
        return (dx <= 0.85 * r) & (dy <= 0.85 * r)
    if shape == 2:
        return dx + dy <= 1.2 * r
    if shape == 3:
        return (dx <= 1.3 * r) & (dy <= 0.45 * r)
    return (dx <= 0.45 * r) & (dy <= 1.3 * r)


@functools.lru_cache(maxsize=8)
def _knots(size: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation from cells + 1 knots onto size pixels, the end pixels on the end knots: each
    pixel's left knot and its weight on the right knot."""
    pos = np.linspace(0, cells, size)
    low = np.minimum(pos.astype(int), cells - 1)
    return low, pos - low


def _smooth_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Unit-variance colour noise, smooth at the scale of the object (bilinear upsampling of a grid), float32.

    Bilinear upsampling is separable: along the rows on the small grid, then along the columns in float32
    (elementwise, no BLAS: its threads would spin on a core that the other generator workers need)."""
    rows, cols = NOISE_GRID
    grid = rng.standard_normal((rows + 1, cols + 1, 3))
    y0, wy = _knots(height, rows)
    x0, wx = _knots(width, cols)
    wy = wy[:, None, None]
    by_rows = (grid[y0] * (1 - wy) + grid[y0 + 1] * wy).astype(np.float32)      # (height, cols + 1, 3)
    field = np.take(by_rows, x0, axis=1)                                          # C-ordered
    field += (by_rows[:, x0 + 1] - field) * wx.astype(np.float32)[None, :, None]
    field /= field.std(dtype=np.float64)
    return field


def render_frames(clip: SynthClip, snr_db: float, seed: int, fmt: VideoFormat = CREMAD_VIDEO,
                  offset_db: float = 0.0) -> Iterator[np.ndarray]:
    """RGB uint8 frames (H, W, 3) at fmt.fps.

    snr_db: object colour amplitude over the noise field's standard deviation (20 log10). offset_db: the
    class's planted offset, applied to the object's colour amplitude only (the noise is set by snr_db)."""
    rng = clip_rng(seed, clip.clip_id + "/video")
    width, height = fmt.size
    scale = height / CREMAD_VIDEO.size[1]               # object size relative to the frame, as in CREMA-D
    n = int(round(clip.duration_s * fmt.fps))
    contrast = 90.0                                     # object colour amplitude (grey levels)
    noise_std = contrast / 10 ** (snr_db / 20)
    tint = (_hsv_to_rgb((clip.actor * 0.37) % 1.0, 0.25, 0.5) * 255).astype(np.float32)   # actor nuisance
    colour = _hsv_to_rgb(clip.label / clip.num_classes + rng.uniform(-0.03, 0.03), 0.9, 1.0)
    start_field = tint + np.float32(noise_std) * _smooth_field(rng, height, width)
    drift = np.float32(noise_std / 2) * (_smooth_field(rng, height, width) - _smooth_field(rng, height, width))
    radius = rng.uniform(40, 60) * scale
    start = rng.uniform([radius, radius], [width - radius, height - radius])
    end = rng.uniform([radius, radius], [width - radius, height - radius])
    amplitude = contrast * 10 ** (offset_db / 20)       # the class's planted offset scales the object only
    paint = tuple(float(c) for c in amplitude * (colour - 0.5) * 2) + (0.0,)
    box = int(1.4 * radius) + 1
    for i in range(n):
        s = i / max(n - 1, 1)
        cx, cy = start + (end - start) * s
        # Background: one fused pass, start + s * drift, saturated to uint8 (rounding x - 0.5: the floor).
        frame = cv2.addWeighted(start_field, 1.0, drift, s, -0.5, dtype=cv2.CV_8U)
        # The object, inside its bounding box only (the full-frame mask costs 10x more), painted in float
        # before rounding, as if the whole frame were.
        y0, y1 = max(int(cy) - box, 0), min(int(cy) + box, height)
        x0, x1 = max(int(cx) - box, 0), min(int(cx) + box, width)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask = _class_mask(clip.label, xx.astype(np.float32), yy.astype(np.float32), cx, cy, radius)
        region = cv2.scaleAdd(drift[y0:y1, x0:x1], s, start_field[y0:y1, x0:x1])
        cv2.add(region, paint, dst=region, mask=mask.view(np.uint8))
        frame[y0:y1, x0:x1] = cv2.addWeighted(region, 1.0, region, 0.0, -0.5, dtype=cv2.CV_8U)
        yield frame


def write_wav(path: Path, samples: np.ndarray, rate: int = AUDIO_RATE) -> None:
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes((samples * 32767).astype("<i2").tobytes())


def _widen_pipe(pipe: Any) -> None:
    """Let the pipe hold whole frames (Linux: default 64 KiB), so the renderer does not wait for ffmpeg."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass                                                   # other systems, or a lower pipe-max-size: fine


def encode_command(audio_path: Path, fmt: VideoFormat, video_input: str = "pipe:0") -> list[str]:
    """ffmpeg arguments (before the output path) that encode raw RGB frames plus a wav bit-exactly."""
    width, height = fmt.size
    return [
        ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fmt.fps), "-i", video_input,
        "-i", str(audio_path), "-map", "0:v", "-map", "1:a", *fmt.codec_args,
        "-threads", "1", "-fflags", "+bitexact", "-flags", "+bitexact", "-map_metadata", "-1", "-shortest",
    ]


def write_video(path: Path, frames: Iterator[np.ndarray], audio_path: Path, fmt: VideoFormat) -> None:
    """Video with an audio track, encoded bit-exactly so the bytes depend only on the input."""
    cmd = encode_command(audio_path, fmt)
    with atomic_path(path) as tmp:
        proc = subprocess.Popen([*cmd, str(tmp)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        _widen_pipe(proc.stdin)
        try:
            for frame in frames:
                proc.stdin.write(np.ascontiguousarray(frame).data)     # the frame's buffer, no copy
        except BrokenPipeError:
            pass
        proc.stdin.close()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise DataError(f"{path}: ffmpeg failed to encode the clip: {stderr.strip()[-500:]}")


def write_cremad_clip(root: Path, clip: SynthClip, params: dict[str, Any]) -> str:
    wav_path = root / "AudioWAV" / f"{clip.clip_id}.wav"
    write_clip(clip, params, wav_path, root / "VideoFlash" / f"{clip.clip_id}.flv", CREMAD_VIDEO)
    return clip.clip_id


def write_clip(clip: SynthClip, params: dict[str, Any], wav_path: Path, video_path: Path, fmt: VideoFormat) -> None:
    """The clip's audio to wav_path, then its video (muxed with that audio) to video_path in fmt's codecs."""
    # A corrupted cue is rendered as a clip of the cue's class, with that class's offset: the modality's
    # observation then depends on the cue alone, so the planted Bayes accuracies are exact.
    audio_clip, visual_clip = cue_clip(params, "audio", clip), cue_clip(params, "visual", clip)
    audio_db, audio_offset = class_snr_db(params, "audio", audio_clip.label, clip.num_classes)
    write_wav(wav_path, render_audio(audio_clip, audio_db, params["seed"], audio_offset))
    visual_db, visual_offset = class_snr_db(params, "visual", visual_clip.label, clip.num_classes)
    frames = render_frames(visual_clip, visual_db, params["seed"], fmt, visual_offset)
    write_video(video_path, frames, wav_path, fmt)


def plan_kinetics_clips(params: dict[str, Any]) -> tuple[list[str], list[SynthClip], dict[str, Any]]:
    """Real Kinetics-Sounds ids (first ids of each class and split): (classes, clips, split JSON)."""
    from avbias.acquire import kinetics_sounds as ks

    all_classes, ids = ks.load_split(None)
    cfg = params["ks"]
    classes = all_classes[: cfg["num_classes"]]
    subsets = {v: k for k, v in ks.OFFICIAL_SPLITS.items()}
    clips, database = [], {}
    for label, name in enumerate(classes):
        for split, count in cfg["clips_per_class"].items():
            chosen = ids[(ids["label_name"] == name) & (ids["official_split"] == split)].sort_values("clip_id")
            for row in chosen.head(count).itertuples(index=False):
                # CVDF keeps the training clips in train/; the others come from K400's val/.
                folder = "train" if split == "train" else "val"
                nuisance = zlib.crc32(row.ytid.encode()) % 24
                clips.append(SynthClip(row.clip_id, label, nuisance, cfg["duration_s"], len(classes),
                                       f"{folder}/{ks.video_file_name(row.clip_id)}"))
                database[row.clip_id] = {"subset": subsets[split], "label": name}
    return classes, clips, {"labels": classes, "database": database}


def write_kinetics_clip(root: Path, clip: SynthClip, params: dict[str, Any]) -> str:
    video = root / clip.video_path
    video.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=video.parent, prefix=".audio-") as tmp:
        write_clip(clip, params, Path(tmp) / "audio.wav", video, KINETICS_VIDEO)
    return clip.clip_id


SPLIT_FILE = "ks_split.json"           # written at the root of a synthetic Kinetics tree


def generate(root: str | Path, params: dict[str, Any], layout: str = "cremad", workers: int = 1) -> list[SynthClip]:
    """Write a whole dataset under root in the given layout; return the clip plan.

    cremad: AudioWAV/, VideoFlash/. kinetics: train/ and val/ holding `<ytid>_<start>_<end>.mp4`, plus
    ks_split.json (the literature split's format, restricted to the synthetic clips).
    """
    import json

    root = Path(root)
    if layout == "cremad":
        clips, write = plan_clips(params), write_cremad_clip
    elif layout == "kinetics":
        _, clips, split = plan_kinetics_clips(params)
        write = write_kinetics_clip
        root.mkdir(parents=True, exist_ok=True)
        with atomic_path(root / SPLIT_FILE) as tmp:
            tmp.write_text(json.dumps(split, indent=1))
    else:
        raise DataError(f"unknown synthetic layout {layout!r}: cremad or kinetics")
    for modality in MODALITIES:                 # fail before starting the workers
        class_snr_offsets(params, modality, clips[0].num_classes if clips else len(CREMAD_EMOTIONS))
        class_cue_probs(params, modality, clips[0].num_classes if clips else len(CREMAD_EMOTIONS))
    with process_pool(workers) as pool:
        list(pool.map(write, [root] * len(clips), clips, [params] * len(clips), chunksize=2))
    return clips
