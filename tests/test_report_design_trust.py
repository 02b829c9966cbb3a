"""A design search's report states the planted-truth rate measured for designs as the one that applies
to its adjusted effects, and the TPE searches' rate beside it, each with its scope; the shipped design
rate is the committed design-recovery experiment's."""

from pathlib import Path

import pandas as pd

from analysis import report, trust
from analysis.load import Experiment

RESULTS = Path(__file__).resolve().parents[1] / "results"


def experiment(sampler: str | None) -> Experiment:
    table = pd.DataFrame({"optuna_number": range(4), "status": "COMPLETE", "knn_e2": [0.5, 0.6, 0.55, 0.52]})
    space = None if sampler is None else {"sampler": sampler}
    return Experiment(Path("x"), {}, space, table, None, 2, [2], None, "test")


def test_the_shipped_design_rate_is_the_committed_design_recovery():
    table = pd.read_csv(RESULTS / "design_order" / "recovery.csv")
    assert trust.DESIGN_RATES == {trust.ADJUSTED: (int(table["ok"].sum()), len(table))}
    assert "design_order.yaml" in trust.DESIGN_SOURCE and f"{len(table)} sampler seeds" in trust.DESIGN_SOURCE


def test_a_design_report_states_the_design_rate_as_the_one_that_applies_and_the_tpe_rate_with_its_scope():
    kind, line = report.adjusted_trust(experiment("design"))
    ok, n = trust.DESIGN_RATES[trust.ADJUSTED]
    tpe_ok, tpe_n = trust.RATES[trust.ADJUSTED]
    design_rate = f"recovered the planted truth in {ok} of {n} planted-truth searches ({trust.DESIGN_SOURCE})"
    tpe_rate = f"{tpe_ok} of {tpe_n} ({trust.SOURCE})"
    assert kind == "trusted"
    assert design_rate in line and tpe_rate in line
    assert line.index(design_rate) < line.index("that rate applies to this search") < line.index(tpe_rate)
    assert "does not apply here" in line.split(tpe_rate)[1]
    assert report.importance_scope(experiment("design"))[0].startswith(
        f"the evaluators' planted-truth rates below were measured on TPE searches ({trust.SOURCE})")


def test_other_searches_keep_the_tpe_rate_alone():
    for sampler in ("tpe", "random", "grid", None):
        _kind, line = report.adjusted_trust(experiment(sampler))
        assert line == report.trust_line(trust.ADJUSTED, *report.trust(trust.ADJUSTED, trust.RATES))
        assert trust.DESIGN_SOURCE not in line and "does not apply" not in line
        assert report.importance_scope(experiment(sampler)) == []


def test_a_marked_design_rate_is_marked(monkeypatch):
    monkeypatch.setitem(trust.DESIGN_RATES, trust.ADJUSTED, (3, 5))  # 60 %: below TRUSTED, above HIDE
    kind, line = report.adjusted_trust(experiment("design"))
    assert kind == "marked" and line.startswith("adjusted effects READ WITH CARE") and "3 of 5" in line
