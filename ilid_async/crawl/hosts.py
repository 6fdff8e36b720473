"""Per-host politeness state, one object per host name, read by everything that limits a host.

A ``Host`` holds the host's concurrency (a semaphore), its rate (one request per 1/rate seconds,
asyncio-throttle), and a pause until a Retry-After has passed. ``HttpClient`` takes a ``Slot``
for every request and holds it until the response is released, so the concurrency caps bodies
being read, not only headers being awaited; the pipeline's stages lease work up to the same
``Host.concurrency``. ``Hosts`` creates them on first use from the config's defaults and per-host
overrides (``HttpSettings.limits_for``), so an override or a robots.txt Crawl-delay lives in one
place only.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from asyncio_throttle import Throttler

if TYPE_CHECKING:
    from ilid_async.config import HttpSettings

__all__ = ["Host", "Hosts", "Slot"]


class Slot:
    """One request's place in its host's concurrency; ``release()`` gives it back, once."""

    __slots__ = ("_host",)

    def __init__(self, host: Host):
        self._host: Host | None = host

    def release(self) -> None:
        # Idempotent: a response is released on several paths (redirect, retry, finally), and
        # an asyncio.Semaphore released twice would silently let one request too many through.
        if self._host is not None:
            host, self._host = self._host, None
            host.in_flight -= 1
            host._semaphore.release()


class Host:
    """Politeness state of one host: concurrency, rate, and a pause until a Retry-After."""

    def __init__(self, name: str, rate: float, concurrency: int):
        self.name = name
        self.concurrency = concurrency
        self.in_flight = 0  # slots taken: requests between start and release
        self._semaphore = asyncio.Semaphore(concurrency)
        self.rate = 0.0
        self.throttler: Throttler | None = None
        if rate:
            self.set_rate(rate)
        self.paused_until = 0.0  # time.monotonic()

    def set_rate(self, requests_per_second: float) -> None:
        # One request per 1/rate seconds: exact for fractional rates, and evenly spaced
        # requests are kinder to a shop than bursts of `rate` at the start of every second.
        self.rate = requests_per_second
        self.throttler = Throttler(rate_limit=1, period=1.0 / requests_per_second, retry_interval=0.005)

    def lower_rate(self, requests_per_second: float) -> None:
        """robots.txt Crawl-delay may only make us slower, never faster."""
        if not self.rate or requests_per_second < self.rate:
            self.set_rate(requests_per_second)

    def pause(self, seconds: float) -> None:
        """No request starts for ``seconds`` (a Retry-After): a later, longer pause wins."""
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def acquire(self) -> Slot:
        """Wait for a free slot, then for any pause and the rate: the rate counts request starts,
        so it is taken last, just before the request goes out. The caller must release the slot
        (after the response is released, or on any error)."""
        await self._semaphore.acquire()
        self.in_flight += 1
        slot = Slot(self)
        try:
            while (wait := self.paused_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if self.throttler:
                async with self.throttler:
                    pass
        except BaseException:  # cancelled while waiting: the slot must not leak
            slot.release()
            raise
        return slot


class Hosts:
    """The ``Host`` of every host name met so far, made on first use from the settings."""

    def __init__(self, settings: HttpSettings):
        self._settings = settings
        self._hosts: dict[str, Host] = {}

    def get(self, host: str) -> Host:
        name = host.lower()  # URL host names are case-insensitive; urlsplit lower-cases them
        if (found := self._hosts.get(name)) is None:
            rate, concurrency = self._settings.limits_for(name)
            found = self._hosts[name] = Host(name, rate, concurrency)
        return found

    def concurrency(self, host: str) -> int:
        """How many requests to ``host`` may be in flight: what the stages lease up to."""
        return self.get(host).concurrency
