"""Acquisition of both datasets from real media files: a synthetic mirror of the CREMA-D LFS media and the
CVDF Kinetics tarballs, served by a real HTTP server on 127.0.0.1, local checkouts and K400 trees, and the
whole pipeline from nothing to the report through the real download code."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from avbias.acquire import acquire, cremad
from avbias.acquire.download import DownloadPolicy
from avbias.acquire.kinetics_sounds import yt_dlp_failure
from avbias.acquire.mirror import acquire_overrides, write_mirror
from avbias.acquire.plan import acquisition_note
from avbias.config import deep_merge, load_params, stage_params_json
from avbias.errors import DataError, SourceUnreachableError

from conftest import REPO, TINY, make_project, run, snakemake
from http_mirror import MirrorServer

# 96 CREMA-D clips (4 actors x 4 sentences x 6 emotions) and 30 Kinetics clips (3 classes x 6/2/2), 10 s each.
MIRROR_SYNTH = deep_merge(TINY["synth"],
                          {"ks": {"num_classes": 3, "clips_per_class": {"train": 6, "val": 2, "test": 2}}})
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
    with pytest.raises(DataError,
                       match=rf"(?s)1 failing their sha256/size check.*VideoFlash/{clips['clip_id'][5]}.flv"):
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
        f"{folder}/{i}.{ext},{'0' * 64},1\n"
        for i in ids for folder, ext in (("AudioWAV", "wav"), ("VideoFlash", "flv"))))
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
    with pytest.raises(DataError,
                       match=r"found 20 of 30 clips \(66.7%.*below acquire.kinetics_sounds.min_coverage=0.9"):
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


# ---------------------------------------------------------------- a bad network: stop fast, say what to do


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (bound, then closed): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def assert_no_incomplete_final_file(store: Path, manifest: pd.DataFrame) -> set[str]:
    """Every media file under its final name is complete and correct (partial ones are .part); returns them."""
    present = set()
    for row in manifest.itertuples(index=False):
        path = store / row.path
        if path.exists():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256, row.path
            present.add(row.path)
    return present


def assert_says_ways_forward(message: str, dataset: str) -> None:
    assert f"acquire.{dataset}.source: local and acquire.{dataset}.local_root" in message
    assert f"acquire.{dataset}.base_url" in message and "make demo" in message
    assert "HTTPS_PROXY" in message and "NO_PROXY" in message


def test_cremad_closed_port_stops_within_seconds(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    url = closed_port_url()
    params = params_for(root, layout, url)
    start = time.monotonic()
    with pytest.raises(SourceUnreachableError) as err:
        acquire("cremad", tmp_path / "raw", tmp_path / "store", params, POLICY)
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert f"CREMA-D: cannot download from {url[len('http://'):]};" in message and "refused the connection" in message
    assert_says_ways_forward(message, "cremad")
    assert "re-run resumes" in message
    assert not (tmp_path / "raw").exists()
    assert not assert_no_incomplete_final_file(tmp_path / "store",
                                               cremad.media_manifest(params["acquire"]["cremad"]["manifest"]))
    left = (tmp_path / "store/.avbias/failed.txt").read_text().splitlines()
    assert len(left) == 3 + 192                                             # metadata and every media file


def test_cremad_forbidden_preflight_exits_naming_proxy_or_permission(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    with MirrorServer(root) as server:
        params = params_for(root, layout, server.url)
        for name in cremad.METADATA_FILES:
            server.inject(f"cremad/raw/{name}", "status", status=403, times=-1)
        proc = acquire_cli(tmp_path, params, "cremad")
        assert proc.returncode == 2
        assert len(server.requests()) <= 4                                  # the preflight only: 3 tables, 1 clip
    assert f"CREMA-D: cannot download from 127.0.0.1:{server.url.rsplit(':', 1)[1]};" in proc.stderr
    assert "HTTP 403" in proc.stderr and "proxy or by the server (permission)" in proc.stderr
    assert_says_ways_forward(proc.stderr, "cremad")


def test_cremad_breaker_trips_on_forbidden_media_and_a_rerun_resumes(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    store = tmp_path / "store"
    manifest = cremad.media_manifest(str(root / layout["cremad"]["manifest"]))
    with MirrorServer(root) as server:
        params = params_for(root, layout, server.url)
        preflight = manifest["path"][manifest["size"].idxmin()]             # fetched first, with the metadata
        for path in [p for p in manifest["path"][40:] if p != preflight]:   # e.g. a proxy starts refusing
            server.inject(f"cremad/media/{path}", "status", status=403, times=-1)
        with pytest.raises(SourceUnreachableError) as err:
            acquire("cremad", tmp_path / "raw", store, params, POLICY)
        forbidden = [r for r in server.requests() if r.status == 403]
        # Not one request per file (about 150 are refused): the 20 of the streak, and up to connections-1
        # requests in flight when it trips. Files still arriving from before the refusals began do not
        # reset the streak (CI once saw 25 when they did).
        assert 20 <= len(forbidden) <= 20 + POLICY.connections - 1
        message = str(err.value)
        assert "stopped: 20 files in a row failed with the same error" in message and "HTTP 403" in message
        assert "proxy or by the server (permission)" in message and "re-run resumes" in message
        assert_says_ways_forward(message, "cremad")
        kept = assert_no_incomplete_final_file(store, manifest)
        assert len(kept) >= 40
        left = {line.split("\t")[0] for line in (store / ".avbias/failed.txt").read_text().splitlines()}
        assert left == {f"{server.url}/cremad/media/{p}" for p in set(manifest["path"]) - kept}
        assert f"the {len(left)} files left are listed in" in message

        server.faults.clear()                                               # the network is back
        before = len(server.requests())
        info = acquire("cremad", tmp_path / "raw", store, params, POLICY)
        again = [f"{server.url}{r.path}" for r in server.requests()[before:]]
        assert sorted(again) == sorted(left)                                # only the files left, each once
    assert info["clips"] == 96 and not (store / ".avbias/failed.txt").exists()


def test_cremad_random_server_errors_are_retried_without_tripping(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    manifest = cremad.media_manifest(str(root / layout["cremad"]["manifest"]))
    rng = np.random.default_rng(17)
    flaky = sorted(p for p in manifest["path"] if rng.random() < 0.05)
    assert 3 <= len(flaky) <= 25
    with MirrorServer(root) as server:
        for path in flaky:
            server.inject(f"cremad/media/{path}", "status", status=500, times=int(rng.integers(1, 3)))
        policy = DownloadPolicy(connections=4, retries=2, timeout_s=5, backoff_s=0.02, breaker_files=3)
        info = acquire("cremad", tmp_path / "raw", tmp_path / "store", params_for(root, layout, server.url), policy)
        assert info["clips"] == 96
        assert all(server.requests(f"cremad/media/{p}")[-1].status == 200 for p in flaky)
        assert sum(r.status == 500 for r in server.requests()) >= len(flaky)


def test_kinetics_cvdf_unreachable_list_host_stops_fast(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    url = closed_port_url()
    params = params_for(root, layout, url)
    start = time.monotonic()
    with pytest.raises(SourceUnreachableError) as err:
        acquire("kinetics_sounds", tmp_path / "raw", tmp_path / "store", params, POLICY)
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert message.startswith(f"Kinetics-Sounds (K400 lists): cannot download from {url[len('http://'):]};")
    assert "refused the connection" in message and "source: yt_dlp" in message
    assert_says_ways_forward(message, "kinetics_sounds")
    assert not (tmp_path / "raw").exists() and not list((tmp_path / "store").rglob("*.tar.gz"))


@pytest.mark.parametrize("stderr, kind", [
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This video has been removed by the uploader", None),
    ("ERROR: [youtube] abcdefghijk: Private video. Sign in if you've been granted access to this video", None),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This video is no longer available because the YouTube "
     "account associated with this video has been terminated.", None),
    ("ERROR: [youtube] abcdefghijk: Sign in to confirm your age. This video may be inappropriate for some users.",
     None),
    ("ERROR: unable to download video data: HTTP Error 403: Forbidden", None),       # one format, one clip
    ("ERROR: [youtube] abcdefghijk: Unable to download API page: <urlopen error [Errno -3] Temporary failure in "
     "name resolution> (caused by TransportError('<urlopen error [Errno -3] Temporary failure in name resolution>'))",
     "dns"),
    ("ERROR: [youtube] abcdefghijk: Unable to download webpage: Failed to resolve 'www.youtube.com' ([Errno -2] "
     "Name or service not known) (caused by TransportError(...))", "dns"),
    ("ERROR: [youtube] abcdefghijk: Unable to download webpage: <urlopen error [Errno 111] Connection refused>",
     "refused"),
    ("ERROR: [youtube] abcdefghijk: Unable to download webpage: <urlopen error [Errno 101] Network is unreachable>",
     "unreachable"),
    ("ERROR: [youtube] abcdefghijk: Unable to download webpage: <urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] "
     "certificate verify failed: self-signed certificate in certificate chain (_ssl.c:1006)>", "tls"),
    ("ERROR: [youtube] abcdefghijk: Unable to download webpage: <urlopen error Tunnel connection failed: 407 Proxy "
     "Authentication Required>", "proxy"),
    ("ERROR: [youtube] abcdefghijk: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser",
     "rate limit"),
    ("ERROR: [youtube] abcdefghijk: Unable to download webpage: HTTP Error 429: Too Many Requests", "rate limit"),
    ("WARNING: something\nERROR: [youtube] abcdefghijk: Unable to download webpage: HTTP Error 403: Forbidden",
     "permission"),
    ("", None),
])
def test_yt_dlp_errors_are_classified_per_clip_or_systemic(stderr: str, kind: str | None) -> None:
    assert yt_dlp_failure(stderr) == kind


FAKE_YT_DLP = """#!/bin/sh
echo "$@" >> "$FAKE_LOG"
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
if [ -n "$FAKE_FIRST_OK" ] && mkdir "$FAKE_LOG.first" 2>/dev/null; then
  printf clip > "$(dirname "$out")/clip.mp4"; exit 0
fi
echo "$FAKE_ERROR" >&2; exit 1
"""


def fake_yt_dlp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str, first_ok: bool) -> Path:
    """A stand-in yt-dlp on PATH (the real one is not installed here) that fails as told; returns its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "yt-dlp").write_text(FAKE_YT_DLP)
    (bin_dir / "yt-dlp").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FAKE_ERROR", error)
    monkeypatch.setenv("FAKE_FIRST_OK", "1" if first_ok else "")
    return tmp_path / "calls.log"


def test_yt_dlp_network_failure_trips_the_breaker_and_keeps_fetched_clips(mirror, tmp_path, monkeypatch) -> None:
    root, layout = mirror
    calls = fake_yt_dlp(tmp_path, monkeypatch, "ERROR: [youtube] x: Unable to download webpage: <urlopen error "
                        "[Errno -3] Temporary failure in name resolution>", first_ok=True)
    params = params_for(root, layout, "http://unused", kinetics_sounds={"source": "yt_dlp"})
    policy = DownloadPolicy(connections=2, retries=0, timeout_s=5, breaker_files=5)
    with pytest.raises(SourceUnreachableError) as err:
        acquire("kinetics_sounds", tmp_path / "raw", tmp_path / "store", params, policy)
    message = str(err.value)
    assert "Kinetics-Sounds (yt-dlp): stopped: 5 clips in a row" in message and "cannot resolve" in message
    assert "1 clips fetched in this run are kept; the 29 clips left" in message
    assert "acquire.kinetics_sounds.source: local and acquire.kinetics_sounds.local_root" in message
    assert "acquire.kinetics_sounds.source: cvdf" in message and "make demo" in message and "HTTPS_PROXY" in message
    assert len(calls.read_text().splitlines()) <= 1 + 5 + policy.connections
    assert len((tmp_path / "store/.avbias/failed.txt").read_text().split()) == 29
    assert len(list((tmp_path / "store/videos/yt_dlp").glob("*.mp4"))) == 1


def test_yt_dlp_unavailable_videos_fail_one_by_one(mirror, tmp_path, monkeypatch) -> None:
    root, layout = mirror
    calls = fake_yt_dlp(tmp_path, monkeypatch, "ERROR: [youtube] x: Video unavailable", first_ok=False)
    params = params_for(root, layout, "http://unused", kinetics_sounds={"source": "yt_dlp"})
    with pytest.raises(DataError, match=r"found 0 of 30 clips") as err:
        acquire("kinetics_sounds", tmp_path / "raw", tmp_path / "store", params,
                DownloadPolicy(connections=2, retries=0, timeout_s=5, breaker_files=5))
    assert not isinstance(err.value, SourceUnreachableError)
    assert len(calls.read_text().splitlines()) == 30                        # every clip tried once


# ---------------------------------------------------------------- the note before a run that downloads


def test_acquisition_note_says_what_where_and_how_to_avoid_it(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["paths"]["data"] = str(tmp_path / "data")
    note = acquisition_note(params)
    assert note is not None and len(note.splitlines()) <= 25
    assert max(len(line) for line in note.splitlines() if str(tmp_path) not in line) <= 100   # one screen wide
    assert "14,884 media files, 3.05 GB" in note
    assert "media.githubusercontent.com" in note and "raw.githubusercontent.com" in note
    assert "s3.amazonaws.com" in note and "~436 GB" in note and "~20 GB" in note
    assert f"{tmp_path / 'data' / 'sources' / 'cremad'}" in note
    assert "acquire.cremad.source: local and acquire.cremad.local_root" in note
    assert "acquire.kinetics_sounds.source: local" in note and "make demo" in note and "HTTPS_PROXY" in note

    params["acquire"]["kinetics_sounds"]["source"] = "yt_dlp"
    params["run"]["datasets"] = ["kinetics_sounds"]
    note = acquisition_note(params)
    assert "www.youtube.com with yt-dlp: 18,716 clips" in note and "CREMA-D" not in note

    (tmp_path / "data" / "raw" / "kinetics_sounds").mkdir(parents=True)     # acquired already: nothing to say
    assert acquisition_note(params) is None


@pytest.mark.parametrize("datasets, sources", [
    (["synth_cremad", "synth_ks"], {}),
    (["cremad", "kinetics_sounds"], {"cremad": {"source": "local"}, "kinetics_sounds": {"source": "local"}}),
])
def test_acquisition_note_is_silent_without_downloads(tmp_path: Path, datasets, sources) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["paths"]["data"] = str(tmp_path)
    params["run"]["datasets"] = datasets
    params["acquire"] = deep_merge(params["acquire"], sources)
    assert acquisition_note(params) is None


def test_acquisition_note_names_a_mirror_host_and_its_sizes(mirror, tmp_path: Path) -> None:
    root, layout = mirror
    params = params_for(root, layout, "http://mirror.example:8000")
    params["paths"]["data"] = str(tmp_path)
    params["run"]["datasets"] = ["cremad"]
    note = acquisition_note(params)
    size = cremad.media_manifest(str(root / layout["cremad"]["manifest"]))["size"].sum()
    assert f"192 media files, {size / 1e9:.2f} GB" in note and "from mirror.example:8000" in note
    assert "(metadata)" not in note                                        # one host for both


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
