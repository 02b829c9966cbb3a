"""The analysis recovers a planted truth: a small version of the planted-truth check's search (augs.yaml
with ``--surrogate``, 48 trials of which the first 16 are the start-up design, ASHA, 1 CPU per trial,
Ray on 127.0.0.8) with a TRUTH file of its own, checked
claim by claim with ``experiments.recovery``, and the CLI's report reading the same rows."""

import sys

import children
import optuna
import pandas as pd
import pytest

from analysis.run import analyse
from experiments import recovery

pytestmark = pytest.mark.slow

# not one of search_spaces/truths/: the claims must hold for other truths too
TRUTH = """
base: 0.4
noise_sd: 0.01
effects:
  - {when: {views.mixback: true}, add: 0.10}
  - {when: {op: time_reversal}, add: -0.07}
  - {when: {op: compression}, add: 0.06}
  - {when: {before: [noise, blur]}, add: 0.02}
"""


# 48 trials one at a time (the 16-trial start-up design first, then TPE): about twice a smoke search on
# a quiet machine, and no budget of its own for the search, so a loaded machine gets room here
@pytest.mark.timeout(1800)
def test_small_planted_truth_search_is_recovered(tmp_path):
    truth = tmp_path / "truth.yaml"
    truth.write_text(TRUTH)
    cmd = [sys.executable, "-m", "uclser_tune.search", "--space", "augs.yaml", "--surrogate", str(truth),
           "--name", "planted", "--storage-path", str(tmp_path / "runs"), "--node-ip-address", "127.0.0.8",
           "--num-samples", "48", "--max-epochs", "4", "--grace-period", "1", "--reduction-factor", "2",
           "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--max-concurrent", "1"]
    out = children.run(cmd, None, "the planted-truth search")
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "runs" / "planted"
    table = pd.read_parquet(exp / "trials.parquet")
    assert len(table) == 48 and "PRUNED" in set(table.status)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="planted", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(exp / "optuna.journal"))))
    first = pd.DataFrame([t.params for t in sorted(study.trials, key=lambda t: t.number)[:16]])
    assert (first.filter(like="use_").mean() == 0.5).all()  # the start-up design: each op on in 8 of 16
    claims = recovery.check(exp, truth)
    assert [c.claim for c in claims] == [
        "best_config.yaml has the planted best level of every effect >= 4 noise sd",
        "views.mixback ranked first by importance (it carries the largest effect)",
        "every planted op effect >= 4 noise sd has p_holm < 0.05 with the right sign",
        "at most one op without a planted effect has a CI excluding 0"]
    assert all(c.ok for c in claims), recovery.table(claims)
    report = analyse(exp).read_text()
    assert "op:time_reversal on vs off: −0.0" in report and "mixback on vs off: +0.0" in report
