"""Synthetic media in CREMA-D's and Kinetics' formats, decoded by real ffmpeg and OpenCV; extraction into shards."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import wave
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from avbias.acquire import cremad, kinetics_sounds, synthetic
from avbias.datasets import CREMAD_EMOTIONS
from avbias.errors import DataError
from avbias.extract.decode import DecodeError, decode_audio, read_frames
from avbias.extract.features import extract_clip, extract_features, recipe_for
from avbias.extract.spectrogram import fit_duration, log_spectrogram
from avbias.ffmpeg import ffmpeg_exe
from avbias.shards import load_split

SYNTH = {"seed": 3, "num_actors": 1, "num_sentences": 1, "audio_snr_db": 0.0, "visual_snr_db": 0.0,
         "min_duration_s": 1.3, "max_duration_s": 5.0,
         "ks": {"num_classes": 2, "clips_per_class": {"train": 1, "val": 1, "test": 1}, "duration_s": 10.0}}
EXTRACT = {
    "cremad": {"audio": "stft", "sample_rate": 22050, "duration_s": 3.0, "n_fft": 512, "hop_length": 353,
               "num_frames": 3},
    "kinetics_sounds": {"audio": "fbank", "sample_rate": 16000, "duration_s": 10.0, "num_mel_bins": 128,
                        "frame_shift_ms": 10, "target_frames": 1024, "norm_mean": -4.503877, "norm_std": 5.141276,
                        "num_frames": 3},
    "frame_size": 64, "spec_dtype": "float16", "shard_size": 4, "min_audio_s": 0.5, "max_quarantined_fraction": 0.5,
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[synthetic.SynthClip]]:
    root = tmp_path_factory.mktemp("synth")
    return root, synthetic.generate(root, SYNTH, workers=2)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_ids_follow_cremad(clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    root, plan = clips
    assert len(plan) == 6
    ids = sorted(p.stem for p in (root / "AudioWAV").glob("*.wav"))
    assert ids == sorted(p.stem for p in (root / "VideoFlash").glob("*.flv"))
    assert "1001_IEO_NEU_XX" in ids and "1001_IEO_ANG_LO" in ids
    assert all(1.3 <= c.duration_s <= 5.0 for c in plan)


def test_wav_is_16khz_mono_pcm(clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    root, plan = clips
    with wave.open(str(root / "AudioWAV" / f"{plan[0].clip_id}.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert wav.getnframes() / 16000 == pytest.approx(plan[0].duration_s, abs=1e-3)


def test_flv_is_flv1_480x360_30fps_with_audio(clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    root, plan = clips
    path = root / "VideoFlash" / f"{plan[0].clip_id}.flv"
    cap = cv2.VideoCapture(str(path))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    assert fourcc.upper() == "FLV1"
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (480, 360)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30)
    cap.release()
    audio = decode_audio(path, 16000)          # the flv's own audio track, through ffmpeg
    assert audio.size / 16000 == pytest.approx(plan[0].duration_s, abs=0.1)


def test_kinetics_layout_is_cvdf_named_h264_aac_10s(tmp_path: Path) -> None:
    plan = synthetic.generate(tmp_path, SYNTH, "kinetics", workers=2)
    assert len(plan) == 6
    classes, split = kinetics_sounds.load_split(str(tmp_path / synthetic.SPLIT_FILE))
    assert classes == ["blowing_nose", "blowing_out_candles"]                  # the real KS class names
    assert sorted(split["official_split"]) == ["test", "test", "train", "train", "val", "val"]
    videos = sorted(tmp_path.rglob("*.mp4"))
    assert {v.parent.name for v in videos} == {"train", "val"} and len(videos) == 6
    assert all(kinetics_sounds.video_key(v.name) for v in videos)            # <ytid>_<start:06d>_<end:06d>.mp4
    assert set(kinetics_sounds.index_tree(tmp_path)) == set(zip(split["ytid"], split["start"], strict=True))
    cap = cv2.VideoCapture(str(videos[0]))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    assert fourcc.lower() in ("avc1", "h264")
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) / cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0, abs=0.1)
    cap.release()
    assert decode_audio(videos[0], 16000).size / 16000 == pytest.approx(10.0, abs=0.1)   # the AAC track
    # Kinetics-Sounds' recipe: Kaldi fbank 128 x 1024, 3 frames.
    recipe = recipe_for("synth_ks", EXTRACT)
    spec, frames = extract_clip(str(videos[0]), str(videos[0]), recipe)
    assert spec.shape == (128, 1024) and spec.dtype == np.float16 and frames.shape == (3, 64, 64, 3)
    assert abs(float(spec[:, :900].astype(np.float32).mean())) < 2                # normalised
    silent = tmp_path / "no_audio.mp4"                                            # an mp4 without audio stream
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(videos[0]), "-an", "-c:v", "copy",
                    str(silent)], check=True)
    reason = extract_clip(str(silent), str(silent), recipe)
    assert isinstance(reason, str) and "audio" in reason, reason


def test_generation_is_deterministic(tmp_path: Path, clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    root, plan = clips
    clip = plan[2]
    synthetic.write_cremad_clip(tmp_path, clip, SYNTH)
    for sub, ext in (("AudioWAV", "wav"), ("VideoFlash", "flv")):
        assert sha(tmp_path / sub / f"{clip.clip_id}.{ext}") == sha(root / sub / f"{clip.clip_id}.{ext}")
    other = tmp_path / "other"
    synthetic.write_cremad_clip(other, clip, {**SYNTH, "seed": 4})
    assert sha(other / "AudioWAV" / f"{clip.clip_id}.wav") != sha(root / "AudioWAV" / f"{clip.clip_id}.wav")


def test_classes_differ_in_both_modalities(clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    """At high SNR the audio formant and the object's colour identify the class."""
    root, plan = clips
    clean = {**SYNTH, "audio_snr_db": 30.0, "visual_snr_db": 30.0}
    peaks, hues = [], []
    for clip in plan:
        audio = synthetic.render_audio(clip, clean["audio_snr_db"], clean["seed"])
        spectrum = np.abs(np.fft.rfft(audio))
        freqs = np.fft.rfftfreq(audio.size, 1 / synthetic.AUDIO_RATE)
        band = (freqs > 300) & (freqs < 4000)
        smooth = np.convolve(spectrum[band], np.ones(200) / 200, mode="same")
        peaks.append(freqs[band][np.argmax(smooth)])
        frame = next(synthetic.render_frames(clip, clean["visual_snr_db"], clean["seed"]))
        hsv = cv2.cvtColor(frame[:, :, ::-1], cv2.COLOR_BGR2HSV)
        saturated = hsv[..., 1] > 150
        hues.append(np.median(hsv[..., 0][saturated]))
    order = np.argsort([c.label for c in plan])
    assert np.all(np.diff(np.array(peaks)[order]) > 0)          # formants rise with the class index
    assert len(set(np.round(np.array(hues) / 10))) == len(plan)  # one hue per class


def test_decode_and_spectrogram_shapes(clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    root, plan = clips
    samples = decode_audio(root / "AudioWAV" / f"{plan[0].clip_id}.wav", 22050)
    assert samples.dtype == np.float32
    assert samples.size / 22050 == pytest.approx(plan[0].duration_s, abs=0.01)
    spec = log_spectrogram(fit_duration(samples, 3 * 22050), 512, 353)
    assert spec.shape == (257, 188)                  # OGM-GE's CREMA-D input size
    frames = read_frames(root / "VideoFlash" / f"{plan[0].clip_id}.flv", 3, 64)
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[2])  # the object moves


def test_corrupt_media_raise_decode_errors(tmp_path: Path, clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    root, plan = clips
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty"):
        decode_audio(empty, 22050)
    garbage = tmp_path / "garbage.flv"
    garbage.write_bytes(b"FLV" + bytes(range(256)) * 4)
    with pytest.raises(DecodeError):
        read_frames(garbage, 3, 32)
    with pytest.raises(DecodeError):
        decode_audio(garbage, 22050)


def test_extract_writes_shards_and_quarantines_bad_clips(tmp_path: Path,
                                                         clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    root, plan = clips
    raw = tmp_path / "raw"
    shutil.copytree(root, raw)
    broken = {c.clip_id: reason for c, reason in zip(plan[1:4], ("empty", "truncated", "min_audio_s"), strict=True)}
    zero, truncated, short = broken
    (raw / "AudioWAV" / f"{zero}.wav").write_bytes(b"")                             # zero-byte wav
    flv = raw / "VideoFlash" / f"{truncated}.flv"
    flv.write_bytes(flv.read_bytes()[: flv.stat().st_size // 3])                    # truncated flv
    synthetic.write_wav(raw / "AudioWAV" / f"{short}.wav", np.zeros(3200, np.float32))   # 0.2 s: wrong duration
    manifest = cremad.clips_table(raw, [c.clip_id for c in plan])
    manifest = manifest.assign(label=[CREMAD_EMOTIONS.index(n) for n in manifest["label_name"]], split="train")
    summary = extract_features(manifest, list(CREMAD_EMOTIONS), tmp_path / "features", {"extract": EXTRACT},
                               "synth_cremad", workers=2)
    assert (summary["extracted"], summary["quarantined"], summary["shards"]) == (3, 3, 2)   # 2 chunks of 4
    quarantine = pd.read_parquet(tmp_path / "features" / "quarantine.parquet").set_index("clip_id")["reason"]
    assert sorted(quarantine.index) == sorted(broken)
    for clip_id, reason in broken.items():
        assert reason in quarantine[clip_id], quarantine[clip_id]
    # Deterministic: extracting again gives byte-identical shards and manifests.
    extract_features(manifest, list(CREMAD_EMOTIONS), tmp_path / "again", {"extract": EXTRACT}, "synth_cremad",
                     workers=1)
    for path in sorted((tmp_path / "features").iterdir()):
        assert path.read_bytes() == (tmp_path / "again" / path.name).read_bytes(), path.name
    # Above the limit the stage fails with a summary by reason, and writes nothing.
    strict = {"extract": {**EXTRACT, "max_quarantined_fraction": 0.1}}
    with pytest.raises(DataError,
                       match=r"(?s)3 of 6 clips \(50.0%\) could not be decoded.*max_quarantined_fraction=0.1"):
        extract_features(manifest, list(CREMAD_EMOTIONS), tmp_path / "strict", strict, "synth_cremad", workers=2)
    assert not (tmp_path / "strict").exists()
    train = load_split(tmp_path / "features", "train")
    assert train.spec.shape == (3, 257, 188) and train.spec.dtype == np.float16
    assert train.frames.shape == (3, 3, 64, 64, 3)
    # A shard row equals the clip extracted directly.
    i = train.clip_ids.index(plan[0].clip_id)
    direct = log_spectrogram(fit_duration(decode_audio(raw / "AudioWAV" / f"{plan[0].clip_id}.wav", 22050), 66150),
                             512, 353)
    np.testing.assert_array_equal(train.spec[i], direct.astype(np.float16))
    # No temporary folder is left beside the output.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_extraction_killed_midway_then_rerun_gives_identical_shards(
        tmp_path: Path, clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    import os
    import signal
    import sys
    import time

    root, plan = clips
    manifest = cremad.clips_table(root, [c.clip_id for c in plan])
    manifest = manifest.assign(label=[CREMAD_EMOTIONS.index(n) for n in manifest["label_name"]], split="train")
    manifest.to_parquet(tmp_path / "clips.parquet")
    params = {"extract": {**EXTRACT, "shard_size": 1}}
    extract_features(manifest, list(CREMAD_EMOTIONS), tmp_path / "reference", params, "synth_cremad", workers=1)
    script = ("import json, sys, pandas as pd; from avbias.extract.features import extract_features; "
              "extract_features(pd.read_parquet(sys.argv[1]), [], sys.argv[2], json.loads(sys.argv[3]), "
              "'synth_cremad', 1)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "clips.parquet"), str(tmp_path / "features"),
                             __import__("json").dumps(params)])
    deadline = time.time() + 120
    while (time.time() < deadline and proc.poll() is None
           and not list(tmp_path.glob(".features.*.part/frames-00001.npy"))):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".features.*.part")) and not (tmp_path / "features").exists()   # killed mid-way
    extract_features(manifest, list(CREMAD_EMOTIONS), tmp_path / "features", params, "synth_cremad", workers=2)
    assert not list(tmp_path.glob(".features.*.part"))                                            # leftovers cleared
    names = sorted(p.name for p in (tmp_path / "reference").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "features").iterdir()) and len(names) == 6 * 2 + 3
    for name in names:
        assert (tmp_path / "features" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


# Planted per-class capability: per-class SNR offsets (synth.<m>_class_snr_offset_db).

def test_zero_class_offsets_give_the_bytes_of_no_offsets(tmp_path: Path,
                                                         clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    root, plan = clips
    clip = plan[4]
    zeros = {**SYNTH, "audio_class_snr_offset_db": [0.0] * 6, "visual_class_snr_offset_db": [0] * 6}
    synthetic.write_cremad_clip(tmp_path / "zeros", clip, zeros)
    synthetic.write_cremad_clip(tmp_path / "null", clip, {**SYNTH, "audio_class_snr_offset_db": None,
                                                          "visual_class_snr_offset_db": []})
    for sub, ext in (("AudioWAV", "wav"), ("VideoFlash", "flv")):
        assert sha(tmp_path / "zeros" / sub / f"{clip.clip_id}.{ext}") == sha(root / sub / f"{clip.clip_id}.{ext}")
        assert sha(tmp_path / "null" / sub / f"{clip.clip_id}.{ext}") == sha(root / sub / f"{clip.clip_id}.{ext}")


def test_class_offsets_are_validated_before_any_clip_is_written(tmp_path: Path) -> None:
    from avbias.errors import ParamsError

    with pytest.raises(ParamsError, match=r"synth\.audio_class_snr_offset_db: 4 values .* 6 classes"):
        synthetic.generate(tmp_path / "short", {**SYNTH, "audio_class_snr_offset_db": [1, 2, 3, 4]})
    with pytest.raises(ParamsError, match=r"synth\.visual_class_snr_offset_db: expected numbers"):
        synthetic.generate(tmp_path / "text", {**SYNTH, "visual_class_snr_offset_db": ["a"] * 6})
    # The Kinetics layout has ks.num_classes classes (2 here): six offsets are one per CREMA-D class, not its.
    with pytest.raises(ParamsError, match=r"synth\.visual_class_snr_offset_db: 6 values .* 2 classes"):
        synthetic.generate(tmp_path / "ks", {**SYNTH, "visual_class_snr_offset_db": [0] * 6}, "kinetics")
    assert not any(tmp_path.rglob("*.wav")) and not any(tmp_path.rglob("*.flv")) and not any(tmp_path.rglob("*.mp4"))


def test_class_offsets_set_each_class_signal_power_and_leave_the_noise_alone(
        clips: tuple[Path, list[synthetic.SynthClip]]) -> None:
    """Audio: class-signal over noise power is global + offset dB, the noise and voice are the same as
    without offsets. Video: the object's colour amplitude scales by the offset, the background is unchanged."""
    _, plan = clips
    offsets = [-6.0, -3.0, 0.0, 2.0, -9.0, -1.5]
    params = {**SYNTH, "audio_snr_db": -16.0, "visual_snr_db": 30.0,
              "audio_class_snr_offset_db": offsets, "visual_class_snr_offset_db": offsets}
    for clip in plan:
        planted = offsets[clip.label]
        snr, offset = synthetic.class_snr_db(params, "audio", clip.label, clip.num_classes)
        assert (snr, offset) == (-16.0, planted)
        signal, voice, noise = synthetic.audio_parts(clip, snr, params["seed"], offset)
        measured = 10 * np.log10(np.mean(signal**2) / np.mean(noise**2))
        assert measured == pytest.approx(-16.0 + planted, abs=0.1)        # the noise's sampled power varies
        signal0, voice0, noise0 = synthetic.audio_parts(clip, snr, params["seed"])
        assert 10 * np.log10(np.mean(signal**2) / np.mean(signal0**2)) == pytest.approx(planted, abs=1e-9)
        np.testing.assert_array_equal(noise, noise0)
        np.testing.assert_array_equal(voice, voice0)
        # Video, a few frames: the object minus the same frame without object (offset -inf: amplitude 0).
        snr, offset = synthetic.class_snr_db(params, "visual", clip.label, clip.num_classes)
        def frames(db: float) -> np.ndarray:
            return np.stack(list(synthetic.render_frames(clip, snr, params["seed"], offset_db=db))[::20]).astype(float)
        background = frames(-np.inf)
        painted, reference = frames(offset) - background, frames(0.0) - background
        inside = reference != 0                           # object pixels of channels the colour moves
        assert not np.any(painted[~np.any(reference != 0, axis=-1)])          # background untouched
        ratio = 20 * np.log10(np.sqrt(np.mean(painted[inside] ** 2) / np.mean(reference[inside] ** 2)))
        assert ratio == pytest.approx(planted, abs=0.15)  # uint8 rounding only (no saturation at 30 dB)
