"""preprocess/workers.py: one result per task, whatever happens to the pool."""
import multiprocessing
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


def test_the_watchdog_reads_one_snapshot_of_the_start_times(monkeypatch):
    """The same race, made certain: another process flips one task between running (its start time)
    and finished (-1) while the watchdog looks 2,000 times. Not a single kill may follow."""
    context = multiprocessing.get_context("fork")
    started, pids = context.RawArray("d", 100_000), context.RawArray("i", 100_000)
    stop = context.Event()

    def flip() -> None:
        while not stop.is_set():
            for _ in range(1000):
                started[50_000] = time.time()
                started[50_000] = -1.0

    kills = []
    monkeypatch.setattr(workers, "_started", started)
    monkeypatch.setattr(workers, "_pids", pids)
    monkeypatch.setattr(workers.os, "kill", lambda pid, sig: kills.append(pid))
    flipper = context.Process(target=flip)
    flipper.start()
    try:
        for _ in range(2000):
            workers._kill_running(older_than=600.0)
    finally:
        stop.set()
        flipper.join(10)
    assert kills == []
