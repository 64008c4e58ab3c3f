"""The downloader against a real HTTP server on 127.0.0.1, with faults injected: nothing is lost and
nothing partial is ever marked done. Tar extraction against malicious archives."""

from __future__ import annotations

import errno
import hashlib
import http.client
import io
import os
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from avbias.acquire.archive import UnsafeArchiveError, extract_selected
from avbias.acquire.download import (
    CircuitBreaker,
    DownloadPolicy,
    RemoteFile,
    VerifiedCache,
    download_all,
)
from avbias.acquire.download_errors import SystemicError, systemic_kind, ways_forward
from avbias.errors import DataError, SourceUnreachableError

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
        download_all(specs, VerifiedCache(store / ".avbias" / "verified.json"), FAST, "test",
                     store / ".avbias" / "failed.txt")
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
    import avbias.acquire.download as download

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
        "import sys; from pathlib import Path; from avbias.acquire.download import *\n"
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


# ---------------------------------------------------------------- systemic errors: preflight and breaker


def http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://h/x", code, http.client.responses.get(code, ""), {}, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("exc, kind", [
    # What urlopen raises when the resolver fails (constructed here: nothing is resolved).
    (urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known")), "dns"),
    (urllib.error.URLError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")), "dns"),
    (urllib.error.URLError(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")), "refused"),
    (urllib.error.URLError(OSError(errno.ENETUNREACH, "Network is unreachable")), "unreachable"),
    (urllib.error.URLError(OSError(errno.EHOSTUNREACH, "No route to host")), "unreachable"),
    (urllib.error.URLError(TimeoutError("timed out")), "connect timeout"),
    (urllib.error.URLError(ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                                                           "failed: self-signed certificate in certificate chain")),
     "tls"),
    (urllib.error.URLError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")), "tls"),
    (urllib.error.URLError(OSError("Tunnel connection failed: 407 Proxy Authentication Required")), "proxy"),
    (http_error(401), "permission"), (http_error(403), "permission"), (http_error(407), "proxy"),
    # Per-file faults: retried (or, for 404, failed alone) as before.
    (TimeoutError("The read operation timed out"), None),                     # a stall after connecting
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), None),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), None),
    (http.client.IncompleteRead(b"x", 10), None),
    (http_error(404), None), (http_error(429), None), (http_error(500), None), (http_error(503), None),
    (urllib.error.URLError("unknown url type: ftp"), None),
])
def test_systemic_errors_are_told_from_per_file_faults(exc: BaseException, kind: str | None) -> None:
    assert systemic_kind(exc) == kind


def test_systemic_error_explains_host_and_cause() -> None:
    dns = SystemicError("dns", "media.example.org", "gaierror: [Errno -2] Name or service not known")
    assert "cannot resolve the host name media.example.org" in dns.explain()
    assert "proxy or by the server (permission)" in SystemicError("permission", "h", "HTTP 403 Forbidden").explain()
    assert "SSL_CERT_FILE" in SystemicError("tls", "h", "x").explain()


def test_ways_forward_names_local_mirror_demo_and_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://user:secret@proxy:3128")
    text = ways_forward("cremad", "a checkout", ["base_url"])
    assert "acquire.cremad.source: local and acquire.cremad.local_root: a checkout" in text
    assert "acquire.cremad.base_url" in text and "make demo" in text and "NO_PROXY" in text
    assert "set here: HTTPS_PROXY" in text and "secret" not in text       # names only, never credentials


def test_breaker_counts_distinct_files_of_one_error_and_resets_on_any_success() -> None:
    refused = SystemicError("refused", "h:1", "refused")
    breaker = CircuitBreaker(files=3, seconds=60.0)
    assert not breaker.failed("a", refused) and not breaker.failed("a", refused)   # one file twice: one
    assert not breaker.failed("b", refused)
    breaker.ok()                                                                  # the network worked
    assert not breaker.failed("c", refused) and not breaker.failed("d", refused)
    assert not breaker.failed("e", SystemicError("dns", "h", "x"))               # another error: new streak
    assert not breaker.failed("f", refused) and not breaker.failed("g", refused)
    assert breaker.failed("h", refused) and breaker.tripped and breaker.error is refused
    assert breaker.streak_files == 3
    timed = CircuitBreaker(files=100, seconds=0.0)            # "seconds of nothing but that error"
    assert not timed.failed("a", refused) and timed.failed("b", refused)


def test_breaker_ignores_successes_of_requests_sent_before_the_streak() -> None:
    """A file still arriving from before a proxy started refusing says nothing about new requests."""
    refused = SystemicError("permission", "h", "HTTP 403")
    breaker = CircuitBreaker(files=2, seconds=60.0)
    before = time.monotonic() - 1.0
    assert not breaker.failed("a", refused)
    breaker.ok(before)                                        # sent before the streak: no reset
    assert breaker.failed("b", refused) and breaker.streak_files == 2
    fresh = CircuitBreaker(files=2, seconds=60.0)
    assert not fresh.failed("a", refused)
    fresh.ok(time.monotonic())                                # sent after it began: the network works
    assert not fresh.failed("b", refused) and not fresh.tripped


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def many_files(tmp_path: Path, n: int) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "served"
    (root / "m").mkdir(parents=True)
    files = {}
    for i in range(n):
        data = f"file {i}\n".encode() * 50
        (root / "m" / f"{i:03d}.bin").write_bytes(data)
        files[f"m/{i:03d}.bin"] = hashlib.sha256(data).hexdigest()
    return root, files


def test_preflight_stops_at_the_first_refused_connection(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    store = tmp_path / "store"
    specs = [RemoteFile(f"{url}/meta{i}.csv", store / f"meta{i}.csv") for i in range(3)]
    start = time.monotonic()
    with pytest.raises(SourceUnreachableError) as err:
        download_all(specs, VerifiedCache(store / "v.json"), FAST, "Test set", store / "failed.txt", preflight=True,
                     advice="Ways forward: here")
    assert time.monotonic() - start < 5                                     # no backoff on a refused connection
    message = str(err.value)
    assert message.startswith(f"Test set: cannot download from 127.0.0.1:{url.rsplit(':', 1)[1]};")
    assert "refused the connection" in message and "Ways forward: here" in message and "re-run resumes" in message
    assert len((store / "failed.txt").read_text().splitlines()) == 3
    assert not [p for p in store.rglob("*") if p.is_file() and p.name not in ("failed.txt", "v.json")]


def test_dns_failure_stops_the_preflight_naming_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolver path end to end, with the resolver replaced: no DNS query leaves the machine."""
    asked: list[str] = []

    def no_such_host(host: str, *args: object, **kwargs: object) -> None:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    store = tmp_path / "store"
    specs = [RemoteFile(f"http://media.example.invalid/f{i}", store / f"f{i}") for i in range(3)]
    with pytest.raises(SourceUnreachableError, match=r"cannot resolve the host name media.example.invalid \(gaierror"):
        download_all(specs, VerifiedCache(store / "v.json"), FAST, "test", store / "failed.txt", preflight=True)
    assert set(asked) == {"media.example.invalid"} and len(asked) <= 3      # each file tried once at most


def test_breaker_stops_a_bulk_download_of_forbidden_files(tmp_path: Path) -> None:
    root, files = many_files(tmp_path, 80)
    with MirrorServer(root) as server:
        for path in list(files)[10:]:
            server.inject(path, "status", status=403, times=-1)
        policy = DownloadPolicy(connections=2, retries=3, timeout_s=2.0, backoff_s=0.05)
        with pytest.raises(SourceUnreachableError) as err:
            fetch(server, files, tmp_path / "store", policy)
        forbidden = [r for r in server.requests() if r.status == 403]
        # Each once, then the breaker (a few more were already in flight on a loaded machine): far from all 70.
        assert 20 <= len(forbidden) <= 20 + 5 * policy.connections
        assert len({r.path for r in forbidden}) == len(forbidden)
    message = str(err.value)
    assert "20 files in a row failed with the same error" in message and "HTTP 403" in message
    assert "proxy or by the server (permission)" in message
    left = (tmp_path / "store/.avbias/failed.txt").read_text().splitlines()
    assert len(left) == 70 and all("/m/" in line for line in left)
    assert "10 files verified so far are kept; the 70 files left" in message


def test_an_isolated_refused_connection_fails_alone(tmp_path: Path) -> None:
    root, files = many_files(tmp_path, 6)
    store = tmp_path / "store"
    with MirrorServer(root) as server:
        specs = remote_files(server, files, store)
        specs.insert(3, RemoteFile(f"http://127.0.0.1:{closed_port()}/m/gone.bin", store / "m/gone.bin"))
        with pytest.raises(DataError) as err:
            download_all(specs, VerifiedCache(store / "v.json"), FAST, "test", store / "failed.txt",
                         advice="Ways forward: x")
    assert not isinstance(err.value, SourceUnreachableError)
    assert "1 of 7 files failed" in str(err.value) and "Ways forward: x" in str(err.value)
    assert_complete(files, store)


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
    archive = make_tar(tmp_path / "a.tar.gz",
                       [("d/a.mp4", b"a" * 100), ("d/skip.txt", b"s"), ("d/big.mp4", b"b" * 5000)])
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
