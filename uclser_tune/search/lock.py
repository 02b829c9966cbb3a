"""One search driver per experiment dir.

Two drivers on one experiment corrupt it: the second one's restore closes the first one's live study
trials as FAIL, both write the same ``trial_<id>/`` checkpoints, and ``prepare_resume`` may move the
live driver's half-written snapshot away. So the driver holds an exclusive lock on
``<experiment>/driver.lock`` for as long as it runs; a second driver is refused at once, naming the
holder.

POSIX record locks (``fcntl.lockf``) rather than ``flock``: they work on NFSv4 (EFS) through the
NFS lock manager, and they are never inherited by child processes, so the lock dies with the driver
process itself (a SIGKILL included) even while Ray workers it started live on. Caveat of POSIX
locks: closing *any* descriptor of the file in the holding process drops the lock, so the holder
never opens the file a second time (``holder`` is for the processes that were refused).
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import sys
from pathlib import Path

LOCK_FILE = "driver.lock"


class LockError(RuntimeError):
    """Another driver holds the experiment; the message names its host and pid."""


class ExperimentLock:
    """``with ExperimentLock(exp_dir) as lock:`` creates the dir if needed and holds the lock inside it.

    ``lock.created`` says whether this driver created the dir; ``discard()`` removes such a dir again
    when the driver refuses to run (a user-input error must leave nothing behind)."""

    def __init__(self, exp_dir: Path):
        self.exp_dir = exp_dir
        self.path = exp_dir / LOCK_FILE
        self.created = False
        self._fd: int | None = None

    def __enter__(self) -> ExperimentLock:  # noqa: PYI034 - Self needs Python 3.11
        self.created = not self.exp_dir.exists()
        try:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise LockError(f"{self.exp_dir}: cannot create the experiment dir or its lock file ({err.strerror}); "
                            f"check --storage-path") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise LockError(f"{self.exp_dir} is in use by another search driver ({holder(self.path)}); wait for "
                            f"it to end (or stop it) and run the same command again to resume") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"host {platform.node()} pid {os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def discard(self) -> None:
        """Remove the experiment dir this driver created, if nothing but the lock file is in it.

        It runs while a refusal is on its way to the user, so it never raises: a dir it cannot remove
        stays, with a warning, and the refusal is what the user sees. The lock file is closed before it
        is unlinked (on NFS, unlinking a file the process holds open renames it to ``.nfsXXXX`` instead,
        and the dir is then not empty), and the dir goes with ``rmdir``, which removes nothing that
        another process may have put there in the meantime."""
        if not self.created:
            return
        try:
            if [p.name for p in self.exp_dir.iterdir()] != [LOCK_FILE]:
                return
            self.__exit__()  # closes the lock file, releasing the lock
            self.path.unlink()
            self.exp_dir.rmdir()
        except OSError as err:
            print(f"warning: could not remove {self.exp_dir} ({err.strerror or err})", file=sys.stderr)


def holder(path: Path) -> str:
    """``host H pid P`` of the driver holding the lock (read by a refused process only)."""
    try:
        return path.read_text().strip() or "host and pid not yet written"
    except OSError:
        return "holder unknown"
