"""The run config: paper defaults, strict validation naming the key, safe YAML, overrides, the JSON schema,
and the dotted-key helpers."""

import json
import subprocess
import sys

import pytest

from uclser_tune.config import ConfigError, config_from_dict, describe_config, load_config, parse_overrides
from uclser_tune.dotted import MISSING, NotASection, flatten, get_key, set_key, unflatten


def test_defaults_are_the_papers():
    cfg = config_from_dict({})
    assert (cfg.train.tau, cfg.train.batch_size, cfg.train.lr, cfg.train.epochs) == (0.2, 128, 0.03, 500)
    assert (cfg.train.momentum, cfg.train.weight_decay) == (0.9, 1e-4)
    assert [round(f * 500) for f in cfg.train.lr_milestones] == [325, 425]
    assert cfg.views.ops == ["rrc", "compression", "noise"]
    assert (cfg.views.sampling, cfg.views.mixback, cfg.views.mixback_alpha) == ("random", True, 0.05)
    assert (cfg.eval.knn_k, cfg.eval.patch_hop, cfg.views.patch_frames) == (200, 50, 101)
    assert (cfg.downstream.linear_lr, cfg.downstream.finetune_lr, cfg.downstream.epochs) == (0.1, 0.01, 200)


@pytest.mark.parametrize(
    "data, words",
    [
        ({"trian": {}}, ["unknown key 'trian'", "train"]),
        ({"train": {"tua": 0.1}}, ["train.tua: unknown key", "tau"]),
        ({"train": {"tau": 0}}, ["train.tau", "> 0"]),
        ({"train": {"batch_size": "big"}}, ["train.batch_size", "integer"]),
        ({"model": {"encoder": "vgg"}}, ["model.encoder", "'vgg_like'", "'crnn'"]),
        ({"views": {"sampling": "near"}}, ["views.sampling", "'separation'"]),
        ({"views": {"ops": ["rrc", "blurr"]}}, ["views.ops[1]", "blurr", "time_shift"]),
        ({"views": {"ops": ["noise", "noise"]}}, ["views.ops[1]", "twice"]),
        ({"views": {"sampling": "separation", "separation": 0}}, ["views.separation"]),
        ({"views": {"mixback": "yes"}}, ["views.mixback", "true or false"]),
        ({"train": {"lr_milestones": [0.9, 0.5]}}, ["train.lr_milestones"]),
        ({"train": {"device": "tpu"}}, ["train.device"]),
        ({"train": {"lr": float("nan")}}, ["train.lr"]),
        ({"model": {"width": 9}}, ["model.width", "got 9", "allowed range (0.0, 8.0]"]),
        ({"views": {"op_params": {"noise": {"sigma_max": -1}}}}, ["views.op_params.noise", "noise.sigma_max"]),
        ({"views": {"op_params": {"warp": {}}}}, ["views.op_params.warp", "'warp'"]),
        ({"seed": True}, ["seed", "integer"]),
        ({"train": {"tau": "0.1"}}, ["train.tau", "number"]),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(data, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    for word in words:
        assert word in str(err.value)


def test_yaml_round_trip_and_overrides(tmp_path):
    cfg = config_from_dict({"train": {"tau": 0.1}, "views": {"ops": ["specaugment", "rrc"]}})
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path, ["train.batch_size=64", "views.ops=[noise]"])
    assert again.train.tau == 0.1 and again.train.batch_size == 64 and again.views.ops == ["noise"]
    assert load_config(path) == cfg


def test_load_is_safe_and_errors_name_the_file(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_config(path)
    path.write_text("train: {tau: -1}\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml: train\.tau"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_override_parsing_and_unknown_override():
    assert parse_overrides(["a.b=0.5", "c=[1, 2]", "d=true"]) == {"a.b": 0.5, "c": [1, 2], "d": True}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.tau"])
    with pytest.raises(ConfigError, match="views.samplin"):
        config_from_dict({}).replace({"views.samplin": "same"})


def test_describe_lists_every_key():
    text = describe_config()
    for key in ("train.tau", "views.mixback_alpha", "model.width", "eval.knn_k", "downstream.freeze_bn"):
        assert key in text


def test_whole_floats_are_integers_and_written_values_keep_their_type():
    cfg = config_from_dict({"seed": 2.0, "train": {"epochs": 3.0, "tau": 1}})
    assert (cfg.seed, cfg.train.epochs) == (2, 3) and type(cfg.seed) is int and type(cfg.train.tau) is float
    cfg = config_from_dict({"views": {"op_params": {"noise": {"sigma_max": 1}}}})
    assert cfg.views.op_params == {"noise": {"sigma_max": 1}}  # kept as written: the op completes it when built


def test_the_schema_takes_op_and_encoder_names_from_their_registries():
    from uclser_tune.models import ENCODERS
    from uclser_tune.views.ops import OPS

    out = subprocess.run([sys.executable, "-m", "uclser_tune.train", "--schema"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    defs = schema["$defs"]
    assert defs["ModelConfig"]["properties"]["encoder"]["enum"] == list(ENCODERS)
    assert defs["ViewsConfig"]["properties"]["ops"]["items"]["enum"] == list(OPS)
    assert defs["TrainConfig"]["properties"]["tau"]["exclusiveMinimum"] == 0


def test_dotted_keys_get_set_flatten_and_unflatten():
    tree = {"train": {"tau": 0.2}, "views": {"op_params": {"noise": {"sigma_max": 0.02}}, "ops": ["rrc"]}}
    flat = flatten(tree, ("views.op_params",))
    assert flat == {"train.tau": 0.2, "views.op_params": {"noise": {"sigma_max": 0.02}}, "views.ops": ["rrc"]}
    assert flatten(tree)["views.op_params.noise.sigma_max"] == 0.02
    assert unflatten(flat) == tree and unflatten(flatten(tree)) == tree
    assert get_key(tree, "views.op_params.noise.sigma_max") == 0.02
    assert get_key(tree, "train.lr") is MISSING and get_key(tree, "train.tau.x", None) is None
    set_key(tree, "model.width", 0.5)
    assert tree["model"] == {"width": 0.5}
    with pytest.raises(NotASection, match="train.tau is not a section"):
        set_key(tree, "train.tau.x", 1)
