"""Reading requirements files for the little PyPods itself needs to know.

pip (or uv) does the real parsing, with every option pip allows in a requirements
file. PyPods only needs three things from them: which files a requirements file
includes (``-r``/``-c``), to fingerprint them all; which options the files set
(``--index-url``, ``--pre``...), so that uv is told what pip would do; and the
requirement lines themselves, for progress messages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S+)")
_OPTION = re.compile(r"^\s*(--?[A-Za-z][\w-]*)")
#: pip's short spellings of the options that matter here.
_LONG_NAMES = {"-i": "--index-url", "-f": "--find-links", "-e": "--editable"}


def logical_lines(text: str) -> list[str]:
    """Lines as pip reads them: continuations joined, comments removed."""
    joined = re.sub(r"\\\r?\n", "", text)
    return [re.sub(r"(^|\s)#.*$", "", line) for line in joined.splitlines()]


def walk(path: Path) -> Iterator[tuple[Path, bytes | None]]:
    """``path`` and every file it includes, recursively, each once, with its content.

    The content is None when a file cannot be read (pip will say why). Included
    paths are relative to the including file, as in pip; URLs are not followed.
    """
    seen: set[Path] = set()

    def visit(file: Path) -> Iterator[tuple[Path, bytes | None]]:
        resolved = file.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        try:
            content: bytes | None = file.read_bytes()
        except OSError:
            content = None
        yield file, content
        for line in logical_lines((content or b"").decode("utf-8", "replace")):
            match = _INCLUDE.match(line)
            if match and "://" not in match.group(1):
                yield from visit(file.parent / match.group(1))

    yield from visit(path)


def options_used(path: Path) -> set[str]:
    """The long names of the options set in ``path`` and the files it includes."""
    used = set()
    for _, content in walk(path):
        for line in logical_lines((content or b"").decode("utf-8", "replace")):
            match = _OPTION.match(line)
            if match:
                used.add(_LONG_NAMES.get(match.group(1), match.group(1)))
    return used


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of ``path`` itself (not options, not included files)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.strip() for line in logical_lines(text)]
    return [line for line in lines if line and not line.startswith("-")]
