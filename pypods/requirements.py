"""Reading requirements files for the little PyPods itself needs to know.

pip (or uv) does the real parsing, with every option pip allows in a requirements
file. PyPods only needs two things from them: which files a requirements file
includes (``-r``/``-c``), to fingerprint them all, and the requirement lines
themselves, for progress messages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S+)")


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


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of ``path`` itself (not options, not included files)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.strip() for line in logical_lines(text)]
    return [line for line in lines if line and not line.startswith("-")]
