"""Mixed precision on the CPU: how 'auto' resolves, that an explicit bf16 is honoured (not silently run in
fp32), fp16 refused on a CPU, and that a bf16 run is finite, resumes and records what ran."""

import sys

import children
import pytest
import torch

from uclser_tune.config import ConfigError, config_from_dict
from uclser_tune.training import load_checkpoint, pretrain, runtime, save_checkpoint

CPU = torch.device("cpu")
TINY = {"model": {"encoder": "resnet18", "width": 0.125, "proj_hidden": 32, "proj_dim": 16},
        "train": {"epochs": 2, "batch_size": 16, "max_batches_per_epoch": 2, "device": "cpu"},
        "eval": {"knn_k": 5}, "data": {"synth_size": "tiny"}}


def tiny_cfg(**train):
    return config_from_dict({**TINY, "train": {**TINY["train"], **train}})


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert runtime.amp_dtype("auto", CPU) == (torch.bfloat16 if native else None)
    assert runtime.amp_dtype("bf16", CPU) == torch.bfloat16  # explicit: honoured either way
    assert runtime.amp_dtype("fp32", CPU) is None
    auto = tiny_cfg().train
    assert runtime.use_channels_last(auto, CPU, "resnet18") is native
    assert runtime.use_channels_last(auto, CPU, "vgg_like") is native
    assert runtime.use_channels_last(auto, CPU, "crnn") is native
    assert runtime.use_channels_last(tiny_cfg(precision="fp32").train, CPU, "resnet18") is False
    assert runtime.use_channels_last(tiny_cfg(precision="fp32", channels_last="on").train, CPU, "crnn") is True
    assert runtime.use_channels_last(tiny_cfg(precision="bf16", channels_last="off").train, CPU, "resnet18") is False


def test_native_bf16_read_from_the_cpu_flags(monkeypatch, tmp_path):
    flags = tmp_path / "cpuinfo"
    monkeypatch.setattr(runtime, "Path", lambda _: flags)
    try:
        for line, native in (("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni", True),
                             ("flags\t: fpu avx512f avx2", False),
                             ("Features\t: fp asimd bf16 i8mm", True), ("flags: amx_tile amx_bf16", True)):
            flags.write_text(f"processor\t: 0\n{line}\n\n")
            runtime.cpu_has_native_bf16.cache_clear()
            assert runtime.cpu_has_native_bf16() is native, line
        flags.unlink()
        runtime.cpu_has_native_bf16.cache_clear()
        assert runtime.cpu_has_native_bf16() is False
    finally:  # a fake answer cached here must not reach later tests, failed or not
        runtime.cpu_has_native_bf16.cache_clear()


def test_fp16_is_refused_on_a_cpu_naming_the_key():
    with pytest.raises(ConfigError, match="train.precision: 'fp16'"):
        runtime.amp_dtype("fp16", CPU)


def test_bf16_run_is_finite_records_its_precision_and_resumes(tiny_store, tmp_path):
    cfg = tiny_cfg(precision="bf16", channels_last="on")
    full = pretrain(cfg, tiny_store, report=lambda m, s: save_checkpoint(s, tmp_path / f"e{m['epoch']}.pt"))
    fp32 = pretrain(tiny_cfg(precision="fp32", channels_last="on", epochs=1), tiny_store)  # epoch 1 is enough
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in full.history)
    assert [m["precision"] for m in full.history] == ["bf16", "bf16"] and full.history[-1]["channels_last"] is True
    assert full.state["precision"] == "bf16" and full.state["channels_last"] is True
    assert fp32.state["precision"] == "fp32" and fp32.history[0]["channels_last"] is True
    # autocast really ran: same seed, views and layout, only the arithmetic differs → a different loss
    assert full.history[0]["loss"] != fp32.history[0]["loss"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in full.state["model"].values())  # fp32 master weights

    resumed = pretrain(cfg, tiny_store, resume=load_checkpoint(tmp_path / "e1.pt"))
    assert [m["loss"] for m in resumed.history] == [m["loss"] for m in full.history]
    assert resumed.history[-1]["knn_acc"] == full.history[-1]["knn_acc"]
    for key, value in full.state["model"].items():
        assert torch.equal(value, resumed.state["model"][key]), key


def test_cli_records_precision_and_refuses_fp16_on_cpu(tiny_store, tmp_path):
    base = [sys.executable, "-m", "uclser_tune.train", "--set", "data.synth_size=tiny", "--set", "model.width=0.125",
            "--set", "train.epochs=1", "--set", "train.max_batches_per_epoch=1", "--set", "train.batch_size=8",
            "--set", "train.device=cpu", "--set", "eval.knn_k=5"]
    refused = children.run(base + ["--set", "train.precision=fp16", "--out", str(tmp_path / "fp16")], 120,
                           "the refusal of fp16")
    assert refused.returncode == 2 and refused.stderr.startswith("error: train.precision: 'fp16'"), refused.stderr
    assert not (tmp_path / "fp16").exists()  # nothing written
    ran = children.run(base + ["--set", "train.precision=bf16", "--out", str(tmp_path / "bf16")], 300, "the bf16 run")
    assert ran.returncode == 0, ran.stderr
    header, row = (tmp_path / "bf16" / "metrics.csv").read_text().splitlines()
    assert dict(zip(header.split(","), row.split(",")))["precision"] == "bf16"
    assert load_checkpoint(tmp_path / "bf16")["precision"] == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_explicit_bf16_warns_only_on_a_cpu_without_native_bf16(monkeypatch, native):
    import warnings

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert runtime.amp_dtype("bf16", CPU) == torch.bfloat16  # honoured either way
        assert runtime.amp_dtype("auto", CPU) == (torch.bfloat16 if native else None)
    assert [str(w.message) for w in caught] == ([] if native else [runtime.BF16_EMULATED])
    assert runtime.resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert runtime.resolve_precision("bf16", CPU) == "bf16"
