"""Waiting on child processes with a deadline: a read of a child's output or a wait for its exit never
blocks past its deadline, and a missed deadline fails the test naming what was awaited and the child's
last output.

    child = Child(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), "driver")
    line = child.readline(60, "the first epoch line")
    rest = child.read_rest(120, "the output after Ctrl-C")
    child.wait(120, "the exit after Ctrl-C")

``run`` is ``subprocess.run(..., capture_output=True, text=True)`` whose timeout fails the same way.
A daemon thread reads the pipe line by line, so a child that fills its pipe is never blocked by a test
that is not reading, and a test never blocks on a child that prints nothing.

A timeout of ``None`` means the time the running test has left before its pytest-timeout limit, less
a margin for clean-up: for waits on a whole search, which have no budget of their own (how long a
search takes depends on the machine's load), but still end with the child's output, just before
pytest-timeout would end the test without it. ``conftest.py`` records each test's limit.
"""

from __future__ import annotations

import collections
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

TAIL_LINES = 40
MARGIN_S = 30  # of the test's limit, kept for clean-up after a missed deadline
_test_deadline: float | None = None  # monotonic time of the running test's limit (conftest.py sets it)


def start_test(timeout_s: float | None) -> None:
    """Called as each test starts, with its pytest-timeout limit (None or 0: none)."""
    global _test_deadline
    _test_deadline = time.monotonic() + timeout_s if timeout_s else None


def left(timeout: float | None) -> float:
    """``timeout``, or for None what the running test has left (less the margin)."""
    if timeout is not None:
        return timeout
    if _test_deadline is None:
        return 3600.0
    return max(_test_deadline - MARGIN_S - time.monotonic(), 1.0)


def _tail(text: str | bytes | None, lines: int = TAIL_LINES) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])


class Child:
    """A ``Popen`` whose ``stdout`` is a text pipe, read by a thread of its own into a queue of lines.
    ``log``: a file the child writes its other output to (e.g. stderr), quoted in failures too."""

    def __init__(self, proc: subprocess.Popen, name: str, log: Path | None = None):
        self.proc, self.name, self.log = proc, name, log
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False  # the end of the output was taken from the queue
        if proc.stdout is not None:
            threading.Thread(target=self._pump, name=f"read {name}", daemon=True).start()

    def _pump(self) -> None:
        try:
            for line in self.proc.stdout:
                self.tail.append(line.rstrip("\n"))
                self._lines.put(line)
        finally:
            self._lines.put(None)

    def fail(self, why: str, what: str) -> None:
        """Fail the test: what was awaited, why it did not come, and the child's last output."""
        rc = self.proc.poll()
        state = "still running" if rc is None else f"exited with {rc}"
        message = [f"{self.name} (pid {self.proc.pid}, {state}): {why} waiting for {what}",
                   f"--- its last output ({len(self.tail)} lines) ---", *self.tail]
        if self.log is not None and self.log.exists():
            message += [f"--- {self.log.name} ---", _tail(self.log.read_text(errors="replace"))]
        pytest.fail("\n".join(message), pytrace=False)

    def readline(self, timeout: float | None, what: str) -> str:
        """The child's next line; fails if none comes within ``timeout`` seconds or the output ends."""
        timeout = left(timeout)
        if self._ended:
            self.fail("its output had already ended", what)
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if line == "":
            self.fail(f"no line within {timeout:.0f} s", what)
        if line is None:
            self._ended = True
            self.fail("its output ended", what)
        return line

    def read_rest(self, timeout: float | None, what: str) -> str:
        """Everything the child still prints, up to the end of its output, within ``timeout`` seconds."""
        timeout = left(timeout)
        deadline = time.monotonic() + timeout
        lines = []
        while not self._ended:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                line = ""
            if line == "":
                self.fail(f"its output did not end within {timeout:.0f} s", what)
            if line is None:
                self._ended = True
            else:
                lines.append(line)
        return "".join(lines)

    def wait(self, timeout: float | None, what: str) -> int:
        """The child's exit status, within ``timeout`` seconds."""
        timeout = left(timeout)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.fail(f"no exit within {timeout:.0f} s", what)
        raise AssertionError("not reached: fail raises")

    def output(self) -> str:
        """The last lines read so far (for assertion messages)."""
        return "\n".join(self.tail)


def run(cmd: list[str], timeout: float | None, what: str, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` with captured text output; a timeout fails naming ``what`` and the last output."""
    timeout = left(timeout)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired as err:
        expired = err
    pytest.fail(f"{what}: no exit within {timeout:.0f} s ({' '.join(map(str, cmd))[:300]})\n"
                f"--- stdout ---\n{_tail(expired.stdout)}\n--- stderr ---\n{_tail(expired.stderr)}", pytrace=False)


def poll_until(condition, timeout: float | None, what: str, interval: float = 0.2, alive: Child | None = None):
    """Call ``condition()`` every ``interval`` seconds until it returns something true, and return that;
    fails naming ``what`` if ``timeout`` passes first, or if ``alive``'s process ends first."""
    timeout = left(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None and alive.proc.poll() is not None:
            alive.fail("it ended", what)
        if time.monotonic() > deadline:
            if alive is not None:
                alive.fail(f"condition not met within {timeout:.0f} s", what)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)
