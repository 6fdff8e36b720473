"""Rate compliance, measured from the server's own request timestamps."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
from aiohttp import web
from shop import ShopServer

from ilid_async.config import HostLimits, HttpSettings
from ilid_async.crawl.http import HttpClient


class StampShop:
    """Answers everything with 200 and notes when each request arrived, per host."""

    def __init__(self):
        self.base_url = ""
        self.base_urls: list[str] = []
        self.arrivals: dict[str, list[float]] = defaultdict(list)

    async def handle(self, request: web.Request) -> web.Response:
        host = request.host.split(":")[0]
        if request.path == "/robots.txt":
            delay = "Crawl-delay: 0.5\n" if host == "127.0.0.4" else ""
            return web.Response(text=f"User-agent: *\n{delay}Disallow:\n")
        self.arrivals[host].append(time.monotonic())
        return web.Response(text="ok")


def busiest_second(stamps: list[float]) -> int:
    stamps = sorted(stamps)
    return max(sum(1 for t in stamps[i:] if t < start + 1.0) for i, start in enumerate(stamps))


def achieved_rate(stamps: list[float]) -> float:
    stamps = sorted(stamps)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


@pytest.fixture
def stamp_server():
    server = ShopServer(StampShop(), hosts=("127.0.0.2", "127.0.0.3", "127.0.0.4")).start()
    yield server
    server.stop()


@pytest.mark.slow
async def test_each_host_is_held_to_its_own_rate(stamp_server):
    a, b, c = stamp_server.base_urls
    settings = HttpSettings(allow_loopback=True, per_host_rate=5, per_host_concurrency=8, concurrency=64,
                            hosts={"127.0.0.3": HostLimits(rate=10), "127.0.0.4": HostLimits(rate=10)})
    async with HttpClient(settings) as http:
        async def fetch(url: str, robots: bool = False) -> None:
            resp = await http.get(url, max_bytes=100, check_robots=robots)
            assert resp.status == 200

        await asyncio.gather(
            *(fetch(f"{a}/x/{i}") for i in range(30)),
            *(fetch(f"{b}/x/{i}") for i in range(60)),
            # Crawl-delay 0.5 in robots.txt lowers this host's configured 10/s to 2/s.
            *(fetch(f"{c}/x/{i}", robots=True) for i in range(9)),
        )
    arrivals = stamp_server.shop.arrivals
    for host, rate, count in (("127.0.0.2", 5, 30), ("127.0.0.3", 10, 60), ("127.0.0.4", 2, 9)):
        stamps = arrivals[host]
        assert len(stamps) == count
        assert busiest_second(stamps) <= rate + 1, host
        assert achieved_rate(stamps) >= 0.9 * rate, host
        assert achieved_rate(stamps) <= rate * 1.1, host


@pytest.mark.slow
async def test_a_waiting_host_does_not_block_another(stamp_server):
    a, b, _ = stamp_server.base_urls
    settings = HttpSettings(allow_loopback=True, per_host_rate=1, per_host_concurrency=2,
                            hosts={"127.0.0.3": HostLimits(rate=0)})
    async with HttpClient(settings) as http:
        slow = asyncio.gather(*(http.get(f"{a}/x/{i}", max_bytes=100) for i in range(4)))
        fast = await asyncio.gather(*(http.get(f"{b}/y/{i}", max_bytes=100) for i in range(20)))
        await slow
    assert all(r.status == 200 for r in fast)
    # Host a gets one request a second, so its third cannot arrive before two seconds have
    # passed; host b's twenty were not queued behind host a's waiting requests.
    arrivals = stamp_server.shop.arrivals
    assert max(arrivals["127.0.0.3"]) < sorted(arrivals["127.0.0.2"])[2]
