"""benchmarks.scale's arithmetic, on start times written by hand."""

from __future__ import annotations

import json

import pytest

from benchmarks.scale import rate_per_tenth, report_gaps


def test_rate_per_tenth_on_a_run_that_slows_down():
    # 30 trials: the first 15 start 1 s apart, the last 15 start 3 s apart
    starts = [float(i) for i in range(15)] + [14.0 + 3 * i for i in range(1, 16)]
    rates = rate_per_tenth(list(reversed(starts)))  # order of the study does not matter
    # tenths of 3 trials: trials 0-14 start at 0..14 (2 gaps of 1 s), trials 15-29 at 17..59 (2 gaps of 3 s)
    assert rates == pytest.approx([1.0] * 5 + [1 / 3] * 5)


def test_a_tenth_without_two_starts_has_no_rate():
    assert rate_per_tenth([0.0, 1.0, 2.0]) == [None] * 10
    assert rate_per_tenth([5.0] * 20) == [None] * 10


def test_report_gaps_are_within_one_trial(tmp_path):
    for name, times in {"trial_a": [10.0, 10.5, 11.5], "trial_b": [100.0, 100.25]}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text("".join(json.dumps({"reported_at": t}) + "\n" for t in times))
    assert sorted(report_gaps(tmp_path)) == [0.25, 0.5, 1.0]


def test_the_random_space_is_augs_with_only_its_sampler_changed(tmp_path):
    from benchmarks.scale import space_for
    from uclser_tune.search.spaces import load_space

    assert space_for("tpe", tmp_path) == "augs.yaml"
    tpe, random = load_space("augs.yaml"), load_space(space_for("random", tmp_path))
    assert (tpe.sampler, random.sampler) == ("tpe", "random")
    assert {k: v for k, v in vars(random).items() if k not in ("sampler", "path", "digest")} == {
        k: v for k, v in vars(tpe).items() if k not in ("sampler", "path", "digest")}
