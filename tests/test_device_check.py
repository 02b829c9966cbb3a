"""``python -m benchmarks.device_check --quick --device cpu``: the one-command GPU check cannot rot.

On a CPU it runs every check at tiny sizes; the report must name every GPU measurement it makes and
every check must pass (the views equal the reference, the kNN vote equals the CPU's, the loss falls,
resume is bitwise on a CPU, the trainer processes answer)."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.device_check import CHECKS


def test_quick_cpu_run_passes_and_names_every_gpu_measurement(tiny_store, tmp_path):
    out = tmp_path / "dc"
    run = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--quick", "--device", "cpu",
                          "--store", str(tiny_store.path), "--out", str(out)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "device_check.json").read_text())["results"]
    report = (out / "device_check.md").read_text()
    for name, what in CHECKS.items():
        assert results[name]["ok"], (name, results[name])
        assert f"## {name}: pass" in report and what in report
    assert results["resume"]["default_mode"]["bitwise"]  # a CPU resumes bit for bit
    assert results["pretrain"]["loss_per_epoch"][-1] < results["pretrain"]["loss_per_epoch"][0]
    modes = {(r["encoder"], r["config"]) for r in results["throughput"]["rows"]}
    assert {("vgg_like", m) for m in ("fp32", "bf16", "bf16+cl")} <= modes


def test_refuses_a_missing_store_before_writing(tmp_path):
    run = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--device", "cpu", "--store",
                          str(tmp_path / "nope"), "--out", str(tmp_path / "o")], check=False, capture_output=True,
                         text=True)
    assert run.returncode == 2 and run.stderr.startswith("error: --store") and not (tmp_path / "o").exists()
