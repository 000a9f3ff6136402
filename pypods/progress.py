"""Telling the user what a venv build is doing, on stderr, and through logging.

Builds can take minutes (a PyTorch wheel); a silent pause would look like a hang. So
while a pod's venv is built, short lines go to ``sys.stderr``: which pod, what is being
installed, how long it has taken. Nothing is printed when no build is needed.

Every line also goes to the ``pypods`` logger (at INFO; the installer's full output at
DEBUG). A program that has routed that logger somewhere (it has handlers and INFO is
enabled) gets the lines there only, not twice.
"""

from __future__ import annotations

import logging
import re
import sys
import time

logger = logging.getLogger("pypods")

#: Installer output lines worth showing the user (the rest goes to the debug log).
_INTERESTING = re.compile(
    r"^(?:Collecting \S+|Downloading \S+|Building wheel for \S+|Installing collected packages"
    r"|Successfully installed|Resolved \d+ package|Prepared \d+ package|Installed \d+ package"
    r"|Using (?:CPython|Python) |Creating virtual environment| \+ \S+|ERROR|error)"
)


class BuildProgress:
    """Progress of one pod's venv build."""

    def __init__(self, pod: str) -> None:
        self.pod = pod
        self._started = time.monotonic()

    def notice(self, text: str) -> None:
        """Say something the user should see, with the elapsed time."""
        self._write(f"pypods: pod {self.pod!r}: {text} [{self.elapsed():.1f}s]")

    def installer_line(self, line: str) -> None:
        """Feed one line of installer output; the interesting ones are shown."""
        logger.debug("pod %r installer: %s", self.pod, line)
        stripped = line.strip()
        if stripped and _INTERESTING.match(line if line.startswith(" +") else stripped):
            self._write(f"pypods: pod {self.pod!r}:   {stripped} [{self.elapsed():.1f}s]")

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _write(self, text: str) -> None:
        logger.info("%s", text)
        if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
            return
        stream = sys.stderr
        if stream is None:
            return
        try:
            stream.write(text + "\n")
            stream.flush()
        except Exception:  # a closed stderr must not fail the build
            pass
