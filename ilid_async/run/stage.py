"""The stage scheduler: leases a stage's work from the store and runs it with bounded
concurrency (per host too), wakes the stages downstream as items finish, and ends when its
upstream stages have ended and nothing is left. What an item's work is lives with its stage
(crawl/stage.py, label/stage.py, images/stage.py); pipeline.py wires the stages."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar, cast

from ilid_async.errors import UserError

__all__ = ["Stage"]

log = logging.getLogger(__name__)

T = TypeVar("T")  # a stage's work item: a store task


class _Hosted(Protocol):
    """The items of a stage with a host_limit."""

    @property
    def host(self) -> str: ...


class Stage(Generic[T]):
    """Leases work from the store and runs it with at most ``concurrency`` items in flight."""

    def __init__(self, name: str, lease: Callable[..., list[T]], work: Callable[[T], Awaitable[None]],
                 concurrency: int, upstream: Iterable[Stage[Any]] = (),
                 host_limit: Callable[[str], int] | None = None):
        self.name = name
        self.lease = lease
        self.work = work
        self.concurrency = concurrency
        # With host_limit, items carry a .host and the lease skips hosts that already have
        # that many items in flight: a slow or rate-limited host never takes every slot.
        self.host_limit = host_limit
        self.per_host: Counter[str] = Counter()
        # Back-pressure: while gate() is False the stage leases nothing new.
        self.gate: Callable[[], bool] = lambda: True
        self.stopping = False
        # The hosts that were full when a lease last found nothing else: until one of them has
        # room again or new work comes, leasing again would only scan their backlog for nothing.
        self._dry: frozenset[str] | None = None
        self.upstream = list(upstream)
        self.downstream: list[Stage[Any]] = []
        for stage in self.upstream:
            stage.downstream.append(self)
        self.finished = asyncio.Event()
        # Set by anything that may make new work leasable: an item of ours or of an upstream
        # stage finishing, or an upstream stage finishing.
        self.wake = asyncio.Event()
        self.error: UserError | None = None  # an item's error that stops the run; run() raises it

    def new_work(self) -> None:
        """Something may have added work for this stage."""
        self._dry = None
        self.wake.set()

    def _poke_downstream(self) -> None:
        for stage in self.downstream:
            stage.new_work()

    def stop(self) -> None:
        """Lease nothing more; finish the items in flight, then end."""
        self.stopping = True
        self.wake.set()

    async def _run_item(self, item: T) -> None:
        try:
            await self.work(item)
        except UserError as e:  # the run cannot go on (a full disk, a store it cannot write)
            self.error = self.error or e
            self.wake.set()
        except Exception:  # noqa: BLE001 - the work functions record item errors; this is a bug
            log.exception("%s: unexpected error on %r", self.name, item)

    def _worth_leasing(self, in_flight: int) -> bool:
        """Lease in batches (a quarter of the slots free, or none in flight): one transaction
        per batch instead of one per item is most of the store's cost on a fast crawl."""
        free = self.concurrency - in_flight
        return free > 0 and (in_flight == 0 or free >= max(1, self.concurrency // 4))

    def _lease(self, n: int) -> list[T]:
        if self.host_limit is None:
            return self.lease(n)
        full = frozenset(h for h, count in self.per_host.items() if count >= self.host_limit(h))
        if self._dry is not None and full >= self._dry:
            return []
        items = self.lease(n, lambda host: self.host_limit(host) - self.per_host[host])
        self._dry = None if items else full
        for item in items:
            self.per_host[cast(_Hosted, item).host] += 1
        return items

    def _item_done(self, task: asyncio.Task[None], in_flight: set[asyncio.Task[None]], item: T) -> None:
        # Wake only once the task is out of in_flight, or the loop could wait forever on it.
        in_flight.discard(task)
        if self.host_limit is not None:
            self.per_host[cast(_Hosted, item).host] -= 1
        self.wake.set()
        self._poke_downstream()
        for stage in self.upstream:  # work left this stage: a gated upstream may go on
            stage.wake.set()

    async def run(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                if self.error is not None:
                    raise self.error
                self.wake.clear()
                # Read before leasing: if upstream had finished by now, this lease sees all it made.
                upstream_done = all(s.finished.is_set() for s in self.upstream)
                leased: list[T] = []
                if self.stopping:
                    if not in_flight:
                        break
                elif self._worth_leasing(len(in_flight)) and self.gate():
                    leased = self._lease(self.concurrency - len(in_flight))
                    for item in leased:
                        task = asyncio.create_task(self._run_item(item))
                        in_flight.add(task)
                        # mypy cannot infer a lambda with a default argument from the callback's type
                        task.add_done_callback(cast(Callable[[asyncio.Task[None]], None],
                                                    lambda t, item=item: self._item_done(t, in_flight, item)))
                if not in_flight and not leased and upstream_done and not self.stopping:
                    break
                await self.wake.wait()
        finally:
            for task in in_flight:
                task.cancel()
            self.finished.set()
            self._poke_downstream()
