"""preprocess/workers.py: one result per task, whatever happens to the pool."""
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
