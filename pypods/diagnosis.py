"""Why an installer failed, in words the user can act on.

An installer's real reason is often far from its last lines: "No space left on
device" deep in a traceback, a refused connection hidden among retries before pip's
misleading "No matching distribution found". So every line of output is fed to a
``Diagnosis`` as it streams, and the cause it recognises (if any) leads the error
message, with what to do about it. Causes outside the pod's own files (a full disk,
a file size limit, an unreachable index, a killed installer) say so, since fixing
requirements.txt would not help.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    """A recognised reason for a failed install."""

    #: What happened, e.g. "the disk is full (No space left on device)".
    what: str
    #: What to do before calling load_pod() again.
    advice: str
    #: True when the package index could not be reached: a requirement the installer
    #: says it "could not find" may well exist.
    network: bool = False


_DISK_FULL = re.compile(r"No space left on device|\[Errno 28\]|os error 28")
_QUOTA = re.compile(r"Disk quota exceeded|\[Errno 122\]|os error 122")
_TOO_LARGE = re.compile(r"File too large|\[Errno 27\]|os error 27")
_UNREACHABLE = re.compile(
    r"Connection refused|Name or service not known|Temporary failure in name resolution"
    r"|Network is unreachable|No route to host|Connection timed out|ConnectTimeoutError"
    r"|ReadTimeoutError|operation timed out"
)
#: uv's outer words for the same: used when no line says more.
_UNREACHABLE_VAGUE = re.compile(r"dns error|tcp connect error|client error \(Connect\)")
#: Where the failed request went: uv names the URL; pip's urllib3 names host, port
#: and path; as a last resort, pip's only index.
_UV_URL = re.compile(r"Failed to fetch: `?(\S+?)`?$")
_PIP_URL = re.compile(r"(HTTPS?)Connection\(host='([^']+)', port=(\d+)\).*': (/\S*)")
_ONLY_INDEX = re.compile(r"^Looking in indexes: (\S+)$")

_SPACE_ADVICE = (
    "Free some space on the disk that holds the pod folder, the installer's cache or "
    "the temporary folder"
)
_DISK_FULL_CAUSE = Cause("the disk is full (No space left on device)", _SPACE_ADVICE)
_QUOTA_CAUSE = Cause("the disk quota is exceeded (Disk quota exceeded)", _SPACE_ADVICE)
_TOO_LARGE_CAUSE = Cause(
    "a file grew past the file size limit of this process (File too large: see `ulimit -f`)",
    "Raise the file size limit (`ulimit -f unlimited`) for the program that loads the pod",
)


class Diagnosis:
    """Watches an installer's output for a cause this module knows."""

    def __init__(self) -> None:
        self._storage: Cause | None = None
        self._unreachable: str | None = None
        self._specific = False
        self._url: str | None = None
        self._url_exact = False

    def feed(self, line: str) -> None:
        """Look at one line of output."""
        if self._storage is None:
            for pattern, cause in (
                (_DISK_FULL, _DISK_FULL_CAUSE),
                (_QUOTA, _QUOTA_CAUSE),
                (_TOO_LARGE, _TOO_LARGE_CAUSE),
            ):
                if pattern.search(line):
                    self._storage = cause
                    break
        match = _UNREACHABLE.search(line)
        if match and not self._specific:
            self._unreachable, self._specific = match.group(0), True
        match = _UNREACHABLE_VAGUE.search(line)
        if match and self._unreachable is None:
            self._unreachable = match.group(0)
        if not self._url_exact:
            url = _request_url(line)
            if url is not None:
                self._url, self._url_exact = url, True
            elif self._url is None:
                match = _ONLY_INDEX.search(line.strip())
                self._url = match.group(1) if match else None

    def cause(self, returncode: int) -> Cause | None:
        """The cause of a failure that ended with ``returncode``, if recognised."""
        if self._storage is not None:
            return self._storage
        if returncode == -signal.SIGXFSZ:
            return _TOO_LARGE_CAUSE
        if returncode < 0:
            return Cause(
                "the installer was stopped before it finished (by another process, or by "
                "the system when memory ran out)",
                "Find out what stopped it (the out-of-memory killer shows in `dmesg`)",
            )
        if self._unreachable is not None:
            where = f" at {self._url}" if self._url else ""
            return Cause(
                f"the package index could not be reached{where} ({self._unreachable})",
                "Check the network, and the index settings: index-url in requirements.txt "
                "or pod.toml, pip's configuration (PIP_INDEX_URL, pip.conf)",
                network=True,
            )
        return None


def _request_url(line: str) -> str | None:
    match = _UV_URL.search(line)
    if match:
        return match.group(1)
    match = _PIP_URL.search(line)
    if match:
        scheme, host, port, path = match.groups()
        return f"{scheme.lower()}://{host}:{port}{path}"
    return None


def exit_text(program: str, returncode: int) -> str:
    """``"uv exited with status 2"``, or ``"uv was killed by SIGKILL"``."""
    if returncode < 0:
        return f"{program} was killed by {_signal_name(-returncode)}"
    return f"{program} exited with status {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
