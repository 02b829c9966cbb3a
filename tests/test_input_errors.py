"""Every malformed user input is one ``error:`` line naming the input and the key, exit status 2, no
traceback, and nothing written: no experiment or run folder appears, an existing one is unchanged.
One table over the four entry points (search, train, retrain, analysis), their command lines,
``--set`` overrides, search-space files, run configs and data folders. The entry points run in this
process: each case refuses before Ray starts or any training begins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from analysis.__main__ import main as analysis_main
from uclser_tune.retrain import main as retrain_main
from uclser_tune.search import cli as search_cli
from uclser_tune.search.driver import write_meta
from uclser_tune.search.lock import LOCK_FILE
from uclser_tune.train import main as train_main

SMOKE = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml").read_text())
ENTRY = {"search": search_cli.main, "train": train_main, "retrain": retrain_main, "analysis": analysis_main}


def space(**changes) -> dict:
    return {**SMOKE, **changes}


def smoke_ops(**changes) -> dict:
    return space(ops={**SMOKE["ops"], **changes})


# (id, entry point, argv, files to write first {name: YAML data or text}, words the error line must hold)
# argv placeholders: {runs} the storage path (holds the experiment "old"), {in} the inputs folder,
# {work} the output folder of train/retrain.
SEARCH = ["--storage-path", "{runs}", "--name", "new", "--space"]
OLD = ["--storage-path", "{runs}", "--name", "old", "--space", "smoke.yaml"]
CASES = [
    # search: the command line
    ("search-no-space-file", "search", [*SEARCH, "{in}/absent.yaml"], {}, ["absent.yaml", "cannot read"]),
    ("search-num-samples-0", "search", [*SEARCH, "smoke.yaml", "--num-samples", "0"], {}, ["--num-samples"]),
    ("search-design-part", "search", [*SEARCH, "augs_design.yaml", "--num-samples", "32"], {},
     ["--num-samples", "64 trials", "balanced"]),
    ("search-max-epochs-0", "search", [*SEARCH, "smoke.yaml", "--max-epochs", "0"], {}, ["--max-epochs"]),
    ("search-cpus-0", "search", [*SEARCH, "smoke.yaml", "--cpus-per-trial", "0"], {}, ["--cpus-per-trial"]),
    ("search-gpus-negative", "search", [*SEARCH, "smoke.yaml", "--gpus-per-trial", "-1"], {}, ["--gpus-per-trial"]),
    ("search-grace-0", "search", [*SEARCH, "smoke.yaml", "--grace-period", "0"], {}, ["--grace-period"]),
    ("search-grace-over-budget", "search", [*SEARCH, "smoke.yaml", "--max-epochs", "1", "--grace-period", "2"], {},
     ["--max-epochs", "grace_period"]),
    ("search-cluster-config-absent", "search",
     [*SEARCH, "smoke.yaml", "--address", "auto", "--cluster-config", "{in}/absent.yaml"], {},
     ["--cluster-config", "absent.yaml"]),
    ("search-cluster-config-not-ray", "search",
     [*SEARCH, "smoke.yaml", "--address", "auto", "--cluster-config", "{in}/c.yaml"], {"c.yaml": {"a": 1}},
     ["--cluster-config", "available_node_types"]),
    ("search-storage-path-not-a-dir", "search", ["--storage-path", "{in}/file.txt", "--name", "x", "--space",
                                                 "smoke.yaml"], {"file.txt": "text"}, ["file.txt", "--storage-path"]),
    # search: --set
    ("search-set-unclosed-list", "search", [*SEARCH, "smoke.yaml", "--set", "views.ops=[rrc"], {},
     ["views.ops=[rrc", "not valid YAML"]),
    ("search-set-unclosed-map", "search", [*SEARCH, "smoke.yaml", "--set", "train.tau={"], {}, ["train.tau"]),
    ("search-set-no-equals", "search", [*SEARCH, "smoke.yaml", "--set", "train.tau"], {}, ["train.tau", "key=value"]),
    ("search-set-unknown-key", "search", [*SEARCH, "smoke.yaml", "--set", "train.tauu=0.1"], {}, ["train.tauu"]),
    ("search-set-out-of-range", "search", [*SEARCH, "smoke.yaml", "--set", "train.tau=-1"], {}, ["train.tau", "-1"]),
    # search: space files
    ("space-not-yaml", "search", [*SEARCH, "{in}/s.yaml"], {"s.yaml": "params: [a"}, ["s.yaml", "not valid YAML"]),
    ("space-params-list", "search", [*SEARCH, "{in}/s.yaml"], {"s.yaml": space(params=["train.tau"])},
     ["s.yaml", "params", "mapping"]),
    ("space-magnitudes-list", "search", [*SEARCH, "{in}/s.yaml"], {"s.yaml": smoke_ops(magnitudes=["noise"])},
     ["s.yaml", "ops.magnitudes", "mapping"]),
    ("space-base-list", "search", [*SEARCH, "{in}/s.yaml"], {"s.yaml": space(base=["train.tau"])}, ["s.yaml", "base"]),
    ("space-when-list", "search", [*SEARCH, "{in}/s.yaml"],
     {"s.yaml": space(params={"train.tau": {"float": [0.1, 0.2], "when": ["views.mixback"]}})},
     ["s.yaml", "params.train.tau.when"]),
    ("space-unknown-top-key", "search", [*SEARCH, "{in}/s.yaml"], {"s.yaml": space(paramz={})}, ["s.yaml", "paramz"]),
    ("space-unknown-op", "search", [*SEARCH, "{in}/s.yaml"], {"s.yaml": smoke_ops(candidates=["rrc", "warp"])},
     ["s.yaml", "ops.candidates[1]", "warp"]),
    ("space-bad-range", "search", [*SEARCH, "{in}/s.yaml"], {"s.yaml": space(params={"train.tau": {"float": [1, 0.1]}})},
     ["s.yaml", "params.train.tau", "range"]),
    ("space-trials-zero", "search", [*SEARCH, "{in}/s.yaml"], {"s.yaml": space(trials={"num_samples": 0})},
     ["s.yaml", "trials.num_samples"]),
    ("space-base-bad-value", "search", [*SEARCH, "{in}/s.yaml"], {"s.yaml": space(base={"model": {"encoder": "vgg"}})},
     ["s.yaml", "model.encoder"]),
    # search: data folders, checked before the experiment dir exists
    ("search-data-missing", "search", [*SEARCH, "smoke.yaml", "--data", "{in}/nowhere"], {}, ["nowhere", "data folder"]),
    ("search-data-not-fsd", "search", [*SEARCH, "smoke.yaml", "--data", "{in}"], {}, ["FSDnoisy18k.audio_train"]),
    ("search-data-bad-csv", "search", [*SEARCH, "smoke.yaml", "--data", "{in}/fsd"], {"fsd": "bad-csv"},
     ["train.csv", "manually_verified"]),
    # search: resuming an experiment with other settings
    ("resume-other-storage", "search", [*OLD, "--storage-url", "sqlite:///{in}/o.db"], {}, ["old", "storage"]),
    ("resume-other-set", "search", [*OLD, "--set", "train.tau=0.5"], {}, ["old", "train.tau"]),
    ("resume-other-num-samples", "search", [*OLD, "--num-samples", "9"], {}, ["old", "num_samples"]),
    ("resume-other-seed", "search", [*OLD, "--seed", "7"], {}, ["old", "sampler_seed"]),
    ("resume-other-asha", "search", [*OLD, "--reduction-factor", "4"], {}, ["old", "asha"]),
    ("resume-damaged-meta", "search", ["--storage-path", "{in}", "--name", "x", "--space", "smoke.yaml"],
     {"x/search.json": "{garbage"}, ["x/search.json", "unreadable"]),
    # train
    ("train-no-config-file", "train", ["--config", "{in}/absent.yaml", "--out", "{work}/t"], {}, ["absent.yaml"]),
    ("train-config-not-yaml", "train", ["--config", "{in}/c.yaml", "--out", "{work}/t"], {"c.yaml": "train: [1"},
     ["c.yaml", "not valid YAML"]),
    ("train-config-list", "train", ["--config", "{in}/c.yaml", "--out", "{work}/t"], {"c.yaml": ["train"]},
     ["c.yaml", "config", "mapping"]),
    ("train-config-unknown-key", "train", ["--config", "{in}/c.yaml", "--out", "{work}/t"],
     {"c.yaml": {"train": {"tauu": 1}}}, ["c.yaml", "train.tauu"]),
    ("train-set-unclosed-list", "train", ["--set", "views.ops=[rrc", "--out", "{work}/t"], {}, ["views.ops"]),
    ("train-set-op-params-list", "train", ["--set", "views.op_params=[1]", "--out", "{work}/t"], {},
     ["views.op_params"]),
    ("train-set-op-param-value", "train", ["--set", "views.op_params={rrc: {scale_min: abc}}", "--out", "{work}/t"],
     {}, ["views.op_params.rrc", "scale_min"]),
    ("train-set-not-a-section", "train", ["--set", "train.tau.x=1", "--out", "{work}/t"], {}, ["train.tau"]),
    ("train-set-seed-float", "train", ["--set", "seed=1.5", "--out", "{work}/t"], {}, ["seed", "1.5"]),
    ("train-data-missing", "train", ["--data", "{in}/nowhere", "--out", "{work}/t"], {}, ["nowhere", "data folder"]),
    ("train-data-not-fsd", "train", ["--data", "{in}", "--out", "{work}/t"], {}, ["FSDnoisy18k.audio_train"]),
    # retrain
    ("retrain-no-dir", "retrain", ["{in}/absent", "--out", "{work}/r"], {}, ["absent", "no such"]),
    ("retrain-not-experiment", "retrain", ["{in}", "--out", "{work}/r"], {}, ["search.json"]),
    ("retrain-seeds-0", "retrain", ["{runs}/old", "--seeds", "0", "--out", "{work}/r"], {}, ["--seeds"]),
    ("retrain-top-0", "retrain", ["{runs}/old", "--top", "0", "--out", "{work}/r"], {}, ["--top"]),
    ("retrain-downstream-epochs-0", "retrain", ["{runs}/old", "--downstream-epochs", "0", "--out", "{work}/r"], {},
     ["--downstream-epochs"]),
    ("retrain-cpus-0", "retrain", ["{runs}/old", "--cpus-per-job", "0", "--out", "{work}/r"], {}, ["--cpus-per-job"]),
    ("retrain-set-unclosed-list", "retrain", ["{runs}/old", "--set", "views.ops=[rrc", "--out", "{work}/r"], {},
     ["views.ops"]),
    ("retrain-no-complete-trial", "retrain", ["{runs}/old", "--out", "{work}/r"], {}, ["old", "no complete trial"]),
    ("retrain-damaged-meta", "retrain", ["{in}/x", "--out", "{work}/r"], {"x/search.json": "{garbage"},
     ["x/search.json", "unreadable"]),
    # analysis
    ("analysis-no-dir", "analysis", ["{in}/absent", "--out", "{work}/a"], {}, ["absent"]),
    ("analysis-not-experiment", "analysis", ["{in}", "--out", "{work}/a"], {}, ["search.json"]),
    ("analysis-damaged-meta", "analysis", ["{in}/x", "--out", "{work}/a"], {"x/search.json": "{garbage"},
     ["x/search.json", "unreadable"]),
    ("analysis-incomplete-meta", "analysis", ["{in}/x", "--out", "{work}/a"], {"x/search.json": '{"space": "a"}'},
     ["x/search.json", "space_digest"]),
]


def _write_fsd_with_bad_csv(root: Path) -> None:
    for sub in ("FSDnoisy18k.audio_train", "FSDnoisy18k.audio_test", "FSDnoisy18k.meta"):
        (root / sub).mkdir(parents=True)
    (root / "FSDnoisy18k.meta" / "train.csv").write_text(
        "fname,label,aso_id,manually_verified,noisy_small\na.wav,Rain,x,maybe,0\n")
    (root / "FSDnoisy18k.meta" / "test.csv").write_text("fname,label,aso_id\nb.wav,Rain,x\n")


def _write(inputs: Path, name: str, data) -> None:
    if data == "bad-csv":
        _write_fsd_with_bad_csv(inputs / name)
    else:
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_text(data if isinstance(data, str) else yaml.safe_dump(data))


def started(monkeypatch, runs: Path, name: str) -> Path:
    """An experiment as a search leaves it once it has started: search.json (the real one, from the CLI's
    own checks) and the driver's lock file. The search itself (Ray, training) is not run here."""
    monkeypatch.setattr(search_cli, "run", lambda args, space, exp_dir, meta, *rest, **kw: write_meta(
        exp_dir, meta) or 0)
    assert search_cli.main(["--storage-path", str(runs), "--name", name, "--space", "smoke.yaml"]) == 0
    monkeypatch.undo()
    return runs / name


def snapshot(root: Path) -> dict[str, tuple[int, int] | str]:
    """Every file's size and mtime and every folder under ``root``, but the lock file of an existing
    experiment dir: every driver takes it (and writes its host and pid into it) before it reads the
    experiment."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if p.name != LOCK_FILE}


@pytest.mark.parametrize(("entry", "argv", "files", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys, entry, argv, files,
                                                              words):
    runs, inputs, work = tmp_path / "runs", tmp_path / "in", tmp_path / "work"
    inputs.mkdir()
    work.mkdir()
    started(monkeypatch, runs, "old")
    for name, data in files.items():
        _write(inputs, name, data)
    monkeypatch.chdir(work)  # a default output folder (runs/...) would show up here
    before = snapshot(tmp_path)
    capsys.readouterr()
    argv = [a.replace("{runs}", str(runs)).replace("{work}", str(work)).replace("{in}", str(inputs)) for a in argv]
    code = ENTRY[entry](argv)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert snapshot(tmp_path) == before  # no folder created, the existing experiment untouched


def test_the_table_is_large_enough():
    assert len(CASES) >= 30 and {c[1] for c in CASES} == set(ENTRY)


def test_a_corrected_rerun_works_under_the_same_name(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    argv = ["--storage-path", str(runs), "--name", "fix", "--space", "smoke.yaml"]
    assert search_cli.main([*argv, "--data", str(tmp_path / "nowhere")]) == 2
    assert not runs.exists()
    exp = started(monkeypatch, runs, "fix")
    assert json.loads((exp / "search.json").read_text())["overrides"]["train.epochs"] == SMOKE["epochs"]
    assert sorted(p.name for p in exp.iterdir()) == ["driver.lock", "search.json"]
