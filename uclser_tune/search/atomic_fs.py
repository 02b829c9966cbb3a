"""A local filesystem for Ray's storage whose every written file appears whole or not at all.

Ray's driver writes its experiment snapshot (``experiment_state-*.json``, ``searcher-state-*.pkl``,
``tuner.pkl``) and the trials' ``result.json`` in a staging dir and copies them into the experiment dir
with ``pyarrow.fs.copy_files``, which writes in place; and it rewrites the staging files in place while
the previous copy may still be reading them, so even a whole copy can be empty or cut short. A driver
killed then leaves an unreadable snapshot, and in the driver's first session there is no older one to
fall back on, so the search could not be resumed (``state.prepare_resume``).

Given to Ray as ``storage_filesystem``, this handler writes each file to a hidden temporary name next to
it and renames it on close, so a kill leaves the previous complete version; and a file whose name
matches one of ``checks`` replaces the previous version only if it loads, so a copy of a half-rewritten
staging file is dropped. Everything else is the plain ``pyarrow.fs.LocalFileSystem``.

No fsync: the rename protects against a killed process, which is what resume is for; a power cut
on the node holding the experiment dir is not covered.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow
import pyarrow.fs as pafs

log = logging.getLogger(__name__)
Checks = Mapping[str, Callable[[bytes], Any]]  # file-name glob -> a loader that raises on a bad file
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # what _RenameOnClose writes before its rename


class _RenameOnClose:
    """A binary file written under a temporary name and moved onto ``path`` by ``close`` if ``check``
    (when given) loads it; otherwise the temporary file is dropped and ``path`` keeps what it had."""

    def __init__(self, path: str, check: Callable[[bytes], Any] | None) -> None:
        self.path, self.check = path, check
        target = Path(path)
        self.tmp = str(target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"))
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed (and renamed) by close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, data: Any) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def tell(self) -> int:
        return self._file.tell()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        if self.check is not None:
            try:
                self.check(Path(self.tmp).read_bytes())
            except Exception as err:  # noqa: BLE001 - any failure to load means a half-written source
                os.unlink(self.tmp)
                log.debug("kept the previous %s: the new copy does not load (%s)", self.path, err)
                return
        os.replace(self.tmp, self.path)


class AtomicLocalHandler(pafs.FileSystemHandler):
    """``LocalFileSystem`` with atomic ``open_output_stream`` (see the module docstring)."""

    def __init__(self, checks: Checks | None = None) -> None:
        self._fs = pafs.LocalFileSystem()
        self.checks = dict(checks or {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler) and other.checks == self.checks

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(tuple(self.checks))

    def __reduce__(self):  # shipped to Ray's trial workers inside the storage context
        return AtomicLocalHandler, (self.checks,)

    def _check_for(self, path: str) -> Callable[[bytes], Any] | None:
        name = Path(path).name
        return next((load for pattern, load in self.checks.items() if fnmatch.fnmatchcase(name, pattern)), None)

    def get_type_name(self) -> str:
        return "uclser-atomic-local"

    def normalize_path(self, path: str) -> str:
        return self._fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self._fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the root directory")

    def delete_file(self, path: str) -> None:
        self._fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._fs.open_input_stream(src) as source, self.open_output_stream(dest, None) as sink:
            while chunk := source.read(1 << 24):
                sink.write(chunk)

    def open_input_stream(self, path: str) -> pyarrow.NativeFile:
        return self._fs.open_input_stream(path)

    def open_input_file(self, path: str) -> pyarrow.NativeFile:
        return self._fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        return pyarrow.PythonFile(_RenameOnClose(path, self._check_for(path)), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        return self._fs.open_append_stream(path)


def remove_temporaries(root: Path) -> int:
    """Delete the temporaries that writes cut off by a kill left below ``root``; return how many."""
    leftovers = [p for p in root.rglob(".*.tmp") if TEMPORARY.match(p.name) and p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def atomic_local_fs(checks: Checks | None = None) -> pafs.PyFileSystem:
    """The filesystem to pass to Ray as ``storage_filesystem`` for a local (or mounted) storage path."""
    return pafs.PyFileSystem(AtomicLocalHandler(checks))
