"""The search's Ray searcher over Ray's and Optuna's public interfaces: what the study records, the one
storage lookup it needs after a restart, the generator state it replaces on restore, and that it reads
no private attribute of either library."""

import ast
import math
import pickle
import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from uclser_tune.search import searcher as searcher_module
from uclser_tune.search.searcher import StudySearch, StudySearchGenerator, reattach
from uclser_tune.search.spaces import load_space
from uclser_tune.search.state import RestoredTrial

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sampled_searcher(exp_dir, name="s"):
    """A searcher over one sampled param, its experiment in ``exp_dir`` and its space file beside it."""
    StudySearch.experiment_dir = exp_dir
    exp_dir.mkdir(exist_ok=True)
    (exp_dir.parent / "s.yaml").write_text(yaml.safe_dump(
        {"sampler": "random", "asha": None, "epochs": 3, "params": {"train.tau": {"float": [0.05, 0.5]}}}))
    space = load_space(exp_dir.parent / "s.yaml")
    return StudySearch(space=space.define_by_run, metric="knn_acc", mode="max", study_name=name,
                       sampler=optuna.samplers.RandomSampler(seed=0), storage_url=f"journal:{name}.journal")


def result(epoch, knn=0.5, max_epochs=3):
    return {"knn_acc": knn, "epoch": epoch, "max_epochs": max_epochs, "training_iteration": epoch}


def expected_state(epochs_run, last_knn, error, max_epochs=3):
    """The rule, written out: an error or a non-finite kNN fails, a stop before the budget prunes."""
    if error or not math.isfinite(last_knn):
        return "FAIL"
    return "PRUNED" if epochs_run < max_epochs else "COMPLETE"


CASES = [(3, 0.6, False), (1, 0.4, False), (2, 0.5, True), (2, math.nan, False), (3, math.inf, False)]


def test_the_study_records_complete_pruned_and_failed_trials_with_their_epochs(tmp_path):
    search = sampled_searcher(tmp_path / "exp")
    for i, (epochs, last, error) in enumerate(CASES):
        config = search.suggest(f"t{i}")
        assert config["optuna_number"] == i and "train.tau" in config and "run_config" in config
        for epoch in range(1, epochs):  # the last epoch's result reaches only on_trial_complete (ASHA stops on it)
            search.on_trial_result(f"t{i}", result(epoch, 0.1 * epoch))
        search.on_trial_complete(f"t{i}", result(epochs, last), error=error)
    trials = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "exp" / "s.journal")))).trials
    for trial, (epochs, last, error) in zip(trials, CASES):
        assert trial.state.name == expected_state(epochs, last, error), (trial.number, epochs, last, error)
        steps = {e: 0.1 * e for e in range(1, epochs)} | ({epochs: last} if math.isfinite(last) else {})
        assert trial.intermediate_values == pytest.approx(steps)
        # Optuna gives a PRUNED trial its last intermediate value as its value
        assert trial.value == (None if trial.state.name == "FAIL" else pytest.approx(steps[max(steps)]))
        assert trial.user_attrs["ray_trial_id"] == f"t{trial.number}"
    search.on_trial_complete("t0", result(3))  # told again (Ray does on a retry's end): the study is unchanged
    search.on_trial_result("t1", result(2))
    assert search._ot_study.trials[1].intermediate_values == trials[1].intermediate_values


def test_reattach_finds_a_running_trial_by_number_in_a_storage_shared_by_two_studies(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j")))
    first = optuna.create_study(study_name="first", storage=storage)
    for _ in range(2):
        first.ask()
    second = optuna.create_study(study_name="second", storage=storage)
    second.ask()
    second.ask()  # second's trial 1 is the storage's fourth trial
    again = optuna.load_study(study_name="second", storage=storage)
    reattach(again, storage, 1).report(0.25, 4)
    assert [t.intermediate_values for t in second.get_trials()] == [{}, {4: 0.25}]
    assert [t.intermediate_values for t in first.get_trials()] == [{}, {}]


def test_ray_generator_state_has_the_keys_the_restore_replaces():
    """StudySearchGenerator.set_state replaces two values of Ray's generator snapshot; if Ray renames
    them, this fails before a resume silently keeps the old count."""
    state = SearchGenerator(StudySearch.__new__(StudySearch)).get_state()
    assert {"counter", "finished"} <= set(state)


def snapshot_three_running(exp, limit_in_searcher):
    """Three trials asked with three slots, then Ray's snapshots written; the fourth gets no slot."""
    first = sampled_searcher(exp)
    first.max_concurrent = 3 if limit_in_searcher else None
    generator = StudySearchGenerator(first if limit_in_searcher else ConcurrencyLimiter(first, max_concurrent=3))
    for tid in ("t0", "t1", "t2"):
        generator.searcher.suggest(tid)
    assert generator.searcher.suggest("t3") is None
    generator.save_to_dir(str(exp), "s")


@pytest.mark.parametrize("limit_in_searcher", [True, False], ids=["searcher", "ConcurrencyLimiter"])
def test_restore_frees_the_slots_of_finished_and_lost_trials(tmp_path, monkeypatch, limit_in_searcher):
    exp = tmp_path / "exp"
    snapshot_three_running(exp, limit_in_searcher)
    # Ray's snapshot: t0 ended (its end never reached the searcher), t1 runs again, t2 was lost
    monkeypatch.setattr(StudySearch, "restored_trials", {"t0": RestoredTrial(0, "TERMINATED", "trial_t0"),
                                                         "t1": RestoredTrial(1, "RUNNING", "trial_t1")})
    search = sampled_searcher(exp)
    search.max_concurrent = 3 if limit_in_searcher else None
    resumed = StudySearchGenerator(search if limit_in_searcher else ConcurrencyLimiter(search, max_concurrent=3))
    resumed.restore_from_dir(str(exp))
    assert resumed.get_state()["counter"] == 2
    assert {t.number: t.state.name for t in search._ot_study.trials} == {0: "FAIL", 1: "RUNNING", 2: "FAIL"}
    assert all(resumed.searcher.suggest(f"r{i}") is not None for i in range(2))  # two slots free, then none
    assert resumed.searcher.suggest("r2") is None
    resumed.searcher.on_trial_complete("t1", result(3))  # the restored trial held its slot, and its end counts
    assert search._ot_study.trials[1].state.name == "COMPLETE"
    assert resumed.searcher.suggest("r3") is not None


def test_the_searcher_holds_a_slot_for_a_restored_trial_that_its_snapshot_missed(tmp_path, monkeypatch):
    """Ray's ConcurrencyLimiter would restore its live set from an older snapshot than the experiment
    state and drop the end of a trial it does not hold; the searcher's slots follow the experiment state."""
    exp = tmp_path / "exp"
    first = sampled_searcher(exp)
    first.max_concurrent = 2
    first.suggest("t0")
    first.save(str(exp / "searcher.pkl"))  # the searcher's snapshot: t0 only
    first.suggest("t1")  # the experiment state, written later, has t1 running too
    monkeypatch.setattr(StudySearch, "restored_trials", {"t0": RestoredTrial(0, "RUNNING", "trial_t0"),
                                                         "t1": RestoredTrial(1, "RUNNING", "trial_t1")})
    resumed = sampled_searcher(exp)
    resumed.restore(str(exp / "searcher.pkl"))
    assert resumed.suggest("r0") is None  # both slots held
    resumed.on_trial_complete("t1", result(3))
    assert resumed._ot_study.trials[1].state.name == "COMPLETE"
    assert resumed.suggest("r1") is not None


def test_a_copied_experiment_writes_into_its_own_study(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    search = sampled_searcher(old)
    search.suggest("t0")
    search.on_trial_complete("t0", result(3))
    search.save(str(old / "searcher.pkl"))
    frozen = pickle.dumps(search)  # what Ray keeps in tuner.pkl
    assert str(old).encode() not in frozen and str(old).encode() not in (old / "searcher.pkl").read_bytes()
    shutil.copytree(old, new)
    before = (old / "s.journal").read_bytes()
    StudySearch.experiment_dir = new
    moved = pickle.loads(frozen)
    moved.restore(str(new / "searcher.pkl"))
    moved.suggest("t1")
    moved.on_trial_complete("t1", result(3))
    assert (old / "s.journal").read_bytes() == before
    assert [t.state.name for t in moved._ot_study.trials] == ["COMPLETE", "COMPLETE"]


def test_the_searcher_reads_no_private_attribute():
    """Only public attributes of Ray's and Optuna's objects (and of its own): no ``x._y`` in the module."""
    tree = ast.parse(Path(searcher_module.__file__).read_text())
    private = [(node.lineno, node.attr) for node in ast.walk(tree) if isinstance(node, ast.Attribute)
               and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert private == []


def test_the_driver_journal_is_read_back_by_optunas_own_backend(tmp_path):
    """What the driver's journal writes, Optuna's JournalFileBackend (the analysis, the dashboard) reads as
    the same study; and a reader never sees a half-written line as a log."""
    from uclser_tune.search.results import storage_from

    def fill(storage):
        study = optuna.create_study(study_name="j", storage=storage, sampler=optuna.samplers.RandomSampler(seed=1))
        for i in range(4):
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            trial.suggest_categorical("c", ["a", "b"])
            trial.report(0.1 * i, 1)
            study.tell(trial, 0.2 * i if i % 2 else None, state=optuna.trial.TrialState.COMPLETE if i % 2
                       else optuna.trial.TrialState.PRUNED)
        study.ask()
        return study

    def replay(path):
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        return [(t.state, t.params, t.value, t.intermediate_values)
                for t in optuna.load_study(study_name="j", storage=storage).trials]

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fill(storage_from("journal:j.journal", tmp_path / "a", driver=True))
    fill(storage_from("journal:j.journal", tmp_path / "b"))
    assert replay(tmp_path / "a" / "j.journal") == replay(tmp_path / "b" / "j.journal")
    assert len(replay(tmp_path / "a" / "j.journal")) == 5
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["j.journal"]  # no lock file
    with open(tmp_path / "a" / "j.journal", "ab") as f:
        f.write(b'{"op_code": 4, "worker_id"')  # a line the driver is still writing
    assert len(replay(tmp_path / "a" / "j.journal")) == 5
