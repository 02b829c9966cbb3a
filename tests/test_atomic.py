"""uclser_tune.atomic: the target holds the old content or the new one, never a part, and no temporary
file is left behind."""

import os

import pytest

from uclser_tune import atomic


def test_a_write_replaces_the_target_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "search.json"
    target.write_text("old")
    atomic.write_text(target, "new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["search.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path):
    target = tmp_path / "record.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.replacing(target) as tmp:
        tmp.write_text("half of the new")
        assert target.read_text() == "old"  # nothing reaches the target before the end
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["record.csv"]


def test_a_new_file_appears_only_whole(tmp_path):
    target = tmp_path / "checkpoint.pt"
    with atomic.replacing(target) as tmp:
        tmp.write_bytes(b"\0" * 10)
        assert not target.exists()
    assert target.read_bytes() == b"\0" * 10
