"""The bridge between the event loop and the model thread.

llama.cpp contexts are not thread-safe, so one thread does all model work; the event loop hands
it records through a queue and gets results back as futures. ctypes releases the GIL while
llama.cpp decodes, so the crawl and the image stage keep running meanwhile.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ilid_async.label.result import LabelResult

__all__ = ["Job", "ModelThread"]


@dataclass
class Job:
    """One record handed to the model thread, and the future its result goes to."""

    label: str
    data: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop

    def finish(self, result: LabelResult) -> None:
        """From the model thread."""
        self.loop.call_soon_threadsafe(_set_result, self.future, result)

    def cancel(self) -> None:
        """From the model thread."""
        self.loop.call_soon_threadsafe(self.future.cancel)


class ModelThread:
    """A thread that loads, serves the queued jobs, and frees (``start``'s three functions)."""

    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.Queue[Job | None] = queue.Queue()  # None: stop after the jobs before it
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()

    # --- the event loop's side ------------------------------------------------------------

    async def start(self, load: Callable[[], None], serve: Callable[[], None], free: Callable[[], None]) -> None:
        """Run load() in the thread, then serve() until it returns, then free() (also after a
        failed load, whose error this raises)."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(loop, ready, load, serve, free),
                                        name=self.name, daemon=True)
        self._thread.start()
        await ready

    async def close(self, drain: bool = True) -> None:
        """Stop the thread: after the jobs already queued, or (drain=False) with ``abandoned``
        set and the queued jobs cancelled."""
        if self._thread is None:
            return
        if not drain:
            self._abandon.set()
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.future.cancel()
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    async def submit(self, label: str, data: list[str]) -> LabelResult:
        loop = asyncio.get_running_loop()
        job = Job(label, data, loop.create_future(), loop)
        self._jobs.put(job)
        return await job.future

    # --- the model thread's side ----------------------------------------------------------

    def next_job(self, block: bool) -> Job | None:
        """The next queued job; None: stop. queue.Empty when none is queued and not block."""
        return self._jobs.get(block=block)

    @property
    def abandoned(self) -> bool:
        """close(drain=False) was called: cancel the jobs in flight and return."""
        return self._abandon.is_set()

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future, load: Callable[[], None],
             serve: Callable[[], None], free: Callable[[], None]) -> None:
        try:
            load()
        except BaseException as e:  # noqa: BLE001 - handed to the event loop as the start error
            free()
            loop.call_soon_threadsafe(_set_exception, ready, e)
            return
        loop.call_soon_threadsafe(_set_result, ready, None)
        try:
            serve()
        finally:
            free()


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
