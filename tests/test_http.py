"""The fetch layer's defaults: address guard, robots.txt, retries, caps (deepened by issue 3)."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest
from aiohttp import web

from ilid_async.config import HttpSettings
from ilid_async.errors import ItemError
from ilid_async.crawl.http import HttpClient, address_allowed, retry_after_seconds


@pytest.mark.parametrize(
    "ip, loopback, private, allowed",
    [
        ("127.0.0.1", False, False, False), ("127.0.0.1", True, False, True), ("::1", True, False, True),
        ("10.1.2.3", False, False, False), ("10.1.2.3", False, True, True), ("192.168.0.1", True, False, False),
        ("169.254.169.254", False, False, False), ("224.0.0.1", False, False, False),
        ("::ffff:127.0.0.1", False, False, False), ("0.0.0.0", False, False, False),
        ("93.184.216.34", False, False, True),
        # Kept by issue 13's stricter guard (tests/test_hosts.py has the ranges it added).
        ("2606:4700::1111", False, False, True), ("fe80::1%eth0", False, True, True),
        ("::ffff:127.0.0.1", True, False, True), ("::ffff:127.0.0.1", False, True, False),
        ("100.100.100.200", False, True, True), ("2002:a9fe:a9fe::", False, True, True),
        ("2002:7f00:1::", True, True, True), ("64:ff9b::7f00:1", False, False, False),
        ("64:ff9b::a9fe:a9fe", True, False, False), ("224.0.0.1", False, True, True),
        ("ff02::1", False, False, False), ("ff02::1", False, True, True), ("::7f00:1", True, False, False),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", True, True, True),  # Teredo to 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:a2cb:2bdd", False, False, False),  # Teredo, both global
        ("2001:0:4136:e378:8000:63bf:a2cb:2bdd", False, True, True),
    ],
)
def test_address_classes(ip, loopback, private, allowed):
    assert address_allowed(ip, allow_loopback=loopback, allow_private=private) is allowed


def test_retry_after_forms():
    assert retry_after_seconds("7") == 7.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= retry_after_seconds(date, now=now) <= 31
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    # Unicode digits pass str.isdigit() but are no number of seconds: absent, not a crash.
    assert retry_after_seconds("²") is None and retry_after_seconds("٣٠") is None
    assert retry_after_seconds("999999") == 600.0


@pytest.fixture
async def faulty_server():
    """A small server with a few faults; counts requests per path and logs arrival times."""
    hits: dict[str, int] = {}
    arrivals: list[tuple[float, str]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        hits[path] = hits.get(path, 0) + 1
        arrivals.append((time.monotonic(), path))
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /private\n")
        if path == "/flaky":  # 500 once, then fine
            return web.Response(status=500) if hits[path] == 1 else web.Response(text="ok")
        if path == "/limited":  # 429 with Retry-After once, then fine
            if hits[path] == 1:
                return web.Response(status=429, headers={"Retry-After": "1"})
            return web.Response(text="ok")
        if path == "/loop":
            raise web.HTTPFound("/loop2")
        if path == "/loop2":
            raise web.HTTPFound("/loop")
        if path == "/big":
            return web.Response(body=b"x" * 200_000)
        if path == "/private/page":
            return web.Response(text="secret")
        if path == "/slow":  # holds the request open a moment: the client waits mid-request
            await asyncio.sleep(0.3)
            return web.Response(text="slow")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", hits, arrivals
    await runner.cleanup()


async def test_loopback_refused_by_default(faulty_server):
    base, hits, arrivals = faulty_server
    async with HttpClient(HttpSettings()) as http:
        with pytest.raises(ItemError) as err:
            await http.get(f"{base}/flaky", max_bytes=1000)
    assert err.value.reason == "address_refused" and hits == {}


@pytest.mark.slow
async def test_transient_faults_recover_and_permanent_ones_are_recorded(faulty_server):
    base, hits, arrivals = faulty_server
    async with HttpClient(HttpSettings(allow_loopback=True, backoff=0.01)) as http:
        assert (await http.get(f"{base}/flaky", max_bytes=1000)).body == b"ok"
        started = time.monotonic()
        assert (await http.get(f"{base}/limited", max_bytes=1000)).body == b"ok"
        assert time.monotonic() - started >= 0.9  # waited for Retry-After
        assert (await http.get(f"{base}/missing", max_bytes=1000)).status == 404
        with pytest.raises(ItemError) as err:
            await http.get(f"{base}/loop", max_bytes=1000)
        assert err.value.reason == "redirect_loop"
        with pytest.raises(ItemError) as err:
            await http.get(f"{base}/big", max_bytes=100_000)
        assert err.value.reason == "too_large"
        with pytest.raises(ItemError) as err:
            await http.get(f"{base}/private/page", max_bytes=1000, check_robots=True)
        assert err.value.reason == "robots_disallowed"
        stats = http.take_stats()
    assert hits["/flaky"] == 2 and hits["/limited"] == 2 and hits["/missing"] == 1
    assert "/private/page" not in hits
    (row,) = stats
    assert row[0] == "127.0.0.1" and row[2] == 2 and row[7] == 1  # two retries, one 429


@pytest.mark.slow
async def test_retry_after_pauses_the_whole_host(faulty_server):
    base, hits, arrivals = faulty_server
    async with HttpClient(HttpSettings(allow_loopback=True, per_host_rate=0, per_host_concurrency=1)) as http:
        first = asyncio.ensure_future(http.get(f"{base}/limited", max_bytes=1000))
        while "/limited" not in hits:  # wait until the 429 has been served
            await asyncio.sleep(0.01)
        others = [await http.get(f"{base}/other/{i}", max_bytes=1000) for i in range(2)]
        assert (await first).body == b"ok" and all(r.status == 404 for r in others)
    (told,) = [t for t, p in arrivals if p == "/limited"][:1]
    later = [t for t, p in arrivals if p != "/limited"]
    # No request to that host arrived during the second the server asked for.
    assert later and all(t - told >= 0.95 for t in later)


async def test_stats_taken_while_a_request_waits_lose_nothing(faulty_server):
    base, hits, arrivals = faulty_server
    async with HttpClient(HttpSettings(allow_loopback=True, per_host_rate=0)) as http:
        waiting = asyncio.ensure_future(http.get(f"{base}/slow", max_bytes=1000))
        while "/slow" not in hits:  # the server has it: the client is waiting for the answer
            await asyncio.sleep(0.01)
        first = http.take_stats()
        assert (await waiting).body == b"slow"
        second = http.take_stats()
    rows = [row for row in first + second if row[0] == "127.0.0.1"]
    # The request and its 200 are counted once each, whichever delta they fell into.
    assert sum(r[1] for r in rows) == 1 and sum(r[3] for r in rows) == 1
    assert sum(r[9] for r in rows) == len(b"slow")


@pytest.mark.parametrize("url", ["http://[oops/x", "http://[::1/p", "http://shop.example:99999/p", "http://a:port/p"])
async def test_a_url_no_parser_takes_is_bad_url(url):
    from ilid_async.crawl.urls import domain_allowed, host_of, split_url

    assert split_url(url) is None and host_of(url) == "" and not domain_allowed(url, ["shop.example"])
    async with HttpClient(HttpSettings(allow_loopback=True)) as http:
        with pytest.raises(ItemError) as err:
            await http.get(url, max_bytes=1000)
    assert err.value.reason == "bad_url"


@pytest.mark.parametrize("status", [200, 204, 404, 503])
def test_raise_for_status_takes_only_200_and_names_the_status(status):
    from multidict import CIMultiDict, CIMultiDictProxy

    from ilid_async.crawl.http import Response

    resp = Response("http://127.0.0.1/a", "http://127.0.0.1/a", status, CIMultiDictProxy(CIMultiDict()), b"")
    assert resp.ok == (status == 200)
    if status == 200:
        resp.raise_for_status()
        return
    with pytest.raises(ItemError) as caught:
        resp.raise_for_status()
    assert caught.value.reason == f"http_{status}" and caught.value.detail == "http://127.0.0.1/a"
