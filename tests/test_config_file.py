"""``--config``: a run-config file fixed for every trial of a search (the shipped CPU setting,
``search_spaces/configs/cpu_small.yaml``), between the space's base and ``--set``."""

import subprocess
import sys

import pytest

from uclser_tune.config import ConfigError, config_from_dict, load_overrides
from uclser_tune.search import cli as search_cli
from uclser_tune.search.spaces import CONFIGS_DIR


def test_the_cpu_setting_is_the_one_the_experiments_state():
    flat = load_overrides(CONFIGS_DIR / "cpu_small.yaml")
    assert flat == {"data.root": "synthetic", "data.synth_size": "small", "model.encoder": "resnet18",
                    "model.width": 0.125, "model.proj_hidden": 128, "model.proj_dim": 64, "eval.knn_k": 20}
    cfg = config_from_dict({}).replace(flat)
    assert (cfg.model.width, cfg.eval.knn_k, cfg.data.synth_size) == (0.125, 20, "small")


def test_a_bad_file_names_itself_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {width: -1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: model\.width"):
        load_overrides(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: expected a mapping"):
        load_overrides(bad)


def test_the_search_applies_it_over_the_space_and_under_set(tmp_path, monkeypatch):
    seen = {}

    def stand_in(args, space, exp_dir, meta, *rest, **kw):
        seen.update(meta["overrides"])
        return 0

    monkeypatch.setattr(search_cli, "run", stand_in)
    assert search_cli.main(["--space", "smoke.yaml", "--config", "cpu_small.yaml", "--set", "model.width=0.25",
                            "--storage-path", str(tmp_path)]) == 0
    # smoke.yaml's base says width 0.125, proj 64/32 and knn_k 10: the config file wins over the space
    assert (seen["model.proj_hidden"], seen["eval.knn_k"], seen["data.synth_size"]) == (128, 20, "small")
    assert seen["model.width"] == 0.25  # and --set over the config file


def test_a_bad_config_file_is_one_error_line_and_writes_nothing(tmp_path):
    (tmp_path / "c.yaml").write_text("eval: {knn_k: zero}\n")
    out = subprocess.run([sys.executable, "-m", "uclser_tune.search", "--space", "smoke.yaml", "--config",
                          str(tmp_path / "c.yaml"), "--storage-path", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"error: {tmp_path / 'c.yaml'}: eval.knn_k")
    assert not (tmp_path / "runs").exists()
