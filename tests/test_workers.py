"""preprocess/workers.py: one result per task, whatever happens to the pool."""
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from preprocess import workers


def square(x: int) -> int:
    return x * x


def nothing() -> None:
    pass


def test_a_pool_that_breaks_while_tasks_are_handed_out_loses_none(monkeypatch):
    """A pool can break between two submissions (a worker died at start): submit() then raises
    BrokenProcessPool, and the tasks of that submission must go back to the queue, not vanish."""
    calls = []

    class BreaksOnSecondSubmit(ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise BrokenProcessPool("A child process terminated abruptly")
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(workers, "ProcessPoolExecutor", BreaksOnSecondSubmit)
    tasks = list(range(40))
    results = list(workers.resilient_map(square, tasks, 2, nothing, (), 30.0, lambda task, reason: None))
    assert len(calls) > 2  # the pool was restarted after the break
    assert sorted(results) == [x * x for x in tasks]  # every task once: none lost, none twice


def brief(x: int) -> int:
    time.sleep(0.00005)
    return x


def test_healthy_workers_are_never_killed_by_the_watchdog(monkeypatch):
    """The workers write their tasks' start times while the watchdog reads them. Two passes over the
    live array (`started > 0`, then `started < now - timeout`) saw a task running in the first and
    finished (-1) in the second, and killed a healthy worker: 18 pool restarts in a 28k-clip render.
    Many short tasks make that window likely; a healthy run must use one pool and kill nothing."""
    pools, kills = [], []

    class Counted(ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(1)
            super().__init__(*args, **kwargs)

    real_kill = os.kill

    def kill(pid, sig):
        kills.append((pid, sig))
        return real_kill(pid, sig)

    monkeypatch.setattr(workers, "ProcessPoolExecutor", Counted)
    monkeypatch.setattr(workers.os, "kill", kill)
    tasks = list(range(20000))
    results = list(workers.resilient_map(brief, tasks, 2, nothing, (), 600.0, lambda task, reason: None))
    assert sorted(results) == tasks
    assert kills == [] and len(pools) == 1
