"""``python -m benchmarks.device_check --quick --device cpu``: the one-command GPU check cannot rot.

On a CPU it runs every check at tiny sizes; the report must name every GPU measurement it makes and
every check must pass: the views equal the reference, the kNN vote equals a float64 reference of the
protocol, every throughput row is measured and runs as asked, the loss falls, resume is bitwise on a
CPU, the sharing trainer processes all measure, at the same time."""

from __future__ import annotations

import json
import sys

import children
import pytest

from benchmarks.device_check import CHECKS


@pytest.mark.slow
def test_quick_cpu_run_passes_and_names_every_gpu_measurement(tiny_store, tmp_path):
    out = tmp_path / "dc"
    run = children.run([sys.executable, "-m", "benchmarks.device_check", "--quick", "--device", "cpu",
                        "--store", str(tiny_store.path), "--out", str(out)], 600, "the quick CPU device check")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "device_check.json").read_text())["results"]
    report = (out / "device_check.md").read_text()
    for name, what in CHECKS.items():
        assert results[name]["ok"], (name, results[name])
        assert f"## {name}: pass" in report and what in report
    assert results["resume"]["default_mode"]["bitwise"]  # a CPU resumes bit for bit
    assert results["pretrain"]["loss_per_epoch"][-1] < results["pretrain"]["loss_per_epoch"][0]
    modes = {(r["encoder"], r["config"]): r for r in results["throughput"]["rows"]}
    assert {("vgg_like", m) for m in ("fp32", "bf16", "bf16+cl")} <= set(modes)
    assert all(r["runs_as"] == r["config"] and r["clips_per_s"] > 0 for r in modes.values())  # bf16 really ran
    knn = results["knn"]
    assert knn["clips_differing_from_reference"] == 0 and knn["clips_compared_with_reference"] >= knn["clips"] / 2
    assert knn["balanced_acc_device"] == knn["balanced_acc_reference"]
    (sharing,) = results["sharing"]["rows"]
    assert len(sharing["per_process_clips_per_s"]) == 2 and sharing["all_measured_at_once_s"] > 0


def test_refuses_a_missing_store_before_writing(tmp_path):
    run = children.run([sys.executable, "-m", "benchmarks.device_check", "--device", "cpu", "--store",
                        str(tmp_path / "nope"), "--out", str(tmp_path / "o")], 120, "the refusal of a missing store")
    assert run.returncode == 2 and run.stderr.startswith("error: --store") and not (tmp_path / "o").exists()
