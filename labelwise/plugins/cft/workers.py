"""Run CFT's categories concurrently: whole categories on worker threads, one core each.

A category's optimisation is a long chain of small dependent steps (one ``(P, D) x (D, N_c)``
product, one ranking, one GA generation), while different categories are independent. So each
worker thread runs whole categories, one after another; on CPU the tensor operations are
single-threaded, and the products (torch/MKL) and sorts (numpy) release the GIL, so
``threads`` workers keep ``threads`` cores busy. Measured on 2 cores shared with other jobs:
one ``(50, 512) x (512, 2500)`` product took 16 ms with 2 intra-op threads and 3 ms with 1,
and the former lock-step engine (2 intra-op threads plus a ranking thread pool) spent 36 ms
per category-generation against 7 ms here (docs/methods/cft.md).

Results do not depend on the number of workers: a category's computation is the same chain
of single-threaded operations whichever thread runs it and whatever runs beside it.
"""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import torch

__all__ = ["IdleWorkers", "Stopped", "run_categories", "single_threaded_ops"]


class Stopped(Exception):
    """Raised inside a worker when the run is being abandoned (another category failed)."""


@contextlib.contextmanager
def single_threaded_ops(enabled: bool = True):
    """Set torch's intra-op threads (and so MKL's) and numpy's BLAS threads to 1 inside the
    block, then restore them.

    This is process-wide: other threads running torch or numpy products meanwhile are affected too.
    """
    if not enabled:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


class IdleWorkers:
    """Lends the workers that have no category left to run to the categories still running.

    Near the end of a run fewer categories remain than workers (the last, longest category
    would run on one core while the others wait). :meth:`map` then runs the pieces of one
    category's step on the idle workers too. The pieces are the same whether they run in
    parallel or one after another, so results do not change, only the wall time.
    """

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self.running = self.workers
        self._pool = ThreadPoolExecutor(max_workers=self.workers - 1) if self.workers > 1 else None

    @property
    def idle(self) -> bool:
        """True while fewer categories run than there are workers."""
        return self._pool is not None and self.running < self.workers

    def map(self, fn, items: list) -> list:
        """``[fn(item) for item in items]``, the items after the first on idle workers if any."""
        if not self.idle or len(items) < 2:
            return [fn(item) for item in items]
        try:
            futures = [self._pool.submit(fn, item) for item in items[1:]]
        except RuntimeError:  # shut down: the run is being abandoned
            return [fn(item) for item in items]
        first = fn(items[0])
        return [first] + [future.result() for future in futures]

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def run_categories(jobs: list, run_one, *, workers: int, cpu: bool, on_done=None, on_round=None,
                   lend_idle: bool = False) -> dict:
    """Run ``run_one(job, stop)`` for every job on ``workers`` threads; gather the results.

    Args:
        jobs: objects with a ``category`` attribute.
        run_one: ``run_one(job, stop) -> result``; should raise :class:`Stopped` soon after
            ``stop`` (a :class:`threading.Event`) is set.
        workers: worker threads (at most ``len(jobs)`` are started).
        cpu: run the workers with single-threaded tensor operations
            (:func:`single_threaded_ops`).
        on_done: called as ``on_done(category, result)`` in the calling thread as each job
            finishes (in completion order).
        on_round: called as ``on_round(number_still_running)`` after each ``on_done``.
        lend_idle: call ``run_one(job, stop, idle)`` with an :class:`IdleWorkers`, whose
            ``map`` uses the workers left without a category.

    Returns:
        ``{category: result}``. The first exception of a job is re-raised after the other
        workers have stopped.
    """
    results: dict = {}
    if not jobs:
        return results
    stop = threading.Event()
    workers = max(1, int(workers))
    idle = IdleWorkers(workers) if lend_idle else None
    extra = (idle,) if lend_idle else ()
    with single_threaded_ops(cpu), ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        pending = {pool.submit(run_one, job, stop, *extra): job for job in jobs}
        if idle is not None:
            idle.running = min(workers, len(jobs))
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    if idle is not None:
                        idle.running = min(workers, len(pending))
                    results[job.category] = future.result()
                    if on_done is not None:
                        on_done(job.category, results[job.category])
                    if on_round is not None:
                        on_round(len(pending))
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            raise
        finally:
            if idle is not None:
                idle.close()
    return results
