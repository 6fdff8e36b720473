"""Process pools whose workers end with the parent, for the CPU-heavy parts of a run (page
extraction, image transforms), and that survive the death of a worker (RestartingPool)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from ilid_async import reasons
from ilid_async.errors import ItemError

__all__ = ["worker_pool", "LoopPool", "CALLS_PER_WORKER", "WORKER_RETRIES", "WorkerDied", "RestartingPool"]

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


# --- a pool the event loop drives itself ------------------------------------------------------

# Every message between LoopPool and a worker: the length of its pickle and the number of
# buffers sent beside it, each buffer's length, the pickle, the buffers. A call's big bytes
# arguments (downloaded images) go as such buffers (pickle protocol 5), so the parent writes them
# to the socket as they are instead of copying them into the pickle first.
_HEADER = struct.Struct("!QI")
_BUFFER_LENGTH = struct.Struct("!Q")
_OUT_OF_BAND_BYTES = 1 << 16  # smaller arguments travel inside the pickle
# Calls a LoopPool worker holds at once: the one it runs and the next, already in its socket.
CALLS_PER_WORKER = 2


@dataclass(eq=False)
class _LoopWorker:
    process: BaseProcess
    sock: socket.socket  # the parent's end, non-blocking
    calls: deque[Future] = field(default_factory=deque)  # sent to it, in order: it answers in order
    unsent: deque[memoryview] = field(default_factory=deque)  # message bytes the socket took no more of
    received: bytearray = field(default_factory=bytearray)  # answer bytes short of a whole message
    writing: bool = False  # the loop is told to call back when its socket takes more


class LoopPool(Executor):
    """A process pool that the event loop drives itself, for many calls with big arguments (the
    image transforms and their downloaded bytes): each worker has a socket of its own that the
    loop's thread writes and reads, without threads. ProcessPoolExecutor moves every call
    through a feeder thread and a manager thread, whose work and GIL hand-offs cost the parent
    about 0.9 ms of CPU an image (issue 14), on cores the workers need.

    A worker holds at most CALLS_PER_WORKER calls (the next is in its socket when it finishes
    one, so it never waits for the parent); the rest wait here for the first worker free.
    Like ProcessPoolExecutor, a dead worker fails every call the pool holds with
    BrokenProcessPool and the pool takes no more (RestartingPool builds a new one). Submit,
    and shut down, from the event loop's thread only.
    """

    def __init__(self, workers: int = 0, initializer=None, initargs: tuple = ()):
        context = multiprocessing.get_context("spawn")  # not forked: see worker_pool
        self._workers: list[_LoopWorker] = []
        self._waiting: deque[tuple[Future, Callable, tuple]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broken = ""  # why the pool takes no more calls
        with _sigint_ignored():  # as worker_pool: a Ctrl-C while they start does not reach them
            for _ in range(workers or os.cpu_count() or 1):
                ours, theirs = socket.socketpair()
                process = context.Process(target=_serve_calls, args=(theirs, os.getpid(), initializer, initargs),
                                          daemon=True)
                process.start()
                theirs.close()
                ours.setblocking(False)
                self._workers.append(_LoopWorker(process, ours))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self._broken:
            raise BrokenProcessPool(self._broken)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._listen(loop)
        future: Future = Future()
        self._waiting.append((future, functools.partial(fn, **kwargs) if kwargs else fn, args))
        self._dispatch()
        return future

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [worker.process.pid for worker in self._workers if worker.process.pid is not None]

    @property
    def held(self) -> list[int]:
        """Calls each worker holds: sent to it and not answered yet."""
        return [len(worker.calls) for worker in self._workers]

    @property
    def waiting(self) -> int:
        """Calls not sent to a worker yet."""
        return len(self._waiting)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers: calls not yet sent are cancelled, calls in a worker fail (the
        event loop that would take their answers is the caller's, and it is not running). A
        worker finishes the call it runs (an image half written would leave its temporary
        file), unless it never had one."""
        used = self._loop is not None
        self._stop("shut down", RuntimeError("the pool was shut down"))
        for worker in self._workers:
            if wait and used:
                worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
            if wait:
                worker.process.join()

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None:
            for worker in self._workers:
                self._loop.remove_reader(worker.sock.fileno())
        self._loop = loop
        for worker in self._workers:
            loop.add_reader(worker.sock.fileno(), self._receive, worker)

    def _dispatch(self) -> None:
        while self._waiting and not self._broken:
            worker = min(self._workers, key=lambda w: len(w.calls))
            if len(worker.calls) >= CALLS_PER_WORKER:
                return
            future, fn, args = self._waiting.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                parts = _message((fn, tuple(_beside(arg) for arg in args)))
            except Exception as e:  # an argument that cannot go to another process
                future.set_exception(e)
                continue
            worker.calls.append(future)
            worker.unsent += parts
            self._send(worker)

    def _send(self, worker: _LoopWorker) -> None:
        try:
            while worker.unsent:
                sent = worker.sock.sendmsg(worker.unsent)
                while sent and sent >= len(worker.unsent[0]):
                    sent -= len(worker.unsent.popleft())
                if sent:  # the socket is full part-way through a message
                    worker.unsent[0] = worker.unsent[0][sent:]
        except BlockingIOError:
            pass
        except OSError as e:
            self._worker_died(worker, f"writing to it: {e}")
            return
        want = bool(worker.unsent)
        if want != worker.writing and self._loop is not None:
            if want:
                self._loop.add_writer(worker.sock.fileno(), self._send, worker)
            else:
                self._loop.remove_writer(worker.sock.fileno())
            worker.writing = want

    def _receive(self, worker: _LoopWorker) -> None:
        try:
            data = worker.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as e:
            self._worker_died(worker, f"reading from it: {e}")
            return
        if not data:
            self._worker_died(worker)
            return
        received = worker.received
        received += data
        while len(received) >= _HEADER.size:
            length, buffers = _HEADER.unpack_from(received)
            if buffers:  # answers are small: they never come with buffers
                self._worker_died(worker, "it sent a message out of turn")
                return
            end = _HEADER.size + length
            if len(received) < end:
                break
            message = bytes(received[_HEADER.size:end])
            del received[:end]
            future = worker.calls.popleft()
            try:
                ok, value = pickle.loads(message)
            except Exception as e:  # an answer that does not unpickle here
                ok, value = False, e
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._dispatch()

    def _worker_died(self, worker: _LoopWorker, how: str = "") -> None:
        worker.process.join(1)  # it closed its socket: it is exiting, if not gone already
        why = f"a worker process died ({how or f'exit code {worker.process.exitcode}'})"
        self._stop(why, BrokenProcessPool(why))

    def _stop(self, why: str, error: BaseException) -> None:
        if self._broken:
            return  # stopped already (a worker died, then the pool is shut down)
        self._broken = why
        for worker in self._workers:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(worker.sock.fileno())
                if worker.writing:
                    self._loop.remove_writer(worker.sock.fileno())
            worker.writing = False
            worker.sock.close()  # the worker reads the end of its socket and exits
            while worker.calls:
                future = worker.calls.popleft()
                if not future.done():
                    future.set_exception(error)
            worker.unsent.clear()
        while self._waiting:
            future = self._waiting.popleft()[0]
            if isinstance(error, BrokenProcessPool):
                if not future.done():
                    future.set_exception(error)
            else:
                future.cancel()


def _serve_calls(sock: socket.socket, parent_pid: int, initializer, initargs: tuple) -> None:
    """A LoopPool worker: run the calls that come in on ``sock`` one after another and send back
    each one's result or exception, until the pool closes its end."""
    _init_worker(parent_pid, initializer, initargs)
    while (call := _read_message(sock)) is not None:
        fn, args = call
        # Arguments sent beside the pickle arrive as read-only views of a buffer: the function
        # gets the bytes it was given.
        args = tuple(bytes(arg) if isinstance(arg, memoryview) else arg for arg in args)
        del call
        try:
            answer: tuple = (True, fn(*args))
        except BaseException as e:  # every failure is the caller's to see
            answer = (False, e)
        del fn, args
        try:
            parts = _message(answer)
        except Exception as e:
            parts = _message((False, RuntimeError(f"the result cannot go back to the pool: {e!r}")))
        try:
            sock.sendall(b"".join(parts))  # an answer is small: one copy costs nothing
        except OSError:
            return  # the pool is gone


def _beside(arg):
    """``arg``, marked to travel beside the pickle if it is big bytes."""
    if isinstance(arg, (bytes, bytearray)) and len(arg) >= _OUT_OF_BAND_BYTES:
        return pickle.PickleBuffer(arg)
    return arg


def _message(value) -> list[memoryview]:
    """The parts of the message that carries ``value``, ready for sendmsg."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(value, 5, buffer_callback=buffers.append)
    views = [buffer.raw() for buffer in buffers]
    head = _HEADER.pack(len(data), len(views)) + b"".join(_BUFFER_LENGTH.pack(len(v)) for v in views)
    return [memoryview(head), memoryview(data), *views]


def _read_message(sock: socket.socket):
    """The next value the pool sent on ``sock``; None at the end of the stream."""
    head = bytearray(_HEADER.size)
    if not _receive_exactly(sock, memoryview(head)):
        return None
    length, count = _HEADER.unpack(head)
    lengths = bytearray(_BUFFER_LENGTH.size * count)
    if not _receive_exactly(sock, memoryview(lengths)):
        return None
    data = bytearray(length)
    buffers = [bytearray(n) for (n,) in _BUFFER_LENGTH.iter_unpack(lengths)]
    for part in (data, *buffers):
        if not _receive_exactly(sock, memoryview(part)):
            return None
    return pickle.loads(data, buffers=buffers)


def _receive_exactly(sock: socket.socket, into: memoryview) -> bool:
    """Fill ``into`` from ``sock``; False at the end of the stream."""
    while into:
        got = sock.recv_into(into)
        if not got:
            return False
        into = into[got:]
    return True


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

    def __init__(self, make_pool: Callable[[], Executor], retries: int = WORKER_RETRIES):
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

    def _from_worker(self, pool: Executor, call: _Call, inner: Future) -> None:
        # In ProcessPoolExecutor's thread (LoopPool's run in the loop's): hand the result over
        # to the event loop's thread.
        assert self._loop is not None  # set by _start, before the call was sent
        try:
            self._loop.call_soon_threadsafe(self._settle, pool, call, inner)
        except RuntimeError:
            pass  # the event loop is closed: the run is over, nobody waits for this

    def _settle(self, pool: Executor, call: _Call, inner: Future) -> None:
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

    def _broken(self, pool: Executor, call: _Call, *, blame: bool) -> None:
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
