"""Trial checkpoints deleted by the driver (state.CheckpointPruner), never by Ray: only once an
experiment state naming a newer one is on disk whole, and never the one it names, the one before it,
or any newer one. The trial entries are written by Ray's own run metadata and checkpoint manager, as
Ray's experiment state holds them."""

import json

from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult
from ray.tune import Checkpoint, CheckpointConfig
from ray.tune.trainable.metadata import _TrainingRunMetadata

from uclser_tune.search.state import CheckpointPruner, named_checkpoint, stale_checkpoints, storage_fs


def runtime_json(trial_dir, indices):
    """A trial's run metadata as Ray snapshots it, having registered checkpoints ``indices`` in order."""
    metadata = _TrainingRunMetadata()
    metadata.checkpoint_manager = _CheckpointManager(CheckpointConfig(num_to_keep=None))
    for i in indices:
        path = trial_dir / f"checkpoint_{i:06d}"
        metadata.checkpoint_manager.register_checkpoint(_TrainingResult(Checkpoint(str(path)), {"epoch": i + 1}))
    return metadata.get_json_state()


def trial(exp, name, indices):
    (exp / name).mkdir(parents=True, exist_ok=True)
    for i in indices:
        (exp / name / f"checkpoint_{i:06d}").mkdir()
        (exp / name / f"checkpoint_{i:06d}" / "surrogate.json").write_text(json.dumps({"epoch": i + 1}))


def kept(exp, name):
    return sorted(p.name for p in (exp / name).glob("checkpoint_*"))


def write_state(exp, trials, data=None):
    """An experiment state written through the search's storage filesystem, as Ray's snapshot copy does."""
    data = data if data is not None else json.dumps({"trial_data": [["{}", t] for t in trials]}).encode()
    with storage_fs().open_output_stream(str(exp / "experiment_state-s.json")) as f:
        f.write(data)


def test_the_named_checkpoint_is_the_latest_registered(tmp_path):
    assert named_checkpoint(runtime_json(tmp_path / "trial_a", [0, 1, 2])) == str(
        tmp_path / "trial_a" / "checkpoint_000002")
    assert named_checkpoint(runtime_json(tmp_path / "trial_a", [])) is None


def test_stale_are_older_than_the_one_before_the_named(tmp_path):
    trial(tmp_path, "trial_a", [0, 1, 2, 3, 5, 6])
    assert [p.name for p in stale_checkpoints(tmp_path / "trial_a", "checkpoint_000005")] == [
        "checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]  # 3 is the newest before 5; 6 is newer
    assert stale_checkpoints(tmp_path / "trial_a", "checkpoint_000001") == []
    assert stale_checkpoints(tmp_path / "trial_a", "checkpoint_000000") == []


def test_a_whole_state_on_disk_prunes_what_it_no_longer_needs(tmp_path):
    exp = tmp_path / "exp"
    trial(exp, "trial_a", range(6))  # the state names 3; 4 and 5 were written after it
    trial(exp, "trial_b", range(3))  # started after the state: no snapshot knows it
    trial(exp, "trial_c", range(2))  # in the state without a checkpoint yet
    state = [runtime_json(exp / "trial_a", range(4)), runtime_json(exp / "trial_c", [])]
    write_state(exp, state[:1], data=json.dumps({"trial_data": [["{}", s] for s in state]}).encode()[:-10])
    assert kept(exp, "trial_a") == [f"checkpoint_{i:06d}" for i in range(6)]  # a state cut short prunes nothing
    write_state(exp, state)
    assert kept(exp, "trial_a") == ["checkpoint_000002", "checkpoint_000003", "checkpoint_000004",
                                    "checkpoint_000005"]
    assert kept(exp, "trial_b") == [f"checkpoint_{i:06d}" for i in range(3)]
    assert kept(exp, "trial_c") == [f"checkpoint_{i:06d}" for i in range(2)]
    # the trial went on: a later state names 5, the last two stay
    write_state(exp, [runtime_json(exp / "trial_a", range(6)), runtime_json(exp / "trial_b", range(3))])
    assert kept(exp, "trial_a") == ["checkpoint_000004", "checkpoint_000005"]
    assert kept(exp, "trial_b") == ["checkpoint_000001", "checkpoint_000002"]


def test_the_pruner_follows_a_moved_experiment_and_skips_unchanged_entries(tmp_path):
    old, exp = tmp_path / "old", tmp_path / "moved"
    trial(exp, "trial_a", range(4))
    entry = runtime_json(old / "trial_a", range(4))  # the state names the checkpoints where they were written
    prune = CheckpointPruner()
    prune(str(exp / "experiment_state-s.json"), {"trial_data": [["{}", entry]]})
    assert kept(exp, "trial_a") == ["checkpoint_000002", "checkpoint_000003"]
    trial(exp, "trial_a", [0])  # not the pruner's doing: an unchanged entry is not looked at again
    prune(str(exp / "experiment_state-s.json"), {"trial_data": [["{}", entry]]})
    assert kept(exp, "trial_a") == ["checkpoint_000000", "checkpoint_000002", "checkpoint_000003"]
    assert CheckpointPruner() == prune  # the storage filesystem compares (and pickles) equal with it


def test_a_trial_with_only_checkpoints_unknown_to_the_snapshot_is_not_lost_silently(tmp_path):
    """With snapshots seconds apart, a trial can start, checkpoint (its worker writes into the experiment
    dir) and be killed before any snapshot copied its params.json: it has no table row, so the resume
    says so and leaves error.txt in its dir."""
    from uclser_tune.search.state import LOST_NOTE, RestoredTrial, mark_lost_trials

    trial(tmp_path, "trial_known", [0, 1])
    trial(tmp_path, "trial_late", [0, 1])
    restored = {"known": RestoredTrial(0, "RUNNING", "trial_known")}
    notes = mark_lost_trials(tmp_path, restored)
    assert len(notes) == 1 and notes[0].startswith("trial_late ") and "cannot be resumed" not in notes[0]
    assert (tmp_path / "trial_late" / "error.txt").read_text().startswith(LOST_NOTE)
    assert not (tmp_path / "trial_known" / "error.txt").exists()
    assert mark_lost_trials(tmp_path, restored) == []  # a second resume says it once


def test_a_retried_trial_finds_its_logger_files_current_in_the_experiment_dir(tmp_path):
    """Ray restarts a retried trial's result.json from the experiment dir's copy, which the periodic
    snapshot may have left behind: LogsBeforeRetry brings the driver's copy there first."""
    from types import SimpleNamespace

    from uclser_tune.search.state import LogsBeforeRetry

    staging, exp = tmp_path / "staging" / "trial_a", tmp_path / "exp"
    staging.mkdir(parents=True)
    trial(exp, "trial_a", [0, 1])
    (exp / "trial_a" / "result.json").write_text('{"epoch": 1}\n')  # the last snapshot's copy
    lines = "".join(f'{{"epoch": {e}}}\n' for e in (1, 2, 3))
    (staging / "result.json").write_text(lines)
    (staging / "params.json").write_text("{}")
    ray_trial = SimpleNamespace(local_path=str(staging), storage=SimpleNamespace(
        trial_fs_path=str(exp / "trial_a"), storage_filesystem=storage_fs()))
    LogsBeforeRetry().on_trial_recover(iteration=7, trials=[ray_trial], trial=ray_trial)
    assert (exp / "trial_a" / "result.json").read_text() == lines
    assert (exp / "trial_a" / "params.json").read_text() == "{}"
    assert kept(exp, "trial_a") == ["checkpoint_000000", "checkpoint_000001"]
