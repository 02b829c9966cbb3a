"""The trust rates the analysis ships are those its planted-truth experiment measured."""

from analysis import trust
from experiments import evaluator_recovery


def test_the_shipped_rates_are_the_committed_experiments():
    assert trust.RATES == evaluator_recovery.rates()
    assert trust.ADJUSTED in trust.RATES
