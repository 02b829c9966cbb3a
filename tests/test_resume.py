"""Resume after a kill when Ray's snapshot files are from different moments: the restored experiment
state decides which trials come back, and the study, the searcher's queue, the trial count and the
concurrency limit follow it (searcher.py, state.py)."""

import json

import optuna
import yaml
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

from uclser_tune.search.searcher import StudySearch, StudySearchGenerator, cells_to_rerun
from uclser_tune.search.spaces import load_space
from uclser_tune.search.state import LOST_NOTE, RestoredTrial, mark_lost_trials, restored_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)


def grid_searcher(tmp_path):
    StudySearch.experiment_dir = tmp_path  # as the driver sets it before Ray builds or restores the searcher
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(
        {"sampler": "grid", "asha": None, "epochs": 2, "params": {"seed": {"categorical": [0, 1]}},
         "variants": {"a": {}, "b": {"train.tau": 0.3}}}))
    space = load_space(tmp_path / "grid.yaml")
    return StudySearch(space=space.define_by_run, metric="knn_acc", mode="max", study_name="g",
                       sampler=optuna.samplers.RandomSampler(seed=0), grid_cells=space.grid_cells(),
                       storage_url="journal:g.journal")


def result(epoch):
    return {"knn_acc": 0.5, "epoch": epoch, "max_epochs": 2, "training_iteration": epoch}


def finish(searcher, trial_id, error=False):
    searcher.on_trial_complete(trial_id, None if error else result(2), error=error)


def restore(monkeypatch, searcher, path, **trials):
    monkeypatch.setattr(StudySearch, "restored_trials",
                        {tid: RestoredTrial(number, status, f"trial_{tid}") for tid, (number, status) in trials.items()})
    searcher.restore(str(path))
    return searcher


def states(searcher):
    return {t.number: t.state.name for t in searcher._ot_study.trials}


def test_grid_runs_every_cell_once_ends_cleanly_and_resume_reruns_failed_cells(tmp_path, monkeypatch):
    first = grid_searcher(tmp_path)
    cells = []
    for i in range(4):
        config = first.suggest(f"t{i}")
        cells.append((config["variant"], config["seed"]))
        finish(first, f"t{i}", error=i == 1)  # no GridSampler: telling the last cell raises nothing
    assert sorted(cells) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert first.suggest("t4") == Searcher.FINISHED
    first.suggest("t5")  # asked again (a ConcurrencyLimiter does): still finished, no extra trial
    assert len(first._ot_study.trials) == 4
    first.save(str(tmp_path / "searcher.pkl"))

    # the failed cell is re-run on resume
    resumed = restore(monkeypatch, grid_searcher(tmp_path), tmp_path / "searcher.pkl",  # the journal has the 4
                      t0=(0, "TERMINATED"), t1=(1, "ERROR"), t2=(2, "TERMINATED"), t3=(3, "TERMINATED"))
    assert list(states(resumed).values()).count("FAIL") == 1
    rerun = resumed.suggest("t6")
    assert (rerun["variant"], rerun["seed"]) == cells[1]
    finish(resumed, "t6")
    assert resumed.suggest("t7") == Searcher.FINISHED

    generator = StudySearchGenerator(first)
    generator.set_state({"counter": 4, "total_samples": 10**9, "finished": True, "experiment": None})
    assert not generator.is_finished()  # a restored grid asks its study again
    plain = SearchGenerator(first)
    plain.set_state({"counter": 4, "total_samples": 10**9, "finished": True, "experiment": None})
    assert plain.is_finished()


def test_resume_closes_unsnapshotted_trials_and_requeues_their_cells(tmp_path, monkeypatch):
    first = grid_searcher(tmp_path)
    asked_first = first.suggest("t0")
    finish(first, "t0")
    first.save(str(tmp_path / "snapshot.pkl"))  # Ray's snapshot: one trial
    late = first.suggest("t1")  # started after the snapshot, then the driver was killed
    resumed = restore(monkeypatch, grid_searcher(tmp_path), tmp_path / "snapshot.pkl", t0=(0, "TERMINATED"))
    assert states(resumed)[1] == "FAIL" and "RUNNING" not in states(resumed).values()
    asked = [resumed.suggest(f"r{i}") for i in range(3)]
    assert sorted((c["variant"], c["seed"]) for c in asked) == sorted(
        {("a", 0), ("a", 1), ("b", 0), ("b", 1)} - {(asked_first["variant"], asked_first["seed"])})
    assert (late["variant"], late["seed"]) in {(c["variant"], c["seed"]) for c in asked}
    for i in range(3):
        finish(resumed, f"r{i}")
    assert resumed.suggest("r3") == Searcher.FINISHED  # each cell once: the lost one's cell queued only once
    assert resumed.suggest("r3") == "FINISHED"
    done = {(t.params["variant"], t.params["seed"]) for t in resumed._ot_study.trials if t.state.name == "COMPLETE"}
    assert len(done) == 4


def test_a_trial_the_searcher_snapshot_missed_is_relinked_by_its_optuna_number(tmp_path, monkeypatch):
    first = grid_searcher(tmp_path)
    first.suggest("t0")
    first.save(str(tmp_path / "searcher.pkl"))  # the searcher's snapshot: t0 only
    first.suggest("t1")  # Ray's experiment snapshot, written later, has t1 running too
    first.on_trial_result("t1", result(1))
    resumed = restore(monkeypatch, grid_searcher(tmp_path), tmp_path / "searcher.pkl",
                      t0=(0, "RUNNING"), t1=(1, "RUNNING"))
    assert states(resumed) == {0: "RUNNING", 1: "RUNNING", 2: "WAITING", 3: "WAITING"}
    resumed.on_trial_result("t1", result(2))
    resumed.on_trial_complete("t1", result(2))  # Ray resumes t1: its results reach its study trial
    trial = resumed._ot_study.trials[1]
    assert trial.state.name == "COMPLETE" and sorted(trial.intermediate_values) == [1, 2]


def test_a_trial_only_the_searcher_snapshot_has_is_closed_and_its_cell_queued_once(tmp_path, monkeypatch):
    first = grid_searcher(tmp_path)
    first.suggest("t0")
    lost = first.suggest("t1")
    first.save(str(tmp_path / "searcher.pkl"))  # the searcher's snapshot knows t1; Ray's experiment state not
    resumed = restore(monkeypatch, grid_searcher(tmp_path), tmp_path / "searcher.pkl", t0=(0, "RUNNING"))
    assert states(resumed) == {0: "RUNNING", 1: "FAIL", 2: "WAITING", 3: "WAITING", 4: "WAITING"}
    assert resumed._ot_study.trials[4].system_attrs["fixed_params"] == {k: lost[k] for k in ("variant", "seed")}
    for i in range(3):
        assert resumed.suggest(f"r{i}") not in (None, Searcher.FINISHED)
    assert resumed.suggest("r3") == Searcher.FINISHED


def test_a_lost_design_point_is_queued_again(tmp_path, monkeypatch):
    space = load_space("augs.yaml")
    design = space.startup_design(48, 0)

    def make():
        StudySearch.experiment_dir = tmp_path
        return StudySearch(space=space.define_by_run, metric="knn_acc", mode="max", study_name="d",
                           sampler=optuna.samplers.RandomSampler(seed=0), startup=design, storage_url="journal:d.journal")
    first = make()
    first.suggest("t0")
    first.suggest("t1")
    first.save(str(tmp_path / "searcher.pkl"))
    resumed = restore(monkeypatch, make(), tmp_path / "searcher.pkl", t0=(0, "RUNNING"))
    trials = resumed._ot_study.trials
    assert trials[1].state.name == "FAIL" and len(trials) == len(design) + 1
    assert trials[-1].state.name == "WAITING" and trials[-1].system_attrs["fixed_params"] == design[1]


def test_terminated_and_errored_trials_are_not_kept_running(tmp_path, monkeypatch):
    first = grid_searcher(tmp_path)
    for tid in ("t0", "t1"):
        first.suggest(tid)
    first.save(str(tmp_path / "searcher.pkl"))
    # Ray saw t0 end and t1 error, but the driver was killed before it told the study
    resumed = restore(monkeypatch, grid_searcher(tmp_path), tmp_path / "searcher.pkl",
                      t0=(0, "TERMINATED"), t1=(1, "ERROR"))
    assert "RUNNING" not in states(resumed).values()


def test_the_generator_counts_and_limits_only_the_restored_trials(tmp_path, monkeypatch):
    limited = ConcurrencyLimiter(grid_searcher(tmp_path), max_concurrent=2)
    generator = StudySearchGenerator(limited)
    generator._counter, generator._total_samples, generator._experiment = 2, 8, None
    for tid in ("t0", "t1"):
        limited.suggest(tid)
    generator.save_to_dir(str(tmp_path), "s")  # both slots held: t0 and t1 live
    resumed = StudySearchGenerator(ConcurrencyLimiter(grid_searcher(tmp_path), max_concurrent=2))
    monkeypatch.setattr(StudySearch, "restored_trials", {"t0": RestoredTrial(0, "PAUSED", "trial_t0")})
    resumed.restore_from_dir(str(tmp_path))
    assert resumed._counter == 1  # t1 was lost: Ray samples a trial in its place (8 in all)
    assert resumed.searcher.live_trials == {"t0"} and resumed.searcher.num_unfinished_live_trials == 1
    assert resumed.searcher.suggest("r0") not in (None, Searcher.FINISHED)  # t1's slot is free again


def test_a_design_point_is_covered_by_the_trial_it_was_enqueued_for():
    study = optuna.create_study()
    study.enqueue_trial({"use_rrc": True})
    trial = study.ask()
    trial.suggest_categorical("use_rrc", [False, True])
    trial.suggest_float("rrc_scale_min", 0.1, 1)  # sampled beside the design's fixed factors
    study.tell(trial, 0.5)
    assert cells_to_rerun([{"use_rrc": True}, {"use_rrc": False}], study.trials) == [{"use_rrc": False}]


def ray_trial(trial_id, status, number):
    state = {"trial_id": trial_id, "status": status, "relative_logdir": f"trial_{trial_id}",
             "config": {"run_config": {}, "optuna_number": number}}
    return [json.dumps(state), "{}"]


def test_trial_dirs_the_snapshot_does_not_know_are_marked_lost(tmp_path):
    (tmp_path / "experiment_state-a.json").write_text(json.dumps({"trial_data": [ray_trial("x", "RUNNING", 0)]}))
    (tmp_path / "experiment_state-b.json").write_text(json.dumps(
        {"trial_data": [ray_trial("x", "TERMINATED", 0), ray_trial("y", "PENDING", 1)]}))
    assert restored_trials(tmp_path) == {"x": RestoredTrial(0, "TERMINATED", "trial_x"),
                                         "y": RestoredTrial(1, "PENDING", "trial_y")}  # the newest session
    assert not restored_trials(tmp_path)["x"].live and restored_trials(tmp_path)["y"].live
    for tid, number in (("x", 0), ("y", 1), ("z", 2)):
        (tmp_path / f"trial_{tid}").mkdir()
        (tmp_path / f"trial_{tid}" / "params.json").write_text(json.dumps({"optuna_number": number}))
    notes = mark_lost_trials(tmp_path, restored_trials(tmp_path))
    assert len(notes) == 1 and "trial_z (study trial 2)" in notes[0]
    assert (tmp_path / "trial_z" / "error.txt").read_text().startswith(LOST_NOTE)
    assert not (tmp_path / "trial_x" / "error.txt").exists() and not (tmp_path / "trial_y" / "error.txt").exists()
    assert mark_lost_trials(tmp_path, restored_trials(tmp_path)) == []  # a second resume says it once
