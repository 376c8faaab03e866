"""A process pool that survives its workers: `resilient_map(func, tasks, ...)` yields func(task) for
every task, whatever happens to the processes computing them.

A worker that dies (the kernel's OOM killer, a decoder crash, kill -9) breaks a ProcessPoolExecutor
(BrokenProcessPool); one busy with a task for longer than `timeout` is killed by the watchdog, which
does the same. The tasks that were running then are retried one by one, each in a fresh process
(`_isolated`): a task that kills its process (or times out) again becomes `failed(task, reason)`, the
others give their normal result. The pool is restarted for the tasks not yet done. Nothing waits for
ever, and the caller always gets one result per task.

Per task, shared memory (RawArray, inherited by the forked workers) holds the time it started (0: not
started, -1: finished) and the pid running it: that is how a dead or stuck worker's task is known.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from preprocess.cli import SpecVisionError

MAX_CHUNK = 16     # tasks per worker message: amortises pickling, evens the last chunks
IN_FLIGHT = 4      # chunks queued per worker
WATCHDOG_S = 1.0   # how often the main process looks for dead or stuck workers
MAX_EMPTY_BREAKS = 3  # pools that break before running any task: give up (exit 2)

# Set in the main process before a pool forks; read by its workers.
_func = None
_tasks: list = []
_started = None
_pids = None


def resilient_map(func, tasks: list, workers: int, initializer, initargs: tuple, timeout: float, failed):
    """Yield func(task) for every task (in completion order) from `workers` forked processes.

    `failed(task, reason)` makes the result of a task whose process died or ran past `timeout` s.
    """
    global _func, _tasks, _started, _pids
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                          else None)
    _func, _tasks = func, tasks
    _started, _pids = context.RawArray("d", len(tasks)), context.RawArray("i", len(tasks))
    chunk = max(1, min(MAX_CHUNK, len(tasks) // (workers * 16)))
    pending, empty_breaks = collections.deque(range(len(tasks))), 0
    while pending:  # one pass per pool; a broken pool leaves suspects and maybe pending tasks
        running: dict = {}
        suspects: list[int] = []
        pool = ProcessPoolExecutor(workers, context, initializer, initargs)
        next_watch = time.monotonic() + WATCHDOG_S
        try:
            while pending or running:
                while pending and len(running) < workers * IN_FLIGHT:
                    positions = [pending.popleft() for _ in range(min(chunk, len(pending)))]
                    try:
                        future = pool.submit(_tracked_chunk, positions)
                    except BrokenProcessPool:  # it broke since the last look: these never started
                        pending.extendleft(reversed(positions))
                        raise
                    running[future] = positions
                done, _ = wait(running, timeout=WATCHDOG_S, return_when=FIRST_COMPLETED)
                for future in done:
                    positions = running.pop(future)
                    try:
                        yield from future.result()
                    except BrokenProcessPool:
                        running[future] = positions  # handled below with the others
                        raise
                if time.monotonic() >= next_watch:  # not after every chunk: 100k tasks make ~7k chunks
                    _kill_running(older_than=timeout)
                    next_watch = time.monotonic() + WATCHDOG_S
        except BrokenProcessPool:
            lost = []
            for future, positions in running.items():
                if future.done() and future.exception() is None:  # finished before the break
                    yield from future.result()
                else:
                    lost += positions
            suspects = [p for p in lost if _started[p] > 0]  # being computed when the pool broke
            pending.extendleft(reversed([p for p in lost if _started[p] <= 0]))  # to do (again)
            for position in lost:  # their processes are gone: never signal those pids again
                _started[position] = 0.0
            empty_breaks = 0 if suspects else empty_breaks + 1
            if empty_breaks >= MAX_EMPTY_BREAKS:
                raise SpecVisionError("worker processes keep dying before they finish anything "
                                      "(out of memory?); try fewer --workers") from None
        except BaseException:  # Ctrl-C or an error here: stop the workers, do not wait for them
            _kill_running()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for position in suspects:
            yield _isolated(context, position, initializer, initargs, timeout, failed)


def _tracked_chunk(positions: list[int]) -> list:
    """Worker side: run tasks, recording which one is in progress."""
    results = []
    for position in positions:
        _pids[position] = os.getpid()
        _started[position] = time.time()
        results.append(_func(_tasks[position]))
        _started[position] = -1.0
    return results


def _kill_running(older_than: float = 0.0) -> None:
    """SIGKILL the workers busy with a task for more than `older_than` seconds (the pool then breaks)."""
    # One snapshot: the workers write these times while this reads them. Two passes over the live
    # array saw a task running (> 0) in the first and finished (-1 < now - timeout) in the second, and
    # killed healthy workers (18 pool restarts in a 28k-clip render).
    started = np.frombuffer(_started, dtype=np.float64).copy()
    for position in np.flatnonzero((started > 0) & (started < time.time() - older_than)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(_pids[position], signal.SIGKILL)


def _isolated(context, position: int, initializer, initargs: tuple, timeout: float, failed):
    """Run one task in a process of its own; its death or a timeout is that task's failure."""
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_isolated_main, args=(send, position, initializer, initargs))
    process.start()
    send.close()
    result, finished = None, receive.poll(timeout)
    if finished:
        with contextlib.suppress(EOFError):  # EOF: the process died without answering
            result = receive.recv()
    receive.close()
    if result is None and process.is_alive():
        process.kill()
    process.join()
    if result is not None:
        return result
    if not finished:
        reason = f"rendering took longer than {timeout:g} s (--clip-timeout); stopped"
    elif process.exitcode is not None and process.exitcode < 0:
        name = signal.Signals(-process.exitcode).name
        hint = " (the kernel's out-of-memory killer sends it)" if name == "SIGKILL" else ""
        reason = f"the worker process rendering it died ({name}{hint})"
    else:
        reason = f"the worker process rendering it exited with status {process.exitcode}"
    return failed(_tasks[position], reason)


def _isolated_main(send, position: int, initializer, initargs: tuple) -> None:
    initializer(*initargs)
    send.send(_func(_tasks[position]))
