"""Process pools whose workers end with the parent, for the CPU-heavy parts of a run (page
extraction, image transforms)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor


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
