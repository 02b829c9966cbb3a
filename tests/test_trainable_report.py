"""The trial's report reads its memory (USS, from /proc/<pid>/smaps: tens of ms) at most every few
seconds, the first report always; every report carries the last value read."""

from types import SimpleNamespace

from uclser_tune.search.trainable import UssMeter


def test_uss_is_read_on_the_first_report_and_then_at_most_every_period(monkeypatch):
    reads = []

    def memory_full_info():
        reads.append(1)
        return SimpleNamespace(uss=len(reads) * 1e6)

    never = UssMeter(every_s=float("inf"))
    monkeypatch.setattr(never.process, "memory_full_info", memory_full_info)
    assert [never() for _ in range(5)] == [1.0] * 5 and len(reads) == 1
    always = UssMeter(every_s=0.0)
    monkeypatch.setattr(always.process, "memory_full_info", memory_full_info)
    assert [always() for _ in range(3)] == [2.0, 3.0, 4.0]
