"""ExperimentLock.discard() on NFS (EFS): the experiment dir a refused driver created goes again, and a
failure to remove it never hides the refusal.

An NFS client cannot delete a file that a process on it still holds open: it renames it to
``.nfsXXXX`` instead (the "silly rename") and deletes it on the last close. ``nfs_unlink`` does the
same to every unlink of this process, so a dir removed while its lock file is open keeps a
``.nfsXXXX`` file and its removal fails, as it does on EFS."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from uclser_tune.search.lock import LOCK_FILE, ExperimentLock, LockError


def _open_by_this_process(path: str) -> bool:
    target = os.path.realpath(path)
    fds = Path("/proc/self/fd")
    return any(os.path.realpath(fd) == target for fd in fds.iterdir() if fd.is_symlink())


@pytest.fixture
def nfs_unlink(monkeypatch):
    """Unlinking a file this process holds open renames it to ``.nfs<n>`` in the same dir."""
    real_unlink = os.unlink
    renamed: list[Path] = []

    def unlink(path, *, dir_fd=None):
        full = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path) if dir_fd is not None else os.fspath(path)
        if _open_by_this_process(full):
            silly = Path(full).with_name(f".nfs{len(renamed):020x}")
            os.rename(full, silly)
            renamed.append(silly)
        else:
            real_unlink(full)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "remove", unlink)
    return renamed


def test_nfs_unlink_renames_an_open_file(tmp_path, nfs_unlink):
    """The stand-in itself: an open file is renamed, a closed one deleted."""
    held, free = tmp_path / "held", tmp_path / "free"
    held.write_text("x")
    free.write_text("x")
    with held.open():
        held.unlink()
    free.unlink()
    assert [p.name for p in tmp_path.iterdir()] == [nfs_unlink[0].name]


def test_discard_leaves_nothing_on_nfs(tmp_path, nfs_unlink):
    """The lock file is closed before it is unlinked, so no .nfs file keeps the dir from going."""
    exp = tmp_path / "runs" / "exp"
    with ExperimentLock(exp) as lock:
        lock.discard()
        assert not exp.exists() and not nfs_unlink
    assert list((tmp_path / "runs").iterdir()) == []


def test_discard_releases_the_lock(tmp_path):
    """After discard the experiment is free again: the next driver takes it (and creates it anew)."""
    exp = tmp_path / "exp"
    with ExperimentLock(exp) as lock:
        lock.discard()
        with ExperimentLock(exp) as second:
            assert second.created and (exp / LOCK_FILE).exists()


def test_a_dir_that_cannot_go_never_hides_the_refusal(tmp_path, monkeypatch, capsys):
    """As in the search's main: the driver refuses (an error in flight), discard runs in `finally` and
    the dir cannot be removed. The refusal reaches the caller; the dir stays, with a warning."""
    exp = tmp_path / "exp"

    def busy(path, *args, **kwargs):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))

    monkeypatch.setattr(os, "rmdir", busy)
    with pytest.raises(LockError, match="the refusal"), ExperimentLock(exp) as lock:
        try:
            raise LockError("the refusal")
        finally:
            lock.discard()
    assert exp.is_dir()
    assert f"warning: could not remove {exp}" in capsys.readouterr().err


def test_discard_keeps_a_dir_it_did_not_create_or_that_holds_more(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    with ExperimentLock(existing) as lock:
        lock.discard()
    assert (existing / LOCK_FILE).exists()
    fuller = tmp_path / "fuller"
    with ExperimentLock(fuller) as lock:
        (fuller / "search.json").write_text("{}")
        lock.discard()
    assert {p.name for p in fuller.iterdir()} == {LOCK_FILE, "search.json"}
