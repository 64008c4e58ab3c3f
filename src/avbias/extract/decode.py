"""Decode media: audio through ffmpeg (ffmpeg-python), video frames through OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import ffmpeg
import numpy as np

from avbias.ffmpeg import ffmpeg_exe

TRUNCATION_TOLERANCE = 0.9       # a video must deliver this fraction of its reported frames


class DecodeError(Exception):
    """A clip cannot be decoded; the message is the quarantine reason."""


def decode_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform at sample_rate, from any container ffmpeg reads (wav, flv, mp4)."""
    path = Path(path)
    if not path.is_file():
        raise DecodeError("audio file missing")
    if path.stat().st_size == 0:
        raise DecodeError("audio file is empty (0 bytes)")
    try:
        out, _ = (
            ffmpeg.input(str(path))
            .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate)
            .global_args("-nostdin", "-threads", "1")
            .run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        tail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] if exc.stderr else []
        raise DecodeError(f"ffmpeg cannot decode audio: {' '.join(tail)}") from None
    samples = np.frombuffer(out, dtype="<f4")
    if samples.size == 0:
        raise DecodeError("no audio samples decoded (no audio stream?)")
    return samples


def read_frames(path: str | Path, num_frames: int, size: int) -> np.ndarray:
    """`num_frames` RGB frames evenly spaced in time, resized to size x size: uint8 (T, S, S, 3)."""
    path = Path(path)
    if not path.is_file():
        raise DecodeError("video file missing")
    if path.stat().st_size == 0:
        raise DecodeError("video file is empty (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DecodeError("OpenCV cannot open the video")
        frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if frame_count <= 0:
            raise DecodeError("video reports no frames")
        # Centres of num_frames equal segments, as frame indices.
        targets = [min(int((i + 0.5) * frame_count / num_frames), frame_count - 1) for i in range(num_frames)]
        frames: list[np.ndarray] = []
        index = 0
        for target in targets:
            # grab() decodes without the colour conversion; retrieve only the frames we keep.
            while index <= target:
                if not capture.grab():
                    break
                index += 1
            ok, frame = capture.retrieve() if index > target else (False, None)
            if not ok or frame is None:
                # Containers estimate the frame count from the duration, so the last frame or two may be
                # missing in a sound file; a video ending much earlier is truncated.
                if not frames or index < TRUNCATION_TOLERANCE * frame_count:
                    raise DecodeError(f"video ends at frame {index} of {frame_count} (truncated?)")
                frame_rgb = frames[-1]
            else:
                frame_rgb = cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA),
                                         cv2.COLOR_BGR2RGB)
            frames.append(frame_rgb)
        return np.stack(frames)
    finally:
        capture.release()
