"""The downloader against a real HTTP server on 127.0.0.1, with faults injected: nothing is lost and
nothing partial is ever marked done. Tar extraction against malicious archives."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from avbias.data.archive import UnsafeArchiveError, extract_selected
from avbias.data.download import DownloadPolicy, RemoteFile, VerifiedCache, download_all
from avbias.errors import DataError
from conftest import tool_env
from http_mirror import MirrorServer

SIZE = 200_000
FAST = DownloadPolicy(connections=4, retries=2, timeout_s=2.0, backoff_s=0.05, chunk_bytes=16_384)


@pytest.fixture()
def served(tmp_path: Path):
    """Five random files served from tmp/served, and where they should land."""
    root = tmp_path / "served"
    files = {}
    for i in range(5):
        data = np.random.default_rng(i).bytes(SIZE + i)
        (root / "media").mkdir(parents=True, exist_ok=True)
        (root / "media" / f"f{i}.bin").write_bytes(data)
        files[f"media/f{i}.bin"] = hashlib.sha256(data).hexdigest()
    with MirrorServer(root) as server:
        yield server, files, tmp_path / "store"


def remote_files(server: MirrorServer, files: dict[str, str], store: Path) -> list[RemoteFile]:
    return [RemoteFile(f"{server.url}/{path}", store / path, (server.root / path).stat().st_size, sha)
            for path, sha in files.items()]


def fetch(server: MirrorServer, files: dict[str, str], store: Path, policy: DownloadPolicy = FAST):
    cache = VerifiedCache(store / ".avbias" / "verified.json")
    return download_all(remote_files(server, files, store), cache, policy, "test", store / ".avbias" / "failed.txt")


def assert_complete(files: dict[str, str], store: Path) -> None:
    for path, sha in files.items():
        assert hashlib.sha256((store / path).read_bytes()).hexdigest() == sha, path
    assert not list(store.rglob("*.part"))


def test_dropped_connection_resumes_with_range(served) -> None:
    server, files, store = served
    server.inject("media/f1.bin", "drop")
    report = fetch(server, files, store)
    assert report.downloaded == 5
    assert_complete(files, store)
    first, second = server.requests("media/f1.bin")
    assert first.range_start == 0 and first.bytes_sent == (SIZE + 1) // 2
    assert second.status == 206 and second.range_start > 0
    assert first.bytes_sent + second.bytes_sent == SIZE + 1       # resumed, not restarted


def test_server_error_is_retried(served) -> None:
    server, files, store = served
    server.inject("media/f2.bin", "status", status=500, times=2)
    fetch(server, files, store)
    assert_complete(files, store)
    assert [r.status for r in server.requests("media/f2.bin")] == [500, 500, 200]


def test_missing_file_fails_clearly_and_keeps_the_rest(served) -> None:
    server, files, store = served
    files = dict(files, **{"media/absent.bin": "0" * 64})
    specs = remote_files(server, {k: v for k, v in files.items() if k != "media/absent.bin"}, store)
    specs.append(RemoteFile(f"{server.url}/media/absent.bin", store / "media/absent.bin", 10, "0" * 64))
    cache = VerifiedCache(store / ".avbias" / "verified.json")
    with pytest.raises(DataError) as err:
        download_all(specs, cache, FAST, "test", store / ".avbias" / "failed.txt")
    message = str(err.value)
    assert "1 of 6 files failed" in message and "media/absent.bin: HTTP 404" in message
    assert "re-run" in message and "base URL" in message
    assert "absent.bin" in (store / ".avbias" / "failed.txt").read_text()
    assert len(server.requests("media/absent.bin")) == 1           # 404 is not retried
    assert not (store / "media/absent.bin").exists() and not list(store.rglob("*.part"))
    # The five good files are complete and verified: a re-run only asks for the missing one.
    before = len(server.requests())
    with pytest.raises(DataError):
        download_all(specs, VerifiedCache(store / ".avbias" / "verified.json"), FAST, "test", store / ".avbias" / "failed.txt")
    assert [r.path for r in server.requests()[before:]] == ["/media/absent.bin"]


def test_corrupt_bytes_are_detected_and_fetched_again(served) -> None:
    server, files, store = served
    server.inject("media/f3.bin", "corrupt")
    fetch(server, files, store)
    assert_complete(files, store)
    assert len(server.requests("media/f3.bin")) == 2


def test_persistent_corruption_fails_without_a_complete_looking_file(served) -> None:
    server, files, store = served
    server.inject("media/f3.bin", "corrupt", times=-1)
    with pytest.raises(DataError, match=r"f3.bin: downloaded file failed verification \(sha256"):
        fetch(server, files, store)
    assert not (store / "media/f3.bin").exists() and not (store / "media/f3.bin.part").exists()
    assert len(server.requests("media/f3.bin")) == FAST.retries + 1


def test_stalled_server_times_out_then_retries(served) -> None:
    server, files, store = served
    server.inject("media/f0.bin", "stall", delay_s=3.0)
    start = time.monotonic()
    fetch(server, files, store, DownloadPolicy(connections=4, retries=2, timeout_s=0.5, backoff_s=0.05))
    assert time.monotonic() - start < 3.0                          # the stall was abandoned, not waited out
    assert_complete(files, store)


def test_persistent_stall_fails_naming_the_timeout(served) -> None:
    server, files, store = served
    server.inject("media/f0.bin", "stall", delay_s=2.0, times=-1)
    with pytest.raises(DataError, match=r"f0.bin: .*timed out"):
        fetch(server, files, store, DownloadPolicy(connections=4, retries=1, timeout_s=0.3, backoff_s=0.05))


def test_server_ignoring_range_restarts_the_file(served) -> None:
    server, files, store = served
    server.inject("media/f4.bin", "drop")
    server.inject("media/f4.bin", "ignore_range")
    fetch(server, files, store)
    assert_complete(files, store)
    assert [r.status for r in server.requests("media/f4.bin")] == [200, 200]


def test_rerun_downloads_and_hashes_nothing(served, monkeypatch: pytest.MonkeyPatch) -> None:
    server, files, store = served
    fetch(server, files, store)
    before = len(server.requests())
    import avbias.data.download as download

    hashed: list[Path] = []
    original = download.sha256_file
    monkeypatch.setattr(download, "sha256_file", lambda p: hashed.append(p) or original(p))   # a spy
    report = fetch(server, files, store)
    assert report.already_verified == 5 and report.downloaded == 0
    assert len(server.requests()) == before and hashed == []


def test_killed_download_resumes_without_refetching(served) -> None:
    server, files, store = served
    server.throttle = (8_192, 0.05)                                # ~160 KB/s: a file takes ~1.2 s
    script = (
        "import sys; from pathlib import Path; from avbias.data.download import *\n"
        "store = Path(sys.argv[1]); url = sys.argv[2]\n"
        f"files = [RemoteFile(url + '/' + p, store / p, None, s) for p, s in {files!r}.items()]\n"
        "download_all(files, VerifiedCache(store / '.avbias/verified.json'),"
        " DownloadPolicy(connections=1, retries=0, timeout_s=5), 'kill test', store / 'failed.txt')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(store), server.url], env=tool_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parts = [p for p in store.rglob("*.part") if p.stat().st_size > 0]
        if len(list(store.glob("media/*.bin"))) >= 1 and parts:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name for p in store.glob("media/*.bin")}
    assert done_before and parts, "the kill should land mid-download"
    server.throttle = None
    first_run = len(server.requests())
    fetch(server, files, store)
    assert_complete(files, store)
    second = server.requests()[first_run:]
    assert not {Path(r.path).name for r in second} & done_before  # finished files are not fetched again
    assert any(r.range_start > 0 for r in second)                 # the partial one resumed


# ---------------------------------------------------------------- tar extraction


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return path


def keep_mp4(name: str) -> str | None:
    return os.path.basename(name) if name.endswith(".mp4") else None


@pytest.mark.parametrize("bad_name", ["../escape.mp4", "/tmp/absolute.mp4", "ok/../../escape.mp4"])
def test_tar_with_escaping_member_is_rejected(tmp_path: Path, bad_name: str) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", [("good.mp4", b"x" * 10), (bad_name, b"evil")])
    dest = tmp_path / "out" / "inner"
    with pytest.raises(UnsafeArchiveError, match="refusing this archive") as err:
        extract_selected(archive, dest, keep_mp4, 1 << 20)
    assert repr(bad_name) in str(err.value) and "bad.tar.gz" in str(err.value)
    assert not (tmp_path / "out" / "escape.mp4").exists() and not (tmp_path / "escape.mp4").exists()
    assert not Path("/tmp/absolute.mp4").exists()


def test_tar_with_links_is_rejected(tmp_path: Path) -> None:
    link = tarfile.TarInfo("clip.mp4")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = make_tar(tmp_path / "link.tar.gz", [link])
    with pytest.raises(UnsafeArchiveError, match="is a link"):
        extract_selected(archive, tmp_path / "out", keep_mp4, 1 << 20)
    assert not (tmp_path / "out" / "clip.mp4").exists()


def test_tar_members_are_size_capped_and_selected(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", [("d/a.mp4", b"a" * 100), ("d/skip.txt", b"s"), ("d/big.mp4", b"b" * 5000)])
    with pytest.raises(DataError, match="big.mp4' exceeds 1000 bytes"):
        extract_selected(archive, tmp_path / "out", keep_mp4, 1000)
    assert (tmp_path / "out" / "a.mp4").read_bytes() == b"a" * 100
    assert not (tmp_path / "out" / "big.mp4").exists() and not list((tmp_path / "out").glob("*.part"))
    assert not (tmp_path / "out" / "skip.txt").exists()


def test_truncated_tarball_fails_clearly(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "t.tar.gz", [("a.mp4", np.random.default_rng(0).bytes(200_000))])
    archive.write_bytes(archive.read_bytes()[:50_000])
    with pytest.raises(DataError, match="t.tar.gz: cannot read the archive"):
        extract_selected(archive, tmp_path / "out", keep_mp4, 1 << 20)
    assert not (tmp_path / "out" / "a.mp4").exists() and not list(tmp_path.rglob("*.part"))
