"""Acquisition of both datasets from real media files: a synthetic mirror of the CREMA-D LFS media and the
CVDF Kinetics tarballs, served by a real HTTP server on 127.0.0.1, local checkouts and K400 trees, and the
whole pipeline from nothing to the report through the real download code."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from avbias.config import deep_merge, load_params, stage_params_json
from avbias.data import cremad
from avbias.data.download import DownloadPolicy
from avbias.data.mirror import acquire_overrides, write_mirror
from avbias.data.sources import acquire
from avbias.errors import DataError
from conftest import REPO, TINY, make_project, run, snakemake
from http_mirror import MirrorServer

# 96 CREMA-D clips (4 actors x 4 sentences x 6 emotions) and 30 Kinetics clips (3 classes x 6/2/2), 10 s each.
MIRROR_SYNTH = deep_merge(TINY["synth"], {"ks": {"num_classes": 3, "clips_per_class": {"train": 6, "val": 2, "test": 2}}})
POLICY = DownloadPolicy(connections=4, retries=1, timeout_s=5, backoff_s=0.05)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mirror")
    synth = deep_merge(load_params(REPO / "params.yaml")["synth"], MIRROR_SYNTH)
    return root, write_mirror(root, synth, workers=2)


def params_for(mirror_root: Path, layout: dict[str, Any], url: str, **acquire_overrides_: Any) -> dict[str, Any]:
    params = load_params(REPO / "params.yaml")
    params["acquire"] = deep_merge(params["acquire"], acquire_overrides(layout, mirror_root, url))
    params["acquire"] = deep_merge(params["acquire"], acquire_overrides_)
    return params


def test_cremad_local_checkout_is_verified_and_used_in_place(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    checkout = tmp_path / "CREMA-D"
    shutil.copytree(root / "cremad" / "media", checkout)
    params = params_for(root, layout, "http://unused", cremad={"source": "local", "local_root": str(checkout)})
    info = acquire("cremad", tmp_path / "raw", tmp_path / "store", params, POLICY)
    assert info["clips"] == 96 and info["verified"] == 192
    clips = pd.read_csv(tmp_path / "raw" / "clips.csv")
    assert all(p.startswith(str(checkout)) for p in clips["video_path"])      # in place, no copy
    assert not list((tmp_path / "store").rglob("*.wav"))

    victim = checkout / "VideoFlash" / f"{clips['clip_id'][5]}.flv"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")           # same size, other bytes
    with pytest.raises(DataError, match=rf"(?s)1 failing their sha256/size check.*VideoFlash/{clips['clip_id'][5]}.flv"):
        acquire("cremad", tmp_path / "raw2", tmp_path / "store", params, POLICY)
    assert not (tmp_path / "raw2").exists()

    for path in list(checkout.glob("AudioWAV/*.wav"))[:3]:                  # as `git lfs clone` without pull
        path.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{'0' * 64}\nsize 1234\n")
    with pytest.raises(DataError, match=r"(?s)Git LFS checkout whose media were not pulled: 3 of 192.*git lfs pull"):
        acquire("cremad", tmp_path / "raw2", tmp_path / "store", params, POLICY)


def test_known_defective_clips_are_excluded_or_kept(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    ids = ["1001_IEO_HAP_LO", "1076_MTI_SAD_XX"]
    manifest.write_text("path,sha256,size\n" + "".join(
        f"{folder}/{i}.{ext},{'0' * 64},1\n" for i in ids for folder, ext in (("AudioWAV", "wav"), ("VideoFlash", "flv"))))
    kept, excluded = cremad.index_clips(tmp_path, str(manifest), exclude_defective=True)
    assert list(kept["clip_id"]) == ["1001_IEO_HAP_LO"] and excluded == ["1076_MTI_SAD_XX"]
    kept, excluded = cremad.index_clips(tmp_path, str(manifest), exclude_defective=False)
    assert list(kept["clip_id"]) == ids and excluded == []
    # The packaged manifest: every clip of the 7,442, the literature split covers all of them.
    table = cremad.media_manifest()
    assert len(table) == 14_884 and table["size"].sum() == 605_899_936 + 2_443_021_141
    assert cremad.literature_split().value_counts().to_dict() == {"train": 6698, "test": 744}


def k400_tree_from_tarballs(mirror_root: Path, dest: Path) -> list[Path]:
    """A local Kinetics-400 copy in the class-folder layout: <split>/<class>/<ytid>_<start>_<end>.mp4."""
    labels = {}
    for split in ("train", "val"):
        annotations = pd.read_csv(mirror_root / "kinetics/400/annotations" / f"{split}.csv", dtype={"youtube_id": str})
        labels.update({(r.youtube_id, r.time_start): r.label for r in annotations.itertuples()})
        for part in sorted((mirror_root / "kinetics/400" / split).glob("*.tar.gz")):
            with tarfile.open(part) as tar:
                for member in tar.getmembers():
                    ytid, start = member.name[:11], int(member.name[12:18])
                    target = dest / split / labels[(ytid, start)] / member.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())
    return sorted(dest.rglob("*.mp4"))


def test_kinetics_local_tree_coverage_threshold(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    videos = k400_tree_from_tarballs(root, tmp_path / "k400")
    params = params_for(root, layout, "http://unused",
                        kinetics_sounds={"source": "local", "local_root": str(tmp_path / "k400")})
    info = acquire("kinetics_sounds", tmp_path / "raw", tmp_path / "store", params, POLICY)
    assert info["coverage"]["found"] == 30 and info["classes"] == ["blowing_nose", "blowing_out_candles", "bowling"]
    assert "abseiling" not in pd.read_csv(tmp_path / "raw" / "clips.csv")["label_name"].tolist()

    removed = [v for v in videos if "abseiling" not in str(v)][::3]           # a third of the KS clips
    for video in removed:
        video.unlink()
    with pytest.raises(DataError, match=r"found 20 of 30 clips \(66.7%.*below acquire.kinetics_sounds.min_coverage=0.9"):
        acquire("kinetics_sounds", tmp_path / "raw", tmp_path / "store", params, POLICY)
    missing = (tmp_path / "store" / "missing_ids.txt").read_text().split()
    assert len(missing) == 10
    params["acquire"]["kinetics_sounds"]["min_coverage"] = 0.5
    info = acquire("kinetics_sounds", tmp_path / "raw", tmp_path / "store", params, POLICY)
    assert info["coverage"]["found"] == 20
    assert (tmp_path / "raw" / "missing_ids.txt").read_text().split() == missing
    coverage = pd.read_csv(tmp_path / "raw" / "coverage.csv")
    assert coverage["total"].sum() == 30 and coverage["found"].sum() == 20


def test_yt_dlp_source_says_how_to_install_it(mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, layout = mirror
    monkeypatch.setenv("PATH", "/nonexistent")
    params = params_for(root, layout, "http://unused", kinetics_sounds={"source": "yt_dlp"})
    with pytest.raises(DataError, match=r"source=yt_dlp needs the yt-dlp command: `pip install yt-dlp`"):
        acquire("kinetics_sounds", tmp_path / "raw", tmp_path / "store", params, POLICY)


def acquire_cli(project: Path, params: dict[str, Any], dataset: str) -> subprocess.CompletedProcess[str]:
    return run(["avbias", "acquire", "--params", stage_params_json(params, "acquire"), "--dataset", dataset,
                "--out", f"data/raw/{dataset}", "--store", f"data/sources/{dataset}", "--threads", "4",
                "--retries", "1", "--timeout", "5", "--backoff", "0.05"], project, check=False)


def test_download_404_exits_non_zero_naming_files_and_resumes(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    gone = "cremad/media/VideoFlash/1002_TIE_SAD_XX.flv"
    with MirrorServer(root) as server:
        server.inject(gone, "status", status=404)
        params = params_for(root, layout, server.url)
        proc = acquire_cli(tmp_path, params, "cremad")
        assert proc.returncode == 2
        assert f"{server.url}/{gone}: HTTP 404" in proc.stderr and "re-run the same command" in proc.stderr
        assert not (tmp_path / "data/raw/cremad").exists()                  # no index of an incomplete dataset
        fetched = len(server.requests())
        proc = acquire_cli(tmp_path, params, "cremad")                       # the file is back
        assert proc.returncode == 0, proc.stderr
        assert [r.path for r in server.requests()[fetched:]] == ["/" + gone]  # nothing else fetched again


@pytest.mark.slow
def test_pipeline_from_loopback_mirror_to_report(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    with MirrorServer(root) as server:
        overrides = {
            "run": {"datasets": ["cremad", "kinetics_sounds"], "methods": ["baseline"], "seeds": [0]},
            "acquire": acquire_overrides(layout, root, server.url),
            "splits": {"scheme": "literature"},
            "resources": {"download_retries": 1, "download_timeout_s": 10},
            "train": {"epochs": 4, "lr_step": 3},           # the pipeline's wiring is under test, not learning
        }
        project = make_project(tmp_path / "project", overrides)
        snakemake(project, "all")
        summary = (project / "results/tiny/summary.md").read_text()
        assert "cremad" in summary and "kinetics_sounds" in summary
        assert "30 / 30 (100.0%)" in summary and "known defective clips excluded" in summary   # the data section
        metrics = json.loads((project / "results/tiny/metrics.json").read_text())
        assert set(metrics) == {"cremad", "kinetics_sounds"}
        manifest = pd.read_parquet(project / "data/tiny/manifest/kinetics_sounds/clips.parquet")
        assert manifest["split"].value_counts().to_dict() == {"train": 18, "val": 6, "test": 6}
        manifest = pd.read_parquet(project / "data/tiny/manifest/cremad/clips.parquet")
        split = cremad.literature_split()
        assert (manifest.loc[manifest["split"] == "test", "clip_id"].map(split) == "test").all()
        media = [r for r in server.requests() if r.path.endswith((".wav", ".flv", ".tar.gz"))]
        tarballs = list(root.glob("kinetics/400/*/part_*.tar.gz"))
        assert len(media) == 192 + len(tarballs)                            # every file once
        assert not list((project / "data/tiny/sources/kinetics_sounds/tarballs").rglob("*.tar.gz"))   # deleted

        # A second run has nothing to do, and re-running acquisition downloads nothing.
        assert "Nothing to be done" in snakemake(project, "all", "-n").stdout
        before = len(server.requests())
        snakemake(project, "acquire_all", "--forcerun", "acquire")
        assert len(server.requests()) == before
