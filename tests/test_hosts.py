"""Per-host politeness (hosts.py, issue 13 item 10) and the address guard's ranges (item 9).

A request holds its host's slot until its response is released, body included: measured by a
loopback server that streams bodies slowly and counts how many are open at once per host. The
pure parsers (address_allowed, retry_after_seconds) get property tests: whatever the input,
they return a value of the documented kind or raise the documented error.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
from collections import Counter

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ilid_async.config import HostLimits, HttpSettings
from ilid_async.output.dataset import DATASET_KEYS
from ilid_async.crawl.http import MAX_RETRY_AFTER, HttpClient, address_allowed, retry_after_seconds

FLAGS = [(False, False), (True, False), (False, True), (True, True)]  # (loopback, private)
QUICK = settings(max_examples=400, deadline=None)


# --- the address guard ----------------------------------------------------------------------

def verdicts(ip) -> list[bool]:
    return [address_allowed(ip, allow_loopback=lo, allow_private=pr) for lo, pr in FLAGS]


@pytest.mark.parametrize(
    "ip, loopback, private, allowed",
    [
        # Shared CGNAT space, where a cloud's metadata service answers: internal.
        ("100.100.100.200", False, False, False), ("100.64.0.1", False, False, False),
        # 6to4 with loopback or link-local inside: the embedded address must pass too.
        ("2002:7f00:1::", False, False, False), ("2002:7f00:1::", False, True, False),
        ("2002:a9fe:a9fe::", False, False, False), ("2002:a9fe:a9fe::", True, False, False),
        ("2002:5db8:d822::", False, False, False),  # a deprecated tunnel even to a global address
        # NAT64 is the IPv4 address it carries: DNS64 networks reach every IPv4 shop so.
        ("64:ff9b::7f00:1", False, True, False), ("64:ff9b::7f00:1", True, False, True),
        ("64:ff9b::5db8:d822", False, False, True),
        # The unspecified addresses reach the local host: loopback, not private.
        ("0.0.0.0", False, True, False), ("::", False, True, False), ("0.0.0.0", True, False, True),
        ("::", True, False, True), ("::ffff:0.0.0.0", False, True, False),
        # Teredo, server 65.54.227.120 and client 127.0.0.1 (stored with its bits inverted).
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False, True, False),
        # Site-local, which Python 3.11 counts as global.
        ("fec0::1", False, False, False),
        # No address at all: refused, not a crash.
        ("localhost", True, True, False), ("", True, True, False), ("%eth0", True, True, False),
        ("[::1]", True, True, False),
    ],
)
def test_address_guard_ranges(ip, loopback, private, allowed):
    assert address_allowed(ip, allow_loopback=loopback, allow_private=private) is allowed


@pytest.mark.parametrize("ip", ["100.100.100.200", "2002:7f00:1::", "::ffff:127.0.0.1", "0.0.0.0", "::",
                                "64:ff9b::7f00:1", "fe80::1%eth0", "93.184.216.34", "10.1.2.3", "::1"])
def test_address_guard_takes_address_objects(ip):
    assert verdicts(ipaddress.ip_address(ip)) == verdicts(ip)


def test_address_guard_refuses_other_types():
    with pytest.raises(TypeError):
        address_allowed(2130706433, allow_loopback=True, allow_private=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        address_allowed(None, allow_loopback=True, allow_private=True)  # type: ignore[arg-type]


@QUICK
@given(st.one_of(st.text(), st.text(alphabet="0123456789abcdefABCDEF:.%[]x- ", max_size=60)))
def test_address_allowed_takes_any_text(text):
    assert all(type(v) is bool for v in verdicts(text))


@pytest.mark.slow
@QUICK
@given(st.ip_addresses(), st.text(max_size=8))
def test_address_allowed_takes_any_address(addr, zone):
    found = verdicts(addr)
    assert verdicts(str(addr)) == found
    if addr.version == 6:
        assert verdicts(f"{addr}%{zone}") == found  # the zone id never changes the verdict
    # More permission never refuses what less allowed.
    none, loopback, private, both = found
    assert (not none or (loopback and private)) and (not loopback or both) and (not private or both)


@pytest.mark.slow
@QUICK
@given(st.ip_addresses(v=4))
def test_embedded_ipv4_is_judged(v4):
    n = int(v4)
    # Mapped and NAT64 are the IPv4 address itself; 6to4 and Teredo never allow more than it.
    assert verdicts(ipaddress.IPv6Address((0xFFFF << 32) | n)) == verdicts(v4)
    assert verdicts(ipaddress.IPv6Address((0x64FF9B << 96) | n)) == verdicts(v4)
    sixtofour = verdicts(ipaddress.IPv6Address((0x2002 << 112) | (n << 80)))
    teredo = verdicts(ipaddress.IPv6Address((0x20010000 << 96) | (n << 64) | (n ^ 0xFFFFFFFF)))
    for tunnelled in (sixtofour, teredo):
        assert all(v <= direct for v, direct in zip(tunnelled, verdicts(v4)))
        assert not tunnelled[0]  # never without allow_private


# --- Retry-After ----------------------------------------------------------------------------

def in_range(value) -> bool:
    return value is None or (type(value) is float and 0.0 <= value <= MAX_RETRY_AFTER)


@pytest.mark.slow
@QUICK
@given(st.one_of(st.none(), st.text(), st.from_regex(r"\s*[0-9]{1,400}\s*", fullmatch=True)),
       st.floats(min_value=-1e11, max_value=1e11))
def test_retry_after_takes_any_text(value, now):
    assert in_range(retry_after_seconds(value, now=now))


@pytest.mark.slow
@QUICK
@given(st.datetimes(),
       st.sampled_from(["GMT", "UTC", "+0000", "-2359", "+2359", "EST", "Z", ""]),
       st.floats(min_value=0, max_value=4e10))
def test_retry_after_takes_any_date(when, zone, now):
    text = when.strftime("%a, %d %b %Y %H:%M:%S ") + zone
    assert in_range(retry_after_seconds(text, now=now))
    assert in_range(retry_after_seconds(text.lower(), now=now))


# --- per-host slots held for the whole response -----------------------------------------------

def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


class SlowShop:
    """Streams bodies in slow chunks and counts, per host, how many bodies are open at once.
    A body counts as open from its headers until just before its last chunk, so a client that
    finished reading one can never see it still counted."""

    def __init__(self):
        self.body = png_bytes()
        self.hits: Counter[str] = Counter()
        self.open: Counter[str] = Counter()
        self.max_open: Counter[str] = Counter()
        self.max_total = 0
        self.endless_chunks = 0

    def _opened(self, host: str) -> None:
        self.open[host] += 1
        self.max_open[host] = max(self.max_open[host], self.open[host])
        self.max_total = max(self.max_total, sum(self.open.values()))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host, path = request.url.host, request.path
        self.hits[path] += 1
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /private\n")
        if path == "/quick":
            return web.Response(text="ok")
        if path.startswith("/redirect/"):  # -> /busy/: 503 the first time, then -> /slow/
            raise web.HTTPFound("/busy/" + path.rsplit("/", 1)[1])
        if path.startswith("/busy/"):
            if self.hits[path] == 1:
                return web.Response(status=503)
            raise web.HTTPFound("/slow/" + path.rsplit("/", 1)[1])
        if path.startswith("/slow/"):
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            resp.content_length = len(self.body)
            await resp.prepare(request)
            step = len(self.body) // 6 + 1
            chunks = [self.body[i:i + step] for i in range(0, len(self.body), step)]
            self._opened(host)
            try:
                for chunk in chunks[:-1]:
                    await resp.write(chunk)
                    await asyncio.sleep(0.02)
            finally:
                self.open[host] -= 1
            await resp.write(chunks[-1])
            await resp.write_eof()
            return resp
        if path == "/endless":  # until the client goes away
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            await resp.prepare(request)
            try:
                for _ in range(3000):
                    await resp.write(b"x" * 1024)
                    self.endless_chunks += 1
                    await asyncio.sleep(0.01)
            except (ConnectionError, RuntimeError):
                pass
            return resp
        raise web.HTTPNotFound()


@pytest.fixture
async def slow_shop():
    """The shop on 127.0.0.2 and 127.0.0.3, in the test's own event loop."""
    shop = SlowShop()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", shop.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    bases = []
    for ip in ("127.0.0.2", "127.0.0.3"):
        site = web.TCPSite(runner, ip, 0)
        await site.start()
        bases.append(f"http://{ip}:{site._server.sockets[0].getsockname()[1]}")
    yield shop, bases
    await runner.cleanup()


async def until(condition, timeout: float = 10.0) -> None:
    """Wait for a condition the server's counters will meet (a bound, not a measurement)."""
    async def poll():
        while not condition():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


def loopback(**kw) -> HttpSettings:
    return HttpSettings(allow_loopback=True, per_host_rate=0, backoff=0.01, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("limit", [1, 2])
async def test_slow_bodies_hold_the_host_slot_through_get(slow_shop, limit):
    shop, (a, b) = slow_shop
    async with HttpClient(loopback(per_host_concurrency=limit,
                                   hosts={"127.0.0.3": HostLimits(concurrency=3)})) as http:
        got = await asyncio.wait_for(asyncio.gather(
            *(http.get(f"{a}/slow/{i}", max_bytes=10**6) for i in range(8)),
            *(http.get(f"{b}/slow/{i}", max_bytes=10**6) for i in range(8))), 60)
        assert http.hosts.get("127.0.0.2").in_flight == 0
    assert all(r.status == 200 and r.body == shop.body for r in got)
    assert shop.max_open == {"127.0.0.2": limit, "127.0.0.3": 3}


async def test_slow_bodies_hold_the_host_slot_through_open(slow_shop):
    shop, (a, _) = slow_shop
    async with HttpClient(loopback(per_host_concurrency=2)) as http:
        async def stream(i: int) -> bytes:
            async with http.open(f"{a}/slow/{i}") as resp:
                return b"".join([chunk async for chunk in resp.content.iter_chunked(1000)])

        bodies = await asyncio.wait_for(asyncio.gather(*(stream(i) for i in range(8))), 60)
    assert bodies == [shop.body] * 8 and shop.max_open["127.0.0.2"] == 2


async def test_global_concurrency_holds_during_bodies(slow_shop):
    """aiohttp's connector limit counts a connection until its body is read (passes on the code
    before issue 13 too: a guard for the connector settings)."""
    shop, (a, b) = slow_shop
    async with HttpClient(loopback(per_host_concurrency=8, concurrency=3)) as http:
        await asyncio.wait_for(asyncio.gather(
            *(http.get(f"{base}/slow/{i}", max_bytes=10**6) for i in range(6) for base in (a, b))), 60)
    assert shop.max_total == 3


async def test_redirects_and_retries_to_the_same_host_with_one_slot(slow_shop):
    shop, (a, _) = slow_shop
    async with HttpClient(loopback(per_host_concurrency=1)) as http:
        # /redirect/i -> /busy/i (503, retried from the start) -> ... -> /slow/i; robots.txt
        # too. Each hop and attempt gives the one slot back before the next asks for it.
        got = await asyncio.wait_for(asyncio.gather(
            *(http.get(f"{a}/redirect/{i}", max_bytes=10**6, check_robots=True) for i in range(4))), 60)
    assert all(r.status == 200 and r.final_url.endswith(f"/slow/{i}") for i, r in enumerate(got))
    assert shop.hits["/robots.txt"] == 1 and shop.max_open["127.0.0.2"] == 1


@pytest.mark.parametrize("via", ["get", "open"])
async def test_a_cancelled_body_read_gives_the_slot_back(slow_shop, via):
    shop, (a, _) = slow_shop
    async with HttpClient(loopback(per_host_concurrency=1)) as http:
        async def read_forever() -> None:
            if via == "get":
                await http.get(f"{a}/endless", max_bytes=10**9)
            else:
                async with http.open(f"{a}/endless") as resp:
                    async for _ in resp.content.iter_chunked(1024):
                        pass

        reader = asyncio.create_task(read_forever())
        await until(lambda: shop.endless_chunks >= 1)
        quick = asyncio.create_task(http.get(f"{a}/quick", max_bytes=100))
        sent = shop.endless_chunks
        await until(lambda: shop.endless_chunks >= sent + 5)
        assert shop.hits["/quick"] == 0  # waiting for the slot the streaming body holds
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert (await asyncio.wait_for(quick, 10)).body == b"ok"
        assert http.hosts.get("127.0.0.2").in_flight == 0


async def test_a_request_cancelled_while_paused_gives_the_slot_back(slow_shop):
    shop, (a, _) = slow_shop
    async with HttpClient(loopback(per_host_concurrency=1)) as http:
        host = http.hosts.get("127.0.0.2")
        host.pause(3600)
        waiting = asyncio.create_task(http.get(f"{a}/quick", max_bytes=100))
        await until(lambda: host.in_flight == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert host.in_flight == 0
        host.paused_until = 0.0
        assert (await asyncio.wait_for(http.get(f"{a}/quick", max_bytes=100), 10)).body == b"ok"


async def test_one_host_object_is_what_leasing_reads(slow_shop):
    shop, (a, _) = slow_shop
    settings_ = loopback(per_host_concurrency=2, hosts={"127.0.0.3": HostLimits(concurrency=5, rate=8)})
    async with HttpClient(settings_) as http:
        assert http.host_concurrency("127.0.0.2") == 2 and http.host_concurrency("127.0.0.3") == 5
        host = http.hosts.get("127.0.0.3")
        assert http.hosts.get("127.0.0.3".upper()) is host and host.rate == 8
        await http.get(f"{a}/quick", max_bytes=100)
        # The host the request used is the same object the accessor reads.
        assert http.hosts.get("127.0.0.2").concurrency == http.host_concurrency("127.0.0.2") == 2


async def test_download_holds_per_host_limits_through_bodies(slow_shop, tmp_path):
    """`ilid-async download` goes through HttpClient.get: per-host limits cover its bodies."""
    from ilid_async.run.download import download_dataset

    shop, bases = slow_shop
    entries = [dict(zip(DATASET_KEYS, [f"id-{i}", f"img/id-{i}.png", f"{bases[i % 2]}/slow/{i}", "part",
                                       "a part", "A part.", "steel", "grey", "slowshop"])) for i in range(12)]
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    report = await asyncio.wait_for(download_dataset(
        dataset, tmp_path / "images", width=32, height=32, workers=1,
        http_settings=loopback(per_host_concurrency=2, concurrency=16)), 120)
    assert report.downloaded == 12 and not report.failed
    assert shop.max_open == {"127.0.0.2": 2, "127.0.0.3": 2}


async def test_host_registry_unit():
    from ilid_async.crawl.hosts import Hosts

    hosts = Hosts(HttpSettings(per_host_concurrency=1, per_host_rate=0))
    host = hosts.get("shop.example")
    slot = await host.acquire()
    second = asyncio.create_task(host.acquire())
    await asyncio.sleep(0)
    assert not second.done() and host.in_flight == 1
    slot.release()
    slot.release()  # once only: a second release must not free a second place
    other = await asyncio.wait_for(second, 5)
    assert host.in_flight == 1
    third = asyncio.create_task(host.acquire())
    await asyncio.sleep(0)
    assert not third.done()
    other.release()
    (await asyncio.wait_for(third, 5)).release()
    assert host.in_flight == 0
