"""HTTP downloads that either finish verified or say why: parallel, resumable, retried.

A file is written to `<name>.part` and renamed to its final name only after its size and sha256 (when
known) match. An interrupted file resumes with an HTTP Range request. Timeouts, dropped connections, 5xx
and checksum mismatches are retried with exponential backoff; 4xx (other than 408/429) fail at once.
Files verified once are remembered in a cache keyed by size and mtime, so a re-run does not re-hash them.

A bad network is told from a bad file. Systemic errors (the host name does not resolve, the connection is
refused or times out, TLS fails, HTTP 401/403/407 from a proxy or the server) are not retried with backoff:
a preflight on a few small files stops at the first one, and during a bulk download a circuit breaker stops
the whole download when `breaker_files` distinct files in a row (or `breaker_s` seconds of nothing else)
fail with the same systemic error. Verified files stay, failed.txt lists the files left, a re-run resumes.
The failure kinds and what the errors tell people: download_errors.py.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import math
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from avbias import __version__
from avbias.acquire.download_errors import (
    CONNECTION_KINDS,
    PermanentError,
    Stopped,
    SystemicError,
    TransientError,
    describe,
    host_of,
    raise_failures,
    raise_stopped,
    systemic_kind,
)
from avbias.io import atomic_path

log = logging.getLogger(__name__)

USER_AGENT = f"avbias/{__version__} (+https://github.com/avbias)"


@dataclass(frozen=True)
class RemoteFile:
    url: str
    dest: Path
    size: int | None = None        # expected bytes, when known
    sha256: str | None = None      # expected digest, when known


@dataclass(frozen=True)
class DownloadPolicy:
    connections: int = 8
    retries: int = 5               # attempts after the first one
    timeout_s: float = 60.0        # per connect and per read: a stalled server fails, never hangs
    backoff_s: float = 1.0         # wait before retry k is backoff_s * 2**k, capped at 60 s
    chunk_bytes: int = 1 << 20
    breaker_files: int = 20        # stop after this many distinct files in a row fail with one systemic error,
    breaker_s: float = 10.0        # or after this long of nothing but that error (at least 2 files)


class CircuitBreaker:
    """Trips when `files` distinct files in a row fail with the same systemic error, or when at least two
    have and nothing else happened for `seconds`. Any sign that the network works (a response, bytes
    received, a per-file fault) on a request sent after the streak began resets it; a transfer sent before
    (files still arriving when a proxy starts refusing) tells nothing about it. Shared by the threads of
    one download (or several)."""

    def __init__(self, files: int, seconds: float) -> None:
        self.files, self.seconds = max(1, files), seconds
        self._lock = threading.Lock()
        self._tripped = threading.Event()
        self._key: tuple[str, str] | None = None
        self._streak: set[str] = set()
        self._since = 0.0
        self.error: SystemicError | None = None     # the error that tripped it
        self.streak_files = 0                       # how many distinct files it had seen fail

    @property
    def tripped(self) -> bool:
        return self._tripped.is_set()

    def ok(self, sent: float = math.inf) -> None:
        """The network worked for a request sent at `sent` (time.monotonic(); default: now)."""
        if self._key is not None:                   # unlocked read: a stale value only costs a lock
            with self._lock:
                if sent >= self._since:
                    self._key, self._streak = None, set()

    def failed(self, name: str, error: SystemicError) -> bool:
        """Record a systemic failure of one file; True when the breaker is (now) tripped."""
        with self._lock:
            if self.tripped:
                return True
            now = time.monotonic()
            if self._key != (error.kind, error.host):
                self._key, self._streak, self._since = (error.kind, error.host), set(), now
            self._streak.add(name)
            n = len(self._streak)
            if n >= self.files or (n >= 2 and now - self._since >= self.seconds):
                self.error, self.streak_files = error, n
                self._tripped.set()
            return self.tripped

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early when the breaker trips; True when it has."""
        return self._tripped.wait(seconds)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


class VerifiedCache:
    """Digests of verified files, trusted while a file's size and mtime are unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._dirty = 0
        try:
            self._entries: dict[str, list] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self._entries = {}

    def _key(self, file: Path) -> str:
        return str(file.resolve())

    def is_verified(self, file: Path, size: int | None = None, sha256: str | None = None) -> bool:
        try:
            st = file.stat()
        except FileNotFoundError:
            return False
        entry = self._entries.get(self._key(file))
        if entry is None or entry[:2] != [st.st_size, st.st_mtime_ns]:
            return False
        return (size is None or size == st.st_size) and (sha256 is None or sha256 == entry[2])

    def record(self, file: Path, sha256: str) -> None:
        st = file.stat()
        with self._lock:
            self._entries[self._key(file)] = [st.st_size, st.st_mtime_ns, sha256]
            self._dirty += 1
            if self._dirty >= 500:          # a killed run loses at most this many entries (re-hashed, not re-fetched)
                self._save_locked()

    def save(self) -> None:
        with self._lock:
            self._save_locked()

    def _save_locked(self) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self._entries, sort_keys=True))
        self._dirty = 0


def verify_file(path: Path, size: int | None, sha256: str | None) -> str | None:
    """None if the file matches, else what is wrong."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size {actual_size} bytes, expected {size}"
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            return f"sha256 {actual[:12]}…, expected {sha256[:12]}…"
    return None


def _open(url: str, offset: int, timeout_s: float, breaker: CircuitBreaker,
          sent: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        kind = systemic_kind(exc)
        if kind is not None:
            raise SystemicError(kind, host_of(url), describe(exc)) from None
        breaker.ok(sent)                            # the server answered: the network works
        if exc.code in (408, 429) or exc.code >= 500:
            raise TransientError(f"HTTP {exc.code} {exc.reason}") from None
        if exc.code == 416 and offset:
            raise TransientError("server refused to resume (HTTP 416)") from None
        raise PermanentError(f"HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:   # URLError, timeouts, refused, reset
        kind = systemic_kind(exc)
        if kind is not None:
            raise SystemicError(kind, host_of(url), describe(exc)) from None
        raise TransientError(f"{type(exc).__name__}: {exc}") from None
    breaker.ok(sent)
    return response


def _fetch_once(file: RemoteFile, policy: DownloadPolicy, progress: Progress, breaker: CircuitBreaker,
                sent: float) -> None:
    """Bring `<dest>.part` one attempt closer to complete (the attempt began at `sent`); raise if it fell
    short."""
    part = part_path(file.dest)
    offset = part.stat().st_size if part.exists() else 0
    if file.size is not None and offset >= file.size:
        if offset > file.size:
            part.unlink()
            offset = 0
        else:
            return                                  # complete: verification decides
    response = _open(file.url, offset, policy.timeout_s, breaker, sent)
    with response:
        if offset and response.status != 206:      # server ignored the Range: start over
            progress.update(-offset)
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else file.size
        written = offset
        try:
            with open(part, "ab" if offset else "wb") as out:
                # read1: whatever has arrived (up to a chunk), so a killed run keeps nearly all it received.
                while chunk := response.read1(policy.chunk_bytes):
                    out.write(chunk)
                    written += len(chunk)
                    progress.update(len(chunk))
                    breaker.ok(sent)
                    if breaker.tripped:
                        raise Stopped(f"stopped after {written} bytes")   # the .part resumes next time
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"connection lost after {written} bytes ({type(exc).__name__}: {exc})") from None
    if expected is not None and written < expected:
        raise TransientError(f"connection closed after {written} of {expected} bytes")


def fetch(file: RemoteFile, policy: DownloadPolicy, progress: Progress, breaker: CircuitBreaker | None = None) -> str:
    """Download one file to file.dest, verified; return its expected sha256 ("" when none is known).
    Raises TransientError/PermanentError (SystemicError at once, without retries), Stopped when the
    breaker has tripped."""
    breaker = breaker or CircuitBreaker(1 << 30, float("inf"))
    part = part_path(file.dest)
    file.dest.parent.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    for attempt in range(policy.retries + 1):
        if attempt:
            delay = min(policy.backoff_s * 2 ** (attempt - 1), 60.0)
            log.info("retry %d/%d of %s in %.1f s: %s", attempt, policy.retries, file.url, delay, last)
            if breaker.wait(delay):
                raise Stopped("stopped before retrying")
        if breaker.tripped:
            raise Stopped("not started")
        sent = time.monotonic()
        try:
            _fetch_once(file, policy, progress, breaker, sent)
        except TransientError as exc:
            breaker.ok(sent)                        # a per-file fault: not a streak of systemic ones
            last = exc
            continue
        except SystemicError as exc:
            breaker.failed(file.url, exc)
            raise
        problem = verify_file(part, file.size, file.sha256)
        if problem is not None:
            progress.update(-part.stat().st_size)
            part.unlink()                           # corrupt: the next attempt starts from zero
            last = TransientError(f"downloaded file failed verification ({problem})")
            continue
        os.replace(part, file.dest)
        return file.sha256 or ""                     # no expected digest: size + mtime are the record
    raise TransientError(f"{last} (gave up after {policy.retries + 1} attempts)")


class Progress:
    """One bar for bytes across threads, with the count of finished files."""

    def __init__(self, total_bytes: int | None, total_files: int, desc: str) -> None:
        self._lock = threading.Lock()
        self.files_done = 0
        self.total_files = total_files
        # In a log file (Snakemake's log:), one line every 30 s instead of a redraw per chunk.
        interactive = sys.stderr.isatty()
        self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                        mininterval=1.0 if interactive else 30.0, maxinterval=30.0, dynamic_ncols=interactive)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"{self.files_done}/{self.total_files} files", refresh=False)

    def update(self, nbytes: int) -> None:
        with self._lock:
            self.bar.update(nbytes)

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1
            self._postfix()

    def close(self) -> None:
        self.bar.close()


@dataclass
class DownloadReport:
    downloaded: int = 0           # files fetched in this run
    already_verified: int = 0     # files skipped thanks to the verified cache
    verified_on_disk: int = 0     # files present but not cached: hashed, not fetched
    bytes_fetched: int = 0


def download_all(
    files: Iterable[RemoteFile], cache: VerifiedCache, policy: DownloadPolicy, what: str, failed_list: Path,
    *, preflight: bool = False, advice: str = "", breaker: CircuitBreaker | None = None,
    queued_after: Sequence[RemoteFile] = (),
) -> DownloadReport:
    """Download every file that is not already verified; raise DataError listing any that failed.

    preflight: the first systemic error stops everything (use it on a few small files before a bulk
    download). breaker: share one across calls that make up one download (default: a new one from policy).
    advice: the ways forward, appended to errors that blame the network. queued_after: files a caller
    would download next, listed as left in failed.txt when the breaker stops this call.
    Raises SourceUnreachableError when the preflight or the breaker stops the download."""
    files = list(files)
    report = DownloadReport()
    todo: list[RemoteFile] = []
    for file in files:
        if cache.is_verified(file.dest, file.size, file.sha256):
            report.already_verified += 1
            continue
        if file.dest.exists():
            # Complete under its final name but not in the cache (e.g. a killed run): hash, do not fetch.
            problem = verify_file(file.dest, file.size, file.sha256)
            if problem is None:
                cache.record(file.dest, file.sha256 or "")
                report.verified_on_disk += 1
                continue
            log.warning("%s: %s; downloading it again", file.dest, problem)
            file.dest.unlink()
        todo.append(file)
    log.info("%s: %d files verified already, %d to download", what, len(files) - len(todo), len(todo))
    if breaker is None:
        breaker = CircuitBreaker(1, 0.0) if preflight else CircuitBreaker(policy.breaker_files, policy.breaker_s)
    failures: dict[RemoteFile, Exception] = {}
    if todo:
        total = sum(f.size for f in todo) if all(f.size is not None for f in todo) else None
        progress = Progress(total, len(todo), what)
        resumed = sum(part_path(f.dest).stat().st_size for f in todo if part_path(f.dest).exists())
        progress.update(resumed)

        def settle(future: Future, file: RemoteFile) -> None:
            try:
                sha = future.result()
            except (CancelledError, Stopped):
                return                              # left for a re-run
            except (TransientError, PermanentError) as exc:
                failures[file] = exc
                log.error("%s: %s", file.url, exc)
            else:
                cache.record(file.dest, sha)
                report.downloaded += 1
                report.bytes_fetched += file.dest.stat().st_size
            progress.file_done()

        try:
            with ThreadPoolExecutor(max_workers=max(1, policy.connections)) as pool:
                batch = todo
                for second_pass in (False, True):
                    futures = {pool.submit(fetch, f, policy, progress, breaker): f for f in batch}
                    settled: set[Future] = set()
                    for future in as_completed(futures):
                        settle(future, futures[future])
                        settled.add(future)
                        if breaker.tripped:
                            break
                    if breaker.tripped:
                        for future in futures:
                            future.cancel()
                        for future in futures:      # in flight: they stop at their next chunk or attempt
                            if future not in settled and not future.cancelled():
                                future.exception()
                                settle(future, futures[future])
                        break
                    # Isolated connection failures (a server restart, a resolver hiccup) get one more try.
                    batch = [f for f, e in failures.items()
                             if isinstance(e, SystemicError) and e.kind in CONNECTION_KINDS]
                    if second_pass or not batch:
                        break
                    log.info("%s: trying %d files again that failed to connect", what, len(batch))
                    for f in batch:
                        del failures[f]
                    progress.files_done -= len(batch)
                    time.sleep(policy.backoff_s)
        finally:
            progress.close()
    cache.save()
    if breaker.tripped:
        left = [f for f in [*todo, *queued_after] if not cache.is_verified(f.dest, f.size, f.sha256)]
        raise_stopped(breaker, failures, left, len(files) + len(queued_after) - len(left), failed_list, what,
                      preflight, advice)
    if failures:
        raise_failures({f: str(e) for f, e in failures.items()}, len(files), failed_list, what,
                       advice if any(isinstance(e, SystemicError) for e in failures.values()) else "")
    failed_list.unlink(missing_ok=True)
    return report
