"""HTTP downloads that either finish verified or say why: parallel, resumable, retried.

A file is written to `<name>.part` and renamed to its final name only after its size and sha256 (when
known) match. An interrupted file resumes with an HTTP Range request. Timeouts, dropped connections, 5xx
and checksum mismatches are retried with exponential backoff; 4xx (other than 408/429) fail at once.
Files verified once are remembered in a cache keyed by size and mtime, so a re-run does not re-hash them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from avbias import __version__
from avbias.errors import DataError
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


class TransientError(Exception):
    """Worth retrying: timeout, dropped connection, 5xx, checksum mismatch."""


class PermanentError(Exception):
    """Not worth retrying: 404, 403 and other client errors."""


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


def _open(url: str, offset: int, timeout_s: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (408, 429) or exc.code >= 500:
            raise TransientError(f"HTTP {exc.code} {exc.reason}") from None
        if exc.code == 416 and offset:
            raise TransientError("server refused to resume (HTTP 416)") from None
        raise PermanentError(f"HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:   # URLError, timeouts, refused, reset
        raise TransientError(f"{type(exc).__name__}: {exc}") from None


def _fetch_once(file: RemoteFile, policy: DownloadPolicy, progress: "Progress") -> None:
    """Bring `<dest>.part` one attempt closer to complete; raise if this attempt fell short."""
    part = part_path(file.dest)
    offset = part.stat().st_size if part.exists() else 0
    if file.size is not None and offset >= file.size:
        if offset > file.size:
            part.unlink()
            offset = 0
        else:
            return                                  # complete: verification decides
    response = _open(file.url, offset, policy.timeout_s)
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
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"connection lost after {written} bytes ({type(exc).__name__}: {exc})") from None
    if expected is not None and written < expected:
        raise TransientError(f"connection closed after {written} of {expected} bytes")


def fetch(file: RemoteFile, policy: DownloadPolicy, progress: "Progress") -> str:
    """Download one file to file.dest, verified; return its expected sha256 ("" when none is known).
    Raises TransientError/PermanentError."""
    part = part_path(file.dest)
    file.dest.parent.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    for attempt in range(policy.retries + 1):
        if attempt:
            delay = min(policy.backoff_s * 2 ** (attempt - 1), 60.0)
            log.info("retry %d/%d of %s in %.1f s: %s", attempt, policy.retries, file.url, delay, last)
            time.sleep(delay)
        try:
            _fetch_once(file, policy, progress)
        except TransientError as exc:
            last = exc
            continue
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
    files: Iterable[RemoteFile], cache: VerifiedCache, policy: DownloadPolicy, what: str, failed_list: Path
) -> DownloadReport:
    """Download every file that is not already verified; raise DataError listing any that failed."""
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
    failures: dict[RemoteFile, str] = {}
    if todo:
        total = sum(f.size for f in todo) if all(f.size is not None for f in todo) else None
        progress = Progress(total, len(todo), what)
        resumed = sum(part_path(f.dest).stat().st_size for f in todo if part_path(f.dest).exists())
        progress.update(resumed)
        try:
            with ThreadPoolExecutor(max_workers=max(1, policy.connections)) as pool:
                futures = {pool.submit(fetch, f, policy, progress): f for f in todo}
                for future in as_completed(futures):
                    file = futures[future]
                    try:
                        cache.record(file.dest, future.result())
                        report.downloaded += 1
                        report.bytes_fetched += file.dest.stat().st_size
                    except (TransientError, PermanentError) as exc:
                        failures[file] = str(exc)
                        log.error("%s: %s", file.url, exc)
                    progress.file_done()
        finally:
            progress.close()
    cache.save()
    if failures:
        raise_failures(failures, len(files), failed_list, what)
    failed_list.unlink(missing_ok=True)
    return report


def raise_failures(failures: dict[RemoteFile, str], total: int, failed_list: Path, what: str) -> None:
    with atomic_path(failed_list) as tmp:
        tmp.write_text("".join(f"{f.url}\t{reason}\n" for f, reason in sorted(failures.items(), key=lambda x: x[0].url)))
    shown = "\n".join(f"  {f.url}: {reason}" for f, reason in list(failures.items())[:10])
    more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
    hint = ""
    if any("HTTP 404" in r or "HTTP 403" in r for r in failures.values()):
        hint = " HTTP 404/403: the server does not have these files; check the base URL parameter."
    raise DataError(
        f"{what}: {len(failures)} of {total} files failed to download:\n{shown}{more}\n"
        f"The full list is in {failed_list}.{hint} Files already verified are kept and partial files resume: "
        "fix the cause and re-run the same command."
    )
