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

Cheap on repeats: every snapshot copies the driver's whole staging folder again (Ray's per-trial logger
files included), most of it unchanged since the last copy. A file of at most ``MEMORY_BYTES`` that this
handler has already written over an older version is collected in memory, and left alone when its bytes
(a BLAKE2 digest) and the size and mtime on disk are what this handler last wrote there: no temporary,
no check, no rename. A changed file costs a write; a finished trial's files cost a digest each.
``after`` hooks (file-name glob -> ``hook(path, loaded)``) run once a checked file has replaced the
previous version, with what its check loaded: ``state.storage_fs`` prunes trial checkpoints there.

No fsync: the rename protects against a killed process, which is what resume is for; a power cut
on the node holding the experiment dir is not covered.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
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
Hooks = Mapping[str, Callable[[str, Any], None]]  # file-name glob -> called with (path, what its check loaded)
MEMORY_BYTES = 1 << 20  # files up to this size are compared with the last version before anything is written
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # what _RenameOnClose writes before its rename


class _RenameOnClose:
    """A binary file written under a temporary name and moved onto ``path`` by ``close`` if ``check``
    (when given) loads it; otherwise the temporary file is dropped and ``path`` keeps what it had.

    A file that this handler has rewritten before (``written`` holds its digest, size and mtime) is
    collected in memory up to ``MEMORY_BYTES`` and left alone by ``close`` when nothing changed; any
    other file goes to its temporary name as it is written."""

    def __init__(self, path: str, check: Callable[[bytes], Any] | None, after: Callable[[str, Any], None] | None,
                 written: dict[str, tuple[bytes, int, int]]) -> None:
        self.path, self.check, self.after, self.written = path, check, after, written
        target = Path(path)
        self.tmp = str(target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"))
        self._memory: io.BytesIO | None = None
        self._file = None
        if path in written:
            self._memory = io.BytesIO()
        else:
            self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed (and renamed) by close()
        self._closed = False
        self._size = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self._size += n
        if self._memory is None:
            return self._file.write(data)
        self._memory.write(data)
        if self._size > MEMORY_BYTES:  # too big to compare: written out as any other file
            self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed (and renamed) by close()
            self._file.write(self._memory.getbuffer())
            self._memory = None
        return n

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def tell(self) -> int:
        return self._size

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def _unchanged(self, digest: bytes) -> bool:
        known = self.written.get(self.path)
        if known is None or known[0] != digest:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_size, st.st_mtime_ns) == known[1:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        data = None
        if self._memory is not None:
            data = self._memory.getvalue()
            self._memory = None
            if self._unchanged(hashlib.blake2b(data, digest_size=16).digest()):
                return
        else:
            self._file.close()
        loaded = None
        if self.check is not None:
            try:
                loaded = self.check(data if data is not None else Path(self.tmp).read_bytes())
            except Exception as err:  # noqa: BLE001 - any failure to load means a half-written source
                if data is None:
                    os.unlink(self.tmp)
                log.debug("kept the previous %s: the new copy does not load (%s)", self.path, err)
                return
        if data is not None:
            with open(self.tmp, "wb") as f:
                f.write(data)
        rewritten = os.path.exists(self.path)
        os.replace(self.tmp, self.path)
        self._remember(data, rewritten)
        if self.after is not None:
            try:
                self.after(self.path, loaded)
            except Exception:  # a hook must not fail the copy that already landed
                log.warning("after writing %s: %s failed", self.path, self.after, exc_info=True)

    def _remember(self, data: bytes | None, rewritten: bool) -> None:
        """Record a small file that was written over an older version (a logger file that every snapshot
        copies again); a file written once (a checkpoint's) is not remembered: it never comes again."""
        if not rewritten or self._size > MEMORY_BYTES:
            self.written.pop(self.path, None)
            return
        if data is None:
            data = Path(self.path).read_bytes()
        st = os.stat(self.path)
        self.written[self.path] = (hashlib.blake2b(data, digest_size=16).digest(), st.st_size, st.st_mtime_ns)


class AtomicLocalHandler(pafs.FileSystemHandler):
    """``LocalFileSystem`` with atomic ``open_output_stream`` (see the module docstring)."""

    def __init__(self, checks: Checks | None = None, after: Hooks | None = None) -> None:
        self._fs = pafs.LocalFileSystem()
        self.checks = dict(checks or {})
        self.after = dict(after or {})
        self._written: dict[str, tuple[bytes, int, int]] = {}  # path -> (digest, size, mtime_ns) last written

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler) and (other.checks, other.after) == (self.checks, self.after)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((tuple(self.checks), tuple(self.after)))

    def __reduce__(self):  # shipped to Ray's trial workers inside the storage context
        return AtomicLocalHandler, (self.checks, self.after)

    @staticmethod
    def _match(table: Mapping[str, Any], path: str) -> Any:
        name = Path(path).name
        return next((value for pattern, value in table.items() if fnmatch.fnmatchcase(name, pattern)), None)

    def _check_for(self, path: str) -> Callable[[bytes], Any] | None:
        return self._match(self.checks, path)

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
        return pyarrow.PythonFile(_RenameOnClose(path, self._check_for(path), self._match(self.after, path),
                                                 self._written), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        return self._fs.open_append_stream(path)


def remove_temporaries(root: Path) -> int:
    """Delete the temporaries that writes cut off by a kill left below ``root``; return how many."""
    leftovers = [p for p in root.rglob(".*.tmp") if TEMPORARY.match(p.name) and p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def atomic_local_fs(checks: Checks | None = None, after: Hooks | None = None) -> pafs.PyFileSystem:
    """The filesystem to pass to Ray as ``storage_filesystem`` for a local (or mounted) storage path."""
    return pafs.PyFileSystem(AtomicLocalHandler(checks, after))
