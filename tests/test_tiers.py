"""The suite's two tiers: a test not marked ``slow`` cannot start a process (``conftest._SpawnGuard``).

``pytest -m "not slow"`` is the fast, in-process lane; everything that starts a process is in the
slow tier. Rather than trusting every author to remember, conftest refuses a process to a fast test;
these tests check that it does, both ways a process starts, and that a slow test is left alone.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import conftest
import pytest


def test_a_fast_test_that_starts_a_subprocess_is_refused_and_told_to_mark_itself_slow(
    request: pytest.FixtureRequest,
) -> None:
    me = request.node.nodeid
    with pytest.raises(conftest.SpawnInFastLaneError, match=r"is not marked slow: mark it @pytest\.mark\.slow"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    with pytest.raises(OSError) as swallowed:  # code that catches OSError does not get away with it either
        try:
            subprocess.run(["true"], check=True)
        except conftest.SpawnInFastLaneError as exc:
            raise OSError("what a careless caller would swallow") from exc
    assert isinstance(swallowed.value.__cause__, conftest.SpawnInFastLaneError)
    # The guard remembers, so that the report fails the test even when the error was swallowed: taken
    # back here, or this test would fail for doing what it tests.
    assert conftest._SPAWN_GUARD.refused.pop(me) == [
        f"subprocess {[sys.executable, '-c', 'pass']!r}",
        "subprocess ['true']",
    ]


def test_a_fast_test_that_starts_a_worker_process_is_refused(request: pytest.FixtureRequest) -> None:
    worker = multiprocessing.get_context("spawn").Process(target=print, name="the-worker")
    with pytest.raises(conftest.SpawnInFastLaneError, match="multiprocessing process 'the-worker'"):
        worker.start()
    assert conftest._SPAWN_GUARD.refused.pop(request.node.nodeid) == ["multiprocessing process 'the-worker'"]


@pytest.mark.slow  # starts a process, on purpose
def test_a_slow_test_may_start_processes() -> None:
    assert subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True).stdout == "ok\n"
    worker = multiprocessing.get_context("spawn").Process(target=print)
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
