"""The storage filesystem the search gives Ray: whole files only, and snapshot files only if they load."""

import json
import pickle

import pyarrow.fs as pafs

from uclser_tune.search.atomic_fs import atomic_local_fs
from uclser_tune.search.state import storage_fs


def test_copy_files_lands_whole_files_and_leaves_no_temporaries(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "trial_a").mkdir(parents=True)
    payload = bytes(range(256)) * 20_000  # 5 MB: several chunks
    (src / "trial_a" / "checkpoint.pt").write_bytes(payload)
    (src / "result.json").write_text('{"epoch": 1}\n')
    pafs.copy_files(str(src), str(dst), destination_filesystem=atomic_local_fs(), chunk_size=1 << 20)
    assert (dst / "trial_a" / "checkpoint.pt").read_bytes() == payload
    assert (dst / "result.json").read_text() == '{"epoch": 1}\n'
    assert sorted(p.name for p in dst.rglob("*")) == ["checkpoint.pt", "result.json", "trial_a"]


def test_an_unclosed_write_leaves_the_previous_version(tmp_path):
    """What a kill during the copy leaves: the old file, untouched (an in-place write would truncate it)."""
    fs, target = atomic_local_fs(), tmp_path / "experiment_state-s.json"
    target.write_text('{"old": 1}')
    stream = fs.open_output_stream(str(target))
    stream.write(b'{"new": ')
    stream.flush()
    assert target.read_text() == '{"old": 1}'
    stream.write(b"2}")
    stream.close()
    assert target.read_text() == '{"new": 2}'


def test_a_snapshot_file_that_does_not_load_never_replaces_a_good_one(tmp_path):
    fs = storage_fs()
    state, searcher = tmp_path / "experiment_state-s.json", tmp_path / "searcher-state-s.pkl"
    for path, good in ((state, json.dumps({"trial_data": [1]}).encode()), (searcher, pickle.dumps({"a": 1}))):
        for data in (good, b"", good[: len(good) // 2]):  # whole, then empty and cut short (half-rewritten staging)
            with fs.open_output_stream(str(path)) as f:
                f.write(data)
        assert path.read_bytes() == good
    # the first copy of a snapshot file cut short: nothing appears rather than a file Ray cannot load
    with fs.open_output_stream(str(tmp_path / "tuner.pkl")) as f:
        f.write(pickle.dumps(list(range(100)))[:20])
    assert not (tmp_path / "tuner.pkl").exists()
    # other files are not checked: an empty result.json is a legitimate file
    with fs.open_output_stream(str(tmp_path / "result.json")) as f:
        f.write(b"")
    assert (tmp_path / "result.json").read_bytes() == b""
    assert not list(tmp_path.glob(".*"))  # dropped copies leave no temporaries


def test_the_filesystem_pickles_with_its_checks():
    """Ray ships the storage context, filesystem included, to every trial worker."""
    fs = storage_fs()
    again = pickle.loads(pickle.dumps(fs))
    assert again == fs and again != atomic_local_fs()


def test_resume_removes_what_a_killed_copy_left_and_nothing_else(tmp_path):
    from tests.test_spaces import fake_experiment
    from uclser_tune.search.state import prepare_resume

    exp = tmp_path / "exp"
    fake_experiment(exp, {"a": "{}"})
    (exp / "trial_x" / "checkpoint_000001").mkdir(parents=True)
    fs, cut_off = atomic_local_fs(), []
    for path in (exp / "experiment_state-a.json", exp / "trial_x" / "checkpoint_000001" / "model.pt"):
        cut_off.append(fs.open_output_stream(str(path)))  # written and never closed: as a kill leaves it
        cut_off[-1].write(b"cut off")
        cut_off[-1].flush()
    keep = [exp / ".validate_storage_marker", exp / "trial_x" / ".hidden.tmp"]
    for path in keep:
        path.write_text("")
    notes = prepare_resume(exp)
    assert notes == [f"removed 2 partial file(s) that a killed copy into {exp} left"]
    assert not [p for p in exp.rglob(".*") if p not in keep] and all(p.exists() for p in keep)
    assert (exp / "experiment_state-a.json").read_text() == "{}"


def test_a_copy_identical_to_the_last_one_leaves_the_file_alone_and_a_changed_one_lands(tmp_path):
    """Every snapshot copies every logger file again: an unchanged one costs no write (same inode, same
    mtime); a changed one, or one changed on disk behind the handler's back, is written whole."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "trial_a").mkdir(parents=True)
    dst.mkdir()
    fs = atomic_local_fs()

    def copy():
        pafs.copy_files(str(src), str(dst), destination_filesystem=fs)
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_text()) for p in dst.rglob("*.json")}

    (src / "trial_a" / "result.json").write_text('{"epoch": 1}\n')
    (src / "params.json").write_text("{}")
    copy()
    second = copy()  # written over the first: from now on compared
    assert copy() == second
    (src / "trial_a" / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    third = copy()
    assert third["result.json"][2] == '{"epoch": 1}\n{"epoch": 2}\n' and third["params.json"] == second["params.json"]
    (dst / "params.json").write_text("{}  ")  # someone else wrote it: the copy puts the source back
    assert copy()["params.json"][2] == "{}"
    (dst / "params.json").unlink()
    assert copy()["params.json"][2] == "{}"
    assert not list(dst.rglob(".*"))
