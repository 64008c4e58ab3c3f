"""What a failed download tells people: the failure kinds the download engine (download.py) acts on (retry a
transient fault, stop on a systemic one), each told in one sentence, and the errors a failed or stopped
download raises, with the files left and the ways forward."""

from __future__ import annotations

import errno
import os
import socket
import ssl
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from avbias.errors import DataError, SourceUnreachableError
from avbias.io import atomic_path

if TYPE_CHECKING:
    from avbias.acquire.download import CircuitBreaker, RemoteFile


class TransientError(Exception):
    """Worth retrying: timeout, dropped connection, 5xx, checksum mismatch."""


class PermanentError(Exception):
    """Not worth retrying: 404 and other client errors."""


class SystemicError(PermanentError):
    """The network or the access, not this file, is at fault: every other file from the host would fail too."""

    def __init__(self, kind: str, host: str, detail: str) -> None:
        super().__init__(f"{detail} [{kind}]")
        self.kind, self.host, self.detail = kind, host, detail

    def explain(self) -> str:
        """One sentence for people: what failed, where, and what it usually means."""
        host, detail = self.host, self.detail
        return {
            "dns": f"cannot resolve the host name {host} ({detail}): this machine's DNS does not know it "
                   "(offline, or only a proxy can resolve it)",
            "refused": f"{host} refused the connection ({detail}): nothing listens there, or a firewall rejects it",
            "unreachable": f"no network route to {host} ({detail})",
            "connect timeout": f"no answer from {host} when connecting ({detail}): a firewall may be dropping "
                               "the connection",
            "tls": f"the TLS handshake with {host} failed ({detail}): a proxy or firewall intercepting TLS needs "
                   "its CA certificate (SSL_CERT_FILE=/path/to/ca.pem)",
            "permission": f"{host} answered {detail}: access denied by a proxy or by the server (permission)",
            "proxy": f"the proxy refused the connection to {host} ({detail}): proxy authentication or policy; "
                     "credentials go in the proxy URL (HTTPS_PROXY=http://user:password@proxy:port)",
            "rate limit": f"{host} refuses further requests ({detail}): rate-limited or asked to sign in",
        }.get(self.kind, f"{host}: {detail}")


class Stopped(Exception):
    """The circuit breaker tripped while this file was queued or in flight: it is left for a re-run."""


# Systemic errors that mean "could not connect": an isolated one (a server restart) gets one more try at the
# end of the download; HTTP answers (401/403/407) are definitive and get none.
CONNECTION_KINDS = frozenset({"dns", "refused", "unreachable", "connect timeout", "tls"})
SYSTEMIC_STATUS = {401: "permission", 403: "permission", 407: "proxy"}
_TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLWantReadError, ssl.SSLWantWriteError,
                  ssl.SSLSyscallError)
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


def systemic_kind(exc: BaseException) -> str | None:
    """The kind of systemic failure an exception from urlopen or a read shows, or None for a per-file fault.

    urllib wraps errors raised while connecting in URLError(reason=exc); errors after the connection is up
    (a read timeout, a reset) arrive unwrapped and stay per-file (retried)."""
    if isinstance(exc, urllib.error.HTTPError):
        return SYSTEMIC_STATUS.get(exc.code)
    connecting = isinstance(exc, urllib.error.URLError)
    if connecting:
        if not isinstance(exc.reason, BaseException):
            return None
        exc = exc.reason
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ssl.SSLError):
        return None if isinstance(exc, _TRANSIENT_SSL) else "tls"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS:
        return "unreachable"
    if connecting and isinstance(exc, TimeoutError):
        return "connect timeout"
    if isinstance(exc, OSError) and str(exc).startswith("Tunnel connection failed"):   # http.client, via a proxy
        return "proxy"
    return None


def describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    return f"{type(exc).__name__}: {exc}"


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url


PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


def ways_forward(dataset: str, local_copy: str, url_keys: Sequence[str], extra: Sequence[str] = ()) -> str:
    """What a user can do when a dataset's host cannot be reached: the lines the errors end with."""
    keys = " and ".join(f"acquire.{dataset}.{k}" for k in url_keys)
    set_here = sorted({n.upper() for n in os.environ if n.upper() in PROXY_VARIABLES and os.environ[n]})
    lines = [
        f"use a copy you already have: acquire.{dataset}.source: local and acquire.{dataset}.local_root: {local_copy}",
        *extra,
        *([f"use a mirror you can reach: set {keys}"] if keys else []),
        "try the pipeline without the real data: `make demo` (synthetic data, nothing downloaded)",
        "behind a proxy: set HTTPS_PROXY and HTTP_PROXY (http://[user:password@]proxy:port; NO_PROXY lists "
        f"hosts reached directly); set here: {', '.join(set_here) or 'none'}",
    ]
    return "Ways forward:\n" + "\n".join(f"  - {line}" for line in lines)


def raise_stopped(breaker: CircuitBreaker, failures: dict[RemoteFile, Exception], left: list[RemoteFile],
                  verified: int, failed_list: Path, what: str, preflight: bool, advice: str) -> None:
    error = breaker.error
    assert error is not None
    with atomic_path(failed_list) as tmp:
        tmp.write_text("".join(
            f"{f.url}\t{failures[f] if f in failures else 'not downloaded: stopped by the network error above'}\n"
            for f in sorted(left, key=lambda f: f.url)))
    if preflight:
        head = (f"{what}: cannot download from {error.host}; stopped at the first file, as retrying will not help.\n"
                f"Cause: {error.explain()}.")
    else:
        head = (f"{what}: stopped: {breaker.streak_files} files in a row failed with the same error, so the "
                f"others would too.\nCause: {error.explain()}.")
    raise SourceUnreachableError(
        f"{head}\n{advice + chr(10) if advice else ''}"
        f"{verified} files verified so far are kept; the {len(left)} files left are listed in {failed_list}. "
        "A re-run resumes from there: fix the cause, then run the same command."
    )


def raise_failures(failures: dict[RemoteFile, str], total: int, failed_list: Path, what: str, advice: str = "") -> None:
    with atomic_path(failed_list) as tmp:
        tmp.write_text("".join(f"{f.url}\t{reason}\n"
                               for f, reason in sorted(failures.items(), key=lambda x: x[0].url)))
    shown = "\n".join(f"  {f.url}: {reason}" for f, reason in list(failures.items())[:10])
    more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
    hint = ""
    if any("HTTP 404" in r or "HTTP 403" in r for r in failures.values()):
        hint = " HTTP 404/403: the server does not have these files; check the base URL parameter."
    raise DataError(
        f"{what}: {len(failures)} of {total} files failed to download:\n{shown}{more}\n"
        f"The full list is in {failed_list}.{hint} Files already verified are kept and partial files resume: "
        "fix the cause and re-run the same command." + (f"\n{advice}" if advice else "")
    )
