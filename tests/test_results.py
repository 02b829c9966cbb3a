"""The results helpers on a hand-made trials table: which trial is best, the top table, the best config
file read back."""

import json

import numpy as np
import pandas as pd

from uclser_tune.config import config_from_dict
from uclser_tune.search.results import best_trial, load_best_config, top_table

COLUMNS = ["encoder", "tau", "batch_size", "sampling", "mixback", "ops"]


def table(rows):
    return pd.DataFrame([{"optuna_number": n, "status": s, "epochs_run": e, "last_knn": k, "best_knn": b,
                          "encoder": "resnet18", "tau": 0.1 * (n + 1), "batch_size": 32, "sampling": "random",
                          "mixback": True, "ops": "rrc"} for n, s, e, k, b in rows])


ROWS = [(0, "COMPLETE", 4, 0.40, 0.45), (1, "PRUNED", 2, 0.90, 0.90), (2, "COMPLETE", 4, 0.55, 0.60),
        (3, "FAIL", 1, np.nan, np.nan), (4, "COMPLETE", 4, 0.50, 0.70), (5, "RUNNING", 3, 0.95, 0.95)]


def test_best_trial_is_the_complete_trial_with_the_highest_final_knn():
    best = best_trial(table(ROWS))
    assert best["optuna_number"] == 2  # not the pruned or running ones scoring higher, nor the best-epoch 0.70
    assert best_trial(table([r for r in ROWS if r[1] != "COMPLETE"])) is None


def test_top_table_lists_complete_trials_by_final_knn():
    text = top_table(table(ROWS), n=2)
    lines = [line for line in text.splitlines() if line.startswith("|") and "optuna_number" not in line
             and not set(line) <= set("|-: ")]
    assert [int(line.split("|")[1]) for line in lines] == [2, 4]
    assert "0.5500" in lines[0] and "PRUNED" not in text
    assert top_table(table([r for r in ROWS if r[1] != "COMPLETE"])) == "(no complete trial)"


def test_load_best_config_reads_the_file_after_its_comment_line(tmp_path):
    cfg = config_from_dict({"train": {"tau": 0.37, "epochs": 9}, "views": {"ops": ["noise", "rrc"]}})
    (tmp_path / "best_config.yaml").write_text("# " + json.dumps({"optuna_number": 2}) + "\n" + cfg.to_yaml())
    assert load_best_config(tmp_path).to_dict() == cfg.to_dict()
