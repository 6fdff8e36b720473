"""Process pools whose workers end with the parent, for the CPU-heavy parts of a run (page
extraction, image transforms), and that survive the death of a worker (RestartingPool)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from . import reasons
from .errors import ItemError

__all__ = ["worker_pool", "WORKER_RETRIES", "WorkerDied", "RestartingPool"]

log = logging.getLogger(__name__)


def _die_with_parent(parent_pid: int) -> None:
    """Pool worker start-up: end when the parent process ends, even by SIGKILL, instead of
    lingering (a killed run's workers would otherwise wait forever for work)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: Linux tells us when the parent dies
        if os.getppid() == parent_pid:
            return
    except (OSError, AttributeError):
        pass
    # Elsewhere (or if the parent died already): watch the parent from a thread.
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _init_worker(parent_pid: int, initializer, initargs: tuple) -> None:
    # A terminal's Ctrl-C reaches every process of the foreground group: the parent decides how
    # the run stops (finish work in flight, then shut the pool down), so workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def worker_pool(workers: int = 0, initializer=None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A process pool whose workers end with the parent. Workers are spawned, not forked: the
    parent runs threads (llama.cpp, the event loop's helpers) that a fork would copy mid-work."""
    count = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(
        max_workers=count,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    # Workers are spawned on submit and take a moment to start and import: start them all now,
    # not when the first work arrives and would wait for them. SIGINT is ignored while they are
    # spawned (an ignored signal stays ignored across exec), so a Ctrl-C during their start-up,
    # before _init_worker runs, does not reach them either.
    with _sigint_ignored():
        for _ in range(count):
            pool.submit(_started)
    return pool


@contextlib.contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; _init_worker still ignores it
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _started() -> None:
    """A no-op task: submitting it makes the pool spawn a worker."""


# --- surviving a dead worker ------------------------------------------------------------------

# How often a call that was in a pool when a worker died is run again, alone, before it fails.
WORKER_RETRIES = 2


class WorkerDied(ItemError):
    """A call's worker process died (killed, out of memory, a crash in a C library) every time
    the call was run: recorded on the item as ``worker_died``."""

    def __init__(self, detail: str = ""):
        super().__init__(reasons.WORKER_DIED, detail)


@dataclass(eq=False)
class _Call:
    fn: Callable
    args: tuple
    outer: Future
    retry: bool  # False: a dead worker is the caller's to handle (submit_once)
    deaths: int = 0  # times its worker died while it ran alone


class RestartingPool(Executor):
    """A process pool that outlives its workers. When a worker dies, ProcessPoolExecutor fails
    every call it holds and refuses new ones for good; this one builds a new pool and runs the
    calls that were in it again, one at a time beside the other work ("alone"): a call that
    kills its worker every time (a poison input) fails by itself as WorkerDied once its worker
    died ``retries`` times while it ran alone, and cannot take the others with it.

    For asyncio: submit from the event loop's thread (run_in_executor does); results are
    settled there too, so the bookkeeping needs no locks.
    """

    def __init__(self, make_pool: Callable[[], ProcessPoolExecutor], retries: int = WORKER_RETRIES):
        self._make_pool = make_pool
        self._retries = retries
        self._pool = make_pool()  # made now: its workers start while the run sets up
        self._loop: asyncio.AbstractEventLoop | None = None
        self._suspects: deque[_Call] = deque()  # calls waiting to run alone
        self._alone: _Call | None = None
        self._closed = False
        self.restarts = 0  # pools rebuilt after a worker died

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Run ``fn(*args)`` in a worker; a dead worker makes it run again (see the class)."""
        return self._start(_Call(functools.partial(fn, **kwargs) if kwargs else fn, args, Future(), True))

    def submit_once(self, fn, /, *args) -> Future:
        """Run ``fn(*args)`` in a worker once: if a worker dies meanwhile, the future fails with
        BrokenProcessPool (the pool is rebuilt already) and the caller decides what to run
        again: PagePool sends a batch's pages again one by one."""
        return self._start(_Call(fn, args, Future(), False))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        while self._suspects:
            self._suspects.popleft().outer.cancel()
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def _start(self, call: _Call) -> Future:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self._loop = asyncio.get_running_loop()
        self._send(call)
        return call.outer

    def _send(self, call: _Call) -> None:
        pool = self._pool
        try:
            inner = pool.submit(call.fn, *call.args)
        except BrokenProcessPool:  # a worker died and the pool has not told us yet
            if self._alone is call:
                self._alone = None
            self._broken(pool, call, blame=False)
            return
        inner.add_done_callback(functools.partial(self._from_worker, pool, call))
        call.outer.add_done_callback(lambda outer: outer.cancelled() and inner.cancel())

    def _from_worker(self, pool: ProcessPoolExecutor, call: _Call, inner: Future) -> None:
        # In the pool's own thread: hand the result over to the event loop's thread.
        assert self._loop is not None  # set by _start, before the call was sent
        try:
            self._loop.call_soon_threadsafe(self._settle, pool, call, inner)
        except RuntimeError:
            pass  # the event loop is closed: the run is over, nobody waits for this

    def _settle(self, pool: ProcessPoolExecutor, call: _Call, inner: Future) -> None:
        alone = self._alone is call
        if alone:
            self._alone = None
        if not call.outer.done():  # not cancelled meanwhile
            if inner.cancelled():
                call.outer.cancel()
            elif isinstance(inner.exception(), BrokenProcessPool):
                self._broken(pool, call, blame=alone)
            elif inner.exception() is not None:
                call.outer.set_exception(inner.exception())
            else:
                call.outer.set_result(inner.result())
        self._next_alone()

    def _broken(self, pool: ProcessPoolExecutor, call: _Call, *, blame: bool) -> None:
        """A worker of ``pool`` died while ``call`` was in it. ``blame``: the call ran alone
        (apart from first tries of other calls), so its input most likely killed the worker."""
        if pool is self._pool and not self._closed:  # the first of its calls to tell us
            self.restarts += 1
            log.warning("a worker process died; starting a new pool (%d so far)", self.restarts)
            pool.shutdown(wait=False)
            try:
                self._pool = self._make_pool()
            except OSError as e:  # no processes to be had (out of memory, process limit)
                call.outer.set_exception(WorkerDied(f"no new worker process: {e}"))
                return
        if not call.retry or self._closed:
            call.outer.set_exception(BrokenProcessPool("a worker process died"))
            return
        call.deaths += blame
        if call.deaths >= self._retries:
            call.outer.set_exception(WorkerDied(f"its worker died {call.deaths} times"))
            return
        self._suspects.append(call)
        self._next_alone()

    def _next_alone(self) -> None:
        while self._alone is None and self._suspects and not self._closed:
            call = self._suspects.popleft()
            if not call.outer.done():
                self._alone = call
                self._send(call)
