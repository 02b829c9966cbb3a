"""Search-space YAML: shipped spaces compile; every malformed case fails before Ray, naming file and key."""

import itertools
import json
import subprocess
import sys

import numpy as np
import optuna
import pytest
import yaml

from uclser_tune.search.resume import SEARCHER_STATE
from uclser_tune.search.spaces import SpaceError, lehmer_decode, load_space, resolve_path

optuna.logging.set_verbosity(optuna.logging.WARNING)
SHIPPED = ["augs.yaml", "tau_batch.yaml", "paper_ablations.yaml", "smoke.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_give_valid_configs(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(8):
        trial = study.ask()
        cfg = space.define_by_run(trial)["run_config"]
        assert cfg["train"]["epochs"] == space.epochs
        if space.candidates:
            for op in cfg["views"]["ops"]:
                assert trial.params[f"use_{op}"] is True
            for op in space.candidates:  # magnitudes only while the op is on
                named = [p for p in trial.params if p.startswith(f"{op}_")]
                assert bool(named) == (op in cfg["views"]["ops"] and op in space.magnitudes)
        study.tell(trial, 0.5)


def test_paper_ablations_is_the_papers_grid():
    space = load_space("paper_ablations.yaml")
    assert space.grid_size() == 15 * 3
    seps = sorted(v["views.separation"] for v in space.variants.values() if "views.separation" in v)
    assert seps == [25, 75, 125, 200, 300, 400]
    policies = {tuple(v["views.ops"]) for v in space.variants.values() if "views.ops" in v}
    assert policies == {("rrc", "compression"), ("rrc", "specaugment"), ("rrc",), ("specaugment",), ()}
    assert space.build({}).views.ops == ["rrc", "compression", "noise"]  # the sixth policy is the default


def test_lehmer_decode_is_a_bijection():
    items = ["a", "b", "c", "d"]
    perms = {tuple(lehmer_decode([d0, d1, d2], items))
             for d0, d1, d2 in itertools.product(range(4), range(3), range(2))}
    assert perms == set(itertools.permutations(items))


def write(tmp_path, data, name="space.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


OK = {"params": {"train.tau": {"float": [0.05, 0.5]}}, "epochs": 2}


@pytest.mark.parametrize("change, words", [
    ({"paramz": {}}, ["'paramz'", "allowed top-level keys"]),
    ({"params": {"train.tau": {"float": [0.5, 0.05]}}}, ["params.train.tau", "bad range"]),
    ({"params": {"train.tau": {"float": [0, 0.5], "log": True}}}, ["params.train.tau", "log"]),
    ({"params": {"train.tua": {"float": [0.05, 0.5]}}}, ["train.tua", "unknown key"]),
    ({"params": {"train.batch_size": {"categorical": [64, 64]}}}, ["params.train.batch_size", "distinct"]),
    ({"params": {"train.tau": {"uniform": [0.1, 0.2]}}}, ["params.train.tau.uniform", "unknown key"]),
    ({"params": {"train.tau": {"log": True}}}, ["params.train.tau", "exactly one of"]),
    ({"params": {"model.encoder": {"categorical": ["resnet18", "vgg"]}}}, ["model.encoder", "'vgg'"]),
    ({"ops": {"candidates": ["rrc", "warp"]}}, ["ops.candidates[1]", "'warp'", "expected one of"]),
    ({"ops": {"candidates": ["rrc", "noise", "rrc"]}}, ["ops.candidates[2]", "twice"]),
    ({"ops": {"candidates": ["rrc"], "order": "sorted"}}, ["ops.order", "lehmer"]),
    ({"ops": {"candidates": ["rrc"], "magnitudes": {"noise": {"sigma_max": {"float": [0.1, 0.2]}}}}},
     ["ops.magnitudes.noise", "not among"]),
    ({"ops": {"candidates": ["noise"], "magnitudes": {"noise": {"sigma": {"float": [0.1, 0.2]}}}}},
     ["ops.magnitudes.noise.sigma", "sigma_max"]),
    ({"ops": {"candidates": ["noise"], "magnitudes": {"noise": {"sigma_max": {"float": [-1.0, 0.2]}}}}},
     ["ops.magnitudes.noise.sigma_max", "allowed range"]),
    ({"base": {"train": {"tau": 0.1}}}, ["params.train.tau", "also fixed in base"]),
    ({"params": {"views.ops": {"categorical": ["a"]}}}, ["params.views.ops", "ops block"]),
    ({"epochs": 0}, ["epochs", ">= 1"]),
    ({"asha": {"grace": 2}}, ["asha.grace", "grace_period"]),
    ({"sampler": "grid"}, ["sampler", "grid needs variants"]),
    ({"asha": {"reduction_factor": 1}}, ["asha.reduction_factor", "> 1"]),
    ({"asha": {"reduction_factor": 0.5}}, ["asha.reduction_factor", "> 1"]),
    ({"asha": {"grace_period": 3}}, ["asha.grace_period", "epochs (2)"]),
    ({"asha": {"grace_period": 1.5}}, ["asha.grace_period", "integer"]),
    ({"trials": {"num_samples": 2.5}}, ["trials.num_samples", "integer"]),
    ({"trials": {"num_samples": 0}}, ["trials.num_samples", "> 0"]),
    ({"trials": {"max_concurrent": -1}}, ["trials.max_concurrent", "> 0"]),
    ({"resources": {"cpu": 0}}, ["resources.cpu", "> 0"]),
    ({"params": {"views.mixback": {"categorical": [True, False], "when": "views.mixback_energy_adjust"},
                 "views.mixback_energy_adjust": {"categorical": [True, False], "when": "views.mixback"}}},
     ["when", "cycle", "views.mixback, views.mixback_energy_adjust"]),
])
def test_malformed_spaces_name_file_key_and_reason(tmp_path, change, words):
    path = write(tmp_path, {**OK, **change})
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(err.value).startswith(str(path))
    for w in words:
        assert w in str(err.value)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(write(tmp_path, "params: [unclosed"))
    with pytest.raises(SpaceError, match="cannot read.*smoke.yaml"):
        load_space(tmp_path / "nope.yaml")


def test_cli_exits_2_before_ray_starts(tmp_path):
    path = write(tmp_path, {**OK, "ops": {"candidates": ["rrc", "rrc"]}})
    out = subprocess.run([sys.executable, "-m", "uclser_tune.search", "--space", str(path), "--storage-path",
                          str(tmp_path / "runs")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and str(path) in out.stderr and "ops.candidates[1]" in out.stderr
    assert not (tmp_path / "runs").exists()
    assert "ray" not in out.stderr.lower().replace(str(path).lower(), "")


def test_when_condition_does_not_depend_on_param_order(tmp_path):
    # the gated param is listed before the param that gates it
    path = write(tmp_path, {"params": {"views.mixback_alpha": {"float": [0.01, 0.1], "when": "views.mixback"},
                                       "views.mixback": {"categorical": [True, False]}}, "epochs": 2})
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        cfg = space.define_by_run(trial)["run_config"]
        on = trial.params["views.mixback"]
        assert ("views.mixback_alpha" in trial.params) == on and cfg["views"]["mixback"] == on
        seen.add(on)
        study.tell(trial, 0.5)
    assert seen == {True, False}


def test_config_for_builds_the_config_written_out_by_hand():
    """smoke.yaml's params of one trial, and the run config they mean, worked out by hand: Lehmer digits
    2, 0, 1 over [rrc, compression, noise, specaugment] give noise, rrc, specaugment, compression, of
    which compression is off; magnitudes only for the ops that are on; the base and the epochs kept."""
    space = load_space("smoke.yaml")
    params = {"train.tau": 0.1, "views.sampling": "same", "views.mixback": True, "views.mixback_alpha": 0.07,
              "use_rrc": True, "rrc_scale_min": 0.7, "use_compression": False, "use_noise": True,
              "noise_sigma_max": 0.02, "use_specaugment": True, "order_d0": 2, "order_d1": 0, "order_d2": 1}
    cfg = space.config_for(params)
    assert cfg.train.tau == 0.1 and cfg.views.sampling == "same" and cfg.views.mixback is True
    assert cfg.views.mixback_alpha == 0.07
    assert cfg.views.ops == ["noise", "rrc", "specaugment"] and cfg.views.order == "fixed"
    assert cfg.views.op_params == {"noise": {"sigma_max": 0.02}, "rrc": {"scale_min": 0.7}}
    assert (cfg.model.encoder, cfg.model.width, cfg.model.proj_dim) == ("resnet18", 0.125, 32)
    assert (cfg.train.batch_size, cfg.train.max_batches_per_epoch, cfg.train.epochs) == (32, 3, 4)
    assert cfg.eval.knn_k == 10 and cfg.data.synth_size == "tiny"
    assert space.config_for(params, {"train.epochs": 3, "eval.every": 2}).train.epochs == 3
    off = {**{k: v for k, v in params.items() if k != "views.mixback_alpha"}, "views.mixback": False}
    assert space.config_for(off).views.mixback is False  # α is not asked for when mix-back is off
    with pytest.raises(SpaceError, match="params do not match"):
        space.config_for({})


@pytest.mark.parametrize("order, params, ops, pipeline_order", [
    # random keys: the ops sorted by their key, the ones that are off dropped
    ("random_keys", {"order_key_rrc": 0.9, "order_key_noise": 0.1, "order_key_blur": 0.5}, ["noise", "blur", "rrc"],
     "fixed"),
    ("random_keys", {"order_key_rrc": 0.2, "order_key_noise": 0.3, "order_key_blur": 0.25}, ["rrc", "blur", "noise"],
     "fixed"),
    # random per sample: no order params; the pipeline shuffles the ops of each view
    ("random_per_sample", {}, ["rrc", "noise", "blur"], "random_per_sample"),
])
def test_random_keys_and_random_per_sample_orders(tmp_path, order, params, ops, pipeline_order):
    space = load_space(write(tmp_path, {"epochs": 2, "ops": {"candidates": ["rrc", "noise", "blur"], "use": "all",
                                                             "order": order}}))
    cfg = space.config_for(params)
    assert cfg.views.ops == ops and cfg.views.order == pipeline_order
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    space.define_by_run(trial)
    assert set(trial.params) == set(params)  # exactly these params are searched


# ---------------------------------------------------------------- the search driver, before and without Ray

def args_for(**kw):
    from uclser_tune.search.cli import build_parser

    extra = [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v)) if v is not True]
    return build_parser().parse_args(["--space", "smoke.yaml", *extra, *[f"--{k}" for k, v in kw.items() if v is True]])


def test_trial_resources(tmp_path, capsys):
    from uclser_tune.search.resources import trial_resources

    space = load_space(write(tmp_path, {**OK, "resources": {"cpu": 4, "gpu": 0.5}}))
    head_only = {"CPU": 2}
    # a cluster without GPU nodes yet (autoscaling from 0): the request stands
    assert trial_resources(args_for(address="auto"), space, head_only) == (4, 0.5)
    # a local Ray without a GPU: CPU with a warning; but more CPUs than there are is refused
    assert trial_resources(args_for(cpus_per_trial=2), space, head_only) == (2, 0)
    assert "no GPU" in capsys.readouterr().err
    with pytest.raises(SpaceError, match="asks for 4 CPUs.*has 2 CPUs"):
        trial_resources(args_for(), space, head_only)
    # --smoke: 1 CPU, at most the GPUs there are
    assert trial_resources(args_for(smoke=True), space, head_only) == (1, 0)
    assert trial_resources(args_for(smoke=True), space, {"CPU": 16, "GPU": 1}) == (1, 0.5)
    assert trial_resources(args_for(smoke=True, gpus_per_trial=2), space, {"CPU": 16, "GPU": 1}) == (1, 1)


@pytest.mark.parametrize("argv, words", [
    (["--max-epochs", "2"], ["--max-epochs 2", "grace_period (3)"]),
    (["--num-samples", "0"], ["--num-samples", "positive"]),
    (["--cpus-per-trial", "0"], ["--cpus-per-trial", "> 0"]),
    (["--grace-period", "6"], ["--max-epochs 5", "grace_period (6)"]),
    (["--reduction-factor", "1"], ["--reduction-factor", "> 1"]),
    (["--set", "model.widht=0.5"], ["model.widht: unknown key", "width"]),
    (["--set", "train.tau=-1"], ["train.tau", "-1"]),
])
def test_cli_numbers_rejected_before_ray(tmp_path, capsys, argv, words):
    from uclser_tune.search.cli import main

    path = write(tmp_path, {**OK, "epochs": 5, "asha": {"grace_period": 3}})
    assert main(["--space", str(path), "--storage-path", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not (tmp_path / "runs").exists()


def started_experiment(tmp_path):
    """(space path, experiment dir, meta) of an experiment whose search.json exists (a started search)."""
    path = write(tmp_path, OK)
    exp = tmp_path / "runs" / "space"
    exp.mkdir(parents=True)
    meta = {"space": str(path), "space_digest": load_space(path).digest, "sampler_seed": 0, "num_samples": 32,
            "overrides": {"train.epochs": 2, "eval.every": 1}, "storage": "journal:optuna.journal",
            "study_name": "space", "searcher_state": SEARCHER_STATE}
    (exp / "search.json").write_text(json.dumps(meta))
    return path, exp, meta


def test_an_experiment_of_an_older_searcher_is_refused_with_one_line(tmp_path, capsys):
    from uclser_tune.search.cli import main

    path, exp, meta = started_experiment(tmp_path)
    del meta["searcher_state"]  # search.json of the searcher before the state format was recorded
    (exp / "search.json").write_text(json.dumps(meta))
    assert main(["--space", str(path), "--storage-path", str(tmp_path / "runs"), "--num-samples", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another version of uclser_tune" in err and "another --name" in err


def test_resume_refuses_changed_num_samples_or_seed(tmp_path, capsys):
    from uclser_tune.search.cli import main

    path, exp, meta = started_experiment(tmp_path)
    base = ["--space", str(path), "--storage-path", str(tmp_path / "runs")]
    assert main([*base, "--num-samples", "40"]) == 2
    assert "num_samples 32 (now 40)" in capsys.readouterr().err
    assert main([*base, "--seed", "1"]) == 2
    assert "sampler_seed 0 (now 1)" in capsys.readouterr().err
    meta["asha"] = load_space(path).asha
    (exp / "search.json").write_text(json.dumps(meta))
    assert main([*base, "--num-samples", "32", "--grace-period", "2", "--reduction-factor", "3"]) == 2
    assert "asha" in capsys.readouterr().err


def test_asha_from_the_command_line():
    from uclser_tune.search.cli import with_asha

    space = load_space("smoke.yaml")
    assert with_asha(space, None, None) is space
    assert with_asha(space, 2, None).asha == {**space.asha, "grace_period": 2}
    assert with_asha(load_space("paper_ablations.yaml"), 1, 3).asha == {"grace_period": 1, "reduction_factor": 3}
    with pytest.raises(SpaceError, match="give both"):
        with_asha(load_space("paper_ablations.yaml"), 1, None)


def test_fresh_start_on_an_old_study_is_refused(tmp_path, capsys):
    from uclser_tune.search.cli import main
    from uclser_tune.search.results import storage_from

    path, exp, _ = started_experiment(tmp_path)
    optuna.create_study(study_name="space", storage=storage_from("journal:optuna.journal", exp)).ask()
    assert main(["--space", str(path), "--storage-path", str(tmp_path / "runs")]) == 2
    assert "study has 1 trials but Ray saved no experiment state" in capsys.readouterr().err


def fake_experiment(exp, sessions):
    import pickle

    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(pickle.dumps({}))
    for session, text in sessions.items():
        (exp / f"experiment_state-{session}.json").write_text(text)
        (exp / f"searcher-state-{session}.pkl").write_bytes(pickle.dumps({"s": session}))
        (exp / f"search_gen_state-{session}.json").write_bytes(pickle.dumps({"counter": 1}))


def test_broken_newest_snapshot_is_set_aside(tmp_path):
    from uclser_tune.search.state import prepare_resume, sessions

    exp = tmp_path / "exp"
    fake_experiment(exp, {"2026-01-01_10-00-00": '{"trial_data": []}', "2026-01-01_11-00-00": '{"trial_da'})
    notes = prepare_resume(exp)
    assert len(notes) == 1 and "2026-01-01_11-00-00" in notes[0] and "unreadable" in notes[0]
    assert sessions(exp) == ["2026-01-01_10-00-00"]
    assert sorted(p.name for p in (exp / "broken_state").iterdir()) == [
        "experiment_state-2026-01-01_11-00-00.json", "search_gen_state-2026-01-01_11-00-00.json",
        "searcher-state-2026-01-01_11-00-00.pkl"]
    assert prepare_resume(exp) == []  # now clean


def test_truncated_searcher_state_also_breaks_a_snapshot(tmp_path):
    from uclser_tune.search.state import prepare_resume, sessions

    exp = tmp_path / "exp"
    fake_experiment(exp, {"a": "{}", "b": "{}"})
    (exp / "searcher-state-b.pkl").write_bytes(b"")
    assert "searcher-state-b.pkl" in prepare_resume(exp)[0]
    assert sessions(exp) == ["a"]


@pytest.mark.parametrize("broken", ["only_snapshot", "tuner"])
def test_unresumable_experiment_is_refused_with_a_reason(tmp_path, broken):
    from uclser_tune.search.state import StateError, prepare_resume

    exp = tmp_path / "exp"
    fake_experiment(exp, {"a": "" if broken == "only_snapshot" else "{}"})
    if broken == "tuner":
        (exp / "tuner.pkl").write_bytes(b"\x80")
    with pytest.raises(StateError, match="another --name"):
        prepare_resume(exp)


def test_tpe_with_the_same_seed_proposes_the_same_trials(tmp_path, monkeypatch):
    """The searcher the search CLI builds (tune_config: TPE seeded with --seed), fed the same results:
    the same seed gives the same 14 configs (10 random start-up trials, then TPE's own), another seed not."""
    from uclser_tune.search.searcher import StudySearch

    space = load_space("smoke.yaml")
    monkeypatch.setattr(StudySearch, "experiment_dir", tmp_path, raising=False)

    def proposals(seed: int, run: str) -> list[dict]:
        import argparse

        from uclser_tune.search.driver import tune_config

        meta = {"num_samples": 14, "overrides": {}, "storage": f"journal:{run}.journal", "study_name": run}
        searcher = tune_config(space, argparse.Namespace(seed=seed), meta, 1, None, 4).search_alg.searcher
        assert isinstance(searcher, StudySearch) and isinstance(searcher._sampler, optuna.samplers.TPESampler)
        configs = []
        for i in range(14):
            config = searcher.suggest(f"t{i}")
            configs.append(config)
            knn = 1 / (1 + abs(config["run_config"]["train"]["tau"] - 0.2))  # a result that depends on the config
            searcher.on_trial_complete(f"t{i}", {"knn_acc": knn, "training_iteration": 4})
        return configs

    first = proposals(7, "a")
    assert proposals(7, "b") == first
    assert proposals(8, "c") != first


# ---------------------------------------------------------------- the balanced start-up design

def test_startup_design_is_a_balanced_orthogonal_array_over_the_on_off_params():
    space = load_space("augs.yaml")
    design = space.startup_design(48, seed=0)
    names = ["views.mixback", "views.mixback_energy_adjust", *(f"use_{op}" for op in space.candidates)]
    assert len(design) == 16 and all(sorted(row) == sorted(names) for row in design)
    x = np.array([[row[n] for n in names] for row in design], dtype=float)
    assert np.all(x.mean(0) == 0.5)  # every factor on in half of the runs
    for i, j in itertools.combinations(range(len(names)), 2):  # every pair: all four combinations equally often
        assert np.all(np.bincount((2 * x[:, i] + x[:, j]).astype(int), minlength=4) == 4), (names[i], names[j])
    assert space.startup_design(48, seed=0) == design and space.startup_design(48, seed=1) != design
    assert space.startup_design(47, seed=0) == []  # more than a third of the trials: the sampler's own start


def test_startup_sampler_and_grids_have_no_design(tmp_path):
    raw = yaml.safe_load(resolve_path("augs.yaml").read_text())
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**raw, "startup": "sampler"}))
    assert load_space(tmp_path / "s.yaml").startup_design(200, 0) == []
    assert load_space("paper_ablations.yaml").startup_design(10_000, 0) == []
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**raw, "startup": "balanced"}))
    with pytest.raises(SpaceError, match="startup: got 'balanced'; expected one of 'design' or 'sampler'"):
        load_space(tmp_path / "bad.yaml")


def test_the_search_asks_the_design_first_then_tpe(tmp_path, monkeypatch):
    """The searcher the CLI builds enqueues the design in its fresh study: the first 16 trials take its
    on/off levels, and TPE's random start-up lasts as long."""
    import argparse

    from uclser_tune.search.driver import tune_config
    from uclser_tune.search.searcher import StudySearch

    space = load_space("augs.yaml")
    monkeypatch.setattr(StudySearch, "experiment_dir", tmp_path, raising=False)
    meta = {"num_samples": 48, "overrides": {}, "storage": "journal:d.journal", "study_name": "d"}
    searcher = tune_config(space, argparse.Namespace(seed=3), meta, 1, None, 100).search_alg.searcher
    assert searcher._sampler._n_startup_trials == 16
    for i in range(18):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"knn_acc": 0.5, "training_iteration": 4})
    trials = searcher._ot_study.get_trials(deepcopy=False)
    design = space.startup_design(48, 3)
    for row, trial in zip(design, trials):
        assert {k: trial.params[k] for k in row if k in trial.params} == {k: v for k, v in row.items()
                                                                          if k in trial.params}
        assert trial.params["views.mixback"] == row["views.mixback"]
    assert len(trials) == 18
