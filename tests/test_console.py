"""The search's console: one compact line per trial event and a status line, checked on trial events
written by hand (the lines and counts a person reading it must see), without Ray running."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

from uclser_tune.search.console import Console, short

KEYS = [("train.tau", None), ("views.mixback", None), ("views.mixback_alpha", "views.mixback"), ("views.ops", None)]


def trial(n: int, mixback: bool = True, **last) -> SimpleNamespace:
    run_config = {"train": {"tau": 0.123456}, "views": {"mixback": mixback, "mixback_alpha": 0.05,
                                                        "ops": ["rrc", "noise"]}}
    return SimpleNamespace(trial_id=f"t{n}", status="RUNNING", config={"run_config": run_config, "optuna_number": n},
                           last_result=last or None, error_file=None)


def lines(out: io.StringIO) -> list[str]:
    return [re.sub(r"^\[\s*[\d:]+\] ", "", line) for line in out.getvalue().splitlines()]


def test_short_forms():
    assert [short(0.123456), short(True), short(False), short(["rrc", "noise"]), short([]), short(128)] == \
        ["0.123", "on", "off", "rrc>noise", "none", "128"]


def test_events_and_the_status_line(tmp_path):
    out = io.StringIO()
    console = Console(KEYS, total=4, status_every_s=1e9, out=out)
    console.setup()
    a, b, c = trial(0), trial(1, mixback=False), trial(2)
    trials = [a, b, c]
    for t in trials:
        console.on_trial_start(0, trials, t)
    for t, epoch, knn in ((a, 1, 0.40), (b, 1, 0.30), (a, 2, 0.45), (c, 1, 0.42)):
        result = {"epoch": epoch, "max_epochs": 2, "knn_acc": knn}
        t.last_result = result
        console.on_trial_result(0, trials, t, result)
    console.on_trial_complete(0, trials, a)  # the full budget
    a.status = "TERMINATED"
    console.on_trial_complete(0, trials, b)  # ASHA stopped it after epoch 1
    b.status = "TERMINATED"
    (tmp_path / "error.txt").write_text("Traceback (most recent call last):\n  ...\nNoCudaError: node 10.0.0.7: no CUDA\n")
    c.error_file = str(tmp_path / "error.txt")
    console.on_trial_error(0, trials, c)
    got = lines(out)
    assert got[:3] == ["#0 start  tau=0.123 mixback=on mixback_alpha=0.05 ops=rrc>noise",
                       "#1 start  tau=0.123 mixback=off ops=rrc>noise",  # alpha is not searched without mix-back
                       "#2 start  tau=0.123 mixback=on mixback_alpha=0.05 ops=rrc>noise"]
    assert got[3:7] == ["#0 epoch 1/2 kNN 0.400", "#1 epoch 1/2 kNN 0.300", "#0 epoch 2/2 kNN 0.450",
                        "#2 epoch 1/2 kNN 0.420"]
    assert got[7] == "#0 done, 2 epochs (kNN 0.450)"
    assert re.fullmatch(r"1/4 trials done \(0 stopped early, 0 failed\), 2 running; best kNN 0\.450 \(#0, epoch 2\); "
                        r"0:00 elapsed, ETA ~0:00", got[8]), got[8]
    assert got[9] == "#1 stopped early by ASHA at epoch 1/2 (kNN 0.300)"
    assert got[10].startswith("2/4 trials done (1 stopped early, 0 failed), 1 running; best kNN 0.450 (#0, epoch 2)")
    assert got[11] == "#2 failed: NoCudaError: node 10.0.0.7: no CUDA"
    assert got[12].startswith("3/4 trials done (1 stopped early, 1 failed), 0 running;")
    c.status = "ERROR"
    console.on_experiment_end(trials)  # nothing changed: no second identical status line
    assert len(lines(out)) == 13 and not any("{" in line for line in lines(out))


def test_a_trial_that_reported_an_error_is_counted_failed():
    out = io.StringIO()
    console = Console(KEYS, total=1, out=out)
    t = trial(0, epoch=3, max_epochs=8, knn_acc=float("nan"), error="loss is nan at epoch 3")
    console.on_trial_complete(0, [t], t)
    got = lines(out)
    assert got[0] == "#0 failed: loss is nan at epoch 3 (kNN nan)"
    assert got[1].startswith("1/1 trials done (0 stopped early, 1 failed), 0 running; no kNN yet") and "ETA" not in got[1]
