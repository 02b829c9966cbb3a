"""Search-space YAML: shipped spaces compile; every malformed case fails before Ray, naming file and key."""

import itertools
import subprocess
import sys

import optuna
import pytest
import yaml

from uclser_tune.search.spaces import SpaceError, lehmer_decode, load_space

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
    ({"params": {"train.tau": {"uniform": [0.1, 0.2]}}}, ["params.train.tau", "exactly one of"]),
    ({"params": {"model.encoder": {"categorical": ["resnet18", "vgg"]}}}, ["model.encoder", "'vgg'"]),
    ({"ops": {"candidates": ["rrc", "warp"]}}, ["ops.candidates[1]", "unknown op 'warp'"]),
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
    ({"epochs": 0}, ["epochs", "positive"]),
    ({"asha": {"grace": 2}}, ["asha.grace", "grace_period"]),
    ({"sampler": "grid"}, ["sampler", "grid needs variants"]),
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
                          str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and str(path) in out.stderr and "ops.candidates[1]" in out.stderr
    assert not (tmp_path / "runs").exists()
    assert "ray" not in out.stderr.lower().replace(str(path).lower(), "")
