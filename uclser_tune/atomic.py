"""Writes that a kill never leaves half done.

The new content goes to a temporary file beside the target (the same file system), which then replaces
the target with ``os.replace``, atomic on POSIX: a reader, or a run resumed after a crash, sees the old
file or the new one, never a truncated one. Checkpoints, search.json and the experiments' per-run
records are written this way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to. On a clean exit it replaces ``path``; on an
    error it is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """``path.write_text(text)``, atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)
