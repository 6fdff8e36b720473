"""Every request goes through here: sitemaps, robots.txt, pages and images alike.

One aiohttp session, whose connector caps connections over all hosts (``http.concurrency``; a
connection is held until its body is read or dropped). Per host, a ``hosts.Host``: a concurrency
cap whose slot each request holds from before it is sent until its response is released (body
included; a redirect hop or a retried attempt gives its slot back before the next one asks), and
a rate limit on request starts that a Retry-After or a robots.txt Crawl-delay can tighten.
Retries with exponential backoff and jitter for transient failures; caps on time, redirects and
body size; and an address guard (``address_allowed``) that refuses every address that is not
globally routable unless the config allows it, checked on every redirect hop and again when
aiohttp resolves the name to connect (so DNS cannot swap the address).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import random
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDictProxy
from protego import Protego

from ilid_async import reasons
from ilid_async.config import HttpSettings
from ilid_async.errors import ItemError
from ilid_async.crawl.hosts import Hosts, Slot
from ilid_async.crawl.urls import host_of, split_url

__all__ = [
    "RETRY_STATUSES", "REDIRECT_STATUSES", "MAX_RETRY_AFTER", "AddressRefused", "address_allowed", "GuardedResolver",
    "Response", "HostStats", "retry_after_seconds", "HttpClient"
]

RETRY_STATUSES = {429, 500, 502, 503, 504}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
MAX_RETRY_AFTER = 600.0  # a server asking for more than 10 minutes gets 10 minutes


class AddressRefused(OSError):
    """The host resolves to an address class the config does not allow."""


# The NAT64 well-known prefix: on an IPv6-only network with DNS64 every IPv4 host resolves into
# it, and the translator connects to the IPv4 address in the last 32 bits.
_NAT64 = IPv6Network("64:ff9b::/96")
# Deprecated IPv4-compatible addresses (::a.b.c.d); :: and ::1 are in it too and judged as such.
_IPV4_COMPATIBLE = IPv6Network("::/96")


def _needs(addr: IPv4Address | IPv6Address) -> set[str]:
    """The permissions ("loopback", "private") connecting to ``addr`` needs; empty if global."""
    if isinstance(addr, IPv6Address):
        if addr.ipv4_mapped is not None:  # the socket connects to the IPv4 address itself
            return _needs(addr.ipv4_mapped)
        if addr in _NAT64:  # judged as the IPv4 address it translates to, as if asked directly
            return _needs(IPv4Address(int(addr) & 0xFFFFFFFF))
        inner = [a for a in (addr.sixtofour, *(addr.teredo or ())) if a is not None]
        if addr in _IPV4_COMPATIBLE and not (addr.is_unspecified or addr.is_loopback):
            inner.append(IPv4Address(int(addr)))
        if inner:
            # Tunnels into IPv4 (6to4, Teredo, IPv4-compatible) are deprecated, and relays
            # forward to the embedded address: internal use at best, and the embedded address
            # must pass too, so none of them is a way around the guard.
            return {"private"}.union(*(_needs(a) for a in inner))
    if addr.is_loopback or addr.is_unspecified:  # Linux connects 0.0.0.0 and :: to the local host
        return {"loopback"}
    # is_global alone is not enough on every Python: 3.11 counts multicast, fec0::/10 and 6to4
    # as global.
    if (not addr.is_global or addr.is_private or addr.is_link_local or addr.is_multicast
            or addr.is_reserved or getattr(addr, "is_site_local", False)):
        return {"private"}
    return set()


def address_allowed(ip: str | IPv4Address | IPv6Address, *, allow_loopback: bool,
                    allow_private: bool) -> bool:
    """Whether the crawler may connect to ``ip`` (a resolver's answer, zone id allowed).

    By default only globally routable unicast addresses pass. ``allow_loopback`` adds the local
    host: 127.0.0.0/8, ::1, and the unspecified 0.0.0.0 and :: (which reach the local host).
    ``allow_private`` adds every other address that is not global: private (10/8, 172.16/12,
    192.168/16, fc00::/7), link-local (169.254/16, where cloud metadata services listen;
    fe80::/10), shared CGNAT space 100.64/10 (another cloud's metadata at 100.100.100.200),
    documentation, benchmarking and reserved ranges, multicast and broadcast. An address with
    an IPv4 address inside is judged by that too, and the stricter verdict wins: IPv4-mapped
    (::ffff:a.b.c.d) and NAT64 (64:ff9b::/96) count as the IPv4 address; 6to4 (2002::/16),
    Teredo (2001::/32) and IPv4-compatible (::a.b.c.d) need ``allow_private`` and the embedded
    address's permission. A string that is no IP address is never allowed (False); anything
    but a string or an ``ipaddress`` address is a caller's bug: TypeError.
    """
    if isinstance(ip, str):
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])  # "fe80::1%eth0": the zone id goes
        except ValueError:
            return False
    elif isinstance(ip, (IPv4Address, IPv6Address)):
        addr = ip
    else:
        raise TypeError(f"an IP address as str or ipaddress object, not {type(ip).__name__}")
    needs = _needs(addr)
    return (allow_loopback or "loopback" not in needs) and (allow_private or "private" not in needs)


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops refused addresses at connect time."""

    def __init__(self, settings: HttpSettings):
        self._inner = DefaultResolver()
        self._settings = settings

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        allowed = [
            i for i in infos
            if address_allowed(i["host"], allow_loopback=self._settings.allow_loopback,
                               allow_private=self._settings.allow_private)
        ]
        if not allowed:
            raise AddressRefused(f"{host} resolves only to refused addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class Response:
    url: str  # the URL asked for
    final_url: str  # after redirects
    status: int
    headers: CIMultiDictProxy
    body: bytes

    @property
    def ok(self) -> bool:
        """The one status a stage takes a body from: 200 (redirects are followed already)."""
        return self.status == 200

    def raise_for_status(self) -> None:
        """Raise ItemError ``http_<status>`` (reasons.http_status) unless the answer is ok."""
        if not self.ok:
            raise ItemError(reasons.http_status(self.status), self.url)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        """The charset parameter of Content-Type, if any."""
        for part in self.headers.get("Content-Type", "").split(";")[1:]:
            key, _, value = part.partition("=")
            if key.strip().lower() == "charset":
                return value.strip().strip('"') or None
        return None


@dataclass
class HostStats:
    requests: int = 0
    retries: int = 0
    by_class: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    status_429: int = 0
    errors: int = 0
    bytes: int = 0
    latency_total: float = 0.0

    def reset(self) -> None:
        """Every counter back to zero, in place: requests in flight hold this object."""
        self.__dict__.update(HostStats().__dict__)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    # ASCII digits only: "²" or "٣" pass str.isdigit() but not float(); they mean nothing here.
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


class HttpClient:
    def __init__(self, settings: HttpSettings):
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self.hosts = Hosts(settings)  # the one per-host state: this client and the stages' leasing
        self._robots: dict[str, Protego | None] = {}
        self._robots_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._address_ok: dict[str, bool] = {}
        self.stats: dict[str, HostStats] = defaultdict(HostStats)

    async def __aenter__(self) -> HttpClient:
        s = self.settings
        connector = aiohttp.TCPConnector(
            # Per-host caps are ours (hosts.Host, with overrides). A connection counts against
            # the limit until its response is released, so this caps bodies being read too.
            limit=s.concurrency, limit_per_host=0,
            resolver=GuardedResolver(s), ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=s.timeout, sock_connect=s.connect_timeout),
            headers={"User-Agent": s.user_agent},
            auto_decompress=True,  # Content-Encoding only; gzip *files* are handled by sitemap.py
        )
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session:
            await self._session.close()

    def host_concurrency(self, host: str) -> int:
        """Requests to ``host`` that may be in flight at once: what a stage leases up to."""
        return self.hosts.concurrency(host)

    def take_stats(self) -> list[tuple]:
        """Rows for Store.add_host_stats; counting restarts so rows are deltas. The counters are
        zeroed in place, not replaced: requests in flight hold them and count into them later."""
        rows = []
        for h, s in self.stats.items():
            rows.append((h, s.requests, s.retries, s.by_class["2xx"], s.by_class["3xx"],
                         s.by_class["4xx"], s.by_class["5xx"], s.status_429, s.errors, s.bytes,
                         s.latency_total))
            s.reset()
        return rows

    # --- address guard --------------------------------------------------------------------

    def count_bytes(self, url: str, n: int) -> None:
        """For bodies read as a stream through open()."""
        self.stats[host_of(url)].bytes += n

    async def check_address(self, url: str, parts=None) -> None:
        parts = parts or split_url(url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ItemError(reasons.BAD_URL, url)
        # One look-up per host and run: the resolver guard checks again at every connect.
        if (verdict := self._address_ok.get(parts.hostname)) is None:
            verdict = self._address_ok[parts.hostname] = await self._resolve_allowed(parts)
        if not verdict:
            raise ItemError(reasons.ADDRESS_REFUSED, f"{parts.hostname} resolves to a refused address")

    async def _resolve_allowed(self, parts) -> bool:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, parts.port or 80, type=socket.SOCK_STREAM
            )
        except socket.gaierror as e:
            raise ItemError(reasons.DNS_ERROR, f"{parts.hostname}: {e}") from None
        s = self.settings
        return all(address_allowed(str(i[4][0]), allow_loopback=s.allow_loopback, allow_private=s.allow_private)
                   for i in infos)

    # --- robots.txt -----------------------------------------------------------------------

    async def robots(self, url: str, parts=None) -> Protego | None:
        """robots.txt of the URL's origin, fetched once per run; None if there is none."""
        parts = parts or split_url(url)
        if parts is None:
            return None  # a URL that does not parse is refused by get() (bad_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:  # the lock only while it may still need fetching
            async with self._robots_locks[origin]:
                if origin not in self._robots:
                    self._robots[origin] = await self._fetch_robots(origin + "/robots.txt")
        return self._robots[origin]

    async def _fetch_robots(self, robots_url: str) -> Protego | None:
        try:
            resp = await self.get(robots_url, max_bytes=500_000, check_robots=False)
        except ItemError:
            return None  # unreachable robots.txt: crawl as if there were none, like browsers
        if not resp.ok:
            return None
        rules = Protego.parse(resp.body.decode("utf-8", "replace"))
        delay = rules.crawl_delay(self.settings.user_agent)
        if delay:
            self.hosts.get(host_of(robots_url)).lower_rate(1.0 / float(delay))
        return rules

    async def allowed_by_robots(self, url: str, parts=None) -> bool:
        rules = await self.robots(url, parts)
        return rules is None or rules.can_fetch(url, self.settings.user_agent)

    # --- requests -------------------------------------------------------------------------

    async def get(
        self,
        url: str,
        *,
        max_bytes: int,
        headers: dict[str, str] | None = None,
        check_robots: bool = False,
    ) -> Response:
        """GET with politeness, redirects, retries and a body cap. Returns any final status;
        raises ItemError for what never produced one (timeouts, refused, too large, ...)."""
        async with self.open(url, headers=headers, check_robots=check_robots) as resp:
            length = resp.content_length
            if length is not None and length <= max_bytes and not resp.headers.get("Content-Encoding"):
                # The common case, in one read: aiohttp stops at Content-Length, so the cap holds.
                body = await resp.read()
            else:
                buffer = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    buffer += chunk
                    if len(buffer) > max_bytes:
                        raise ItemError(reasons.TOO_LARGE, f"body over {max_bytes} bytes")
                body = bytes(buffer)
            self.stats[host_of(url)].bytes += len(body)
            return Response(url, str(resp.url), resp.status, resp.headers, body)

    @asynccontextmanager
    async def open(
        self, url: str, *, headers: dict[str, str] | None = None, check_robots: bool = False
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An open response after redirects and retries, for reading the body as a stream. It
        holds its host's slot until the block is left, however it is left."""
        assert self._session is not None, "use HttpClient as an async context manager"
        s = self.settings
        attempt = 0
        while True:
            try:
                resp, slot = await self._follow_redirects(url, headers, check_robots)
            except ItemError as e:
                if e.reason in reasons.RETRIED_ON and attempt < s.retries:
                    attempt += 1
                    self.stats[host_of(url)].retries += 1
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                raise
            if resp.status in RETRY_STATUSES and attempt < s.retries:
                pause = retry_after_seconds(resp.headers.get("Retry-After"))
                resp.release()
                slot.release()  # before waiting: the backoff must not hold a slot of the host
                attempt += 1
                self.stats[host_of(url)].retries += 1
                if pause is not None and resp.status in (429, 503):
                    # The server told us when: pause the whole host, not just this request.
                    self.hosts.get(host_of(str(resp.url))).pause(pause)
                else:
                    await asyncio.sleep(self._backoff(attempt))
                continue
            break
        # No await between _follow_redirects returning and this try: a cancellation cannot
        # come in between, so the finally always gives the slot back.
        try:
            yield resp
        except asyncio.TimeoutError:
            raise ItemError(reasons.TIMEOUT, url) from None
        except aiohttp.ClientError as e:
            raise ItemError(reasons.CONNECTION_ERROR, f"{type(e).__name__}: {e}") from None
        finally:
            resp.release()
            slot.release()

    def _backoff(self, attempt: int) -> float:
        return self.settings.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)

    async def _follow_redirects(
        self, url: str, headers: dict[str, str] | None, check_robots: bool
    ) -> tuple[aiohttp.ClientResponse, Slot]:
        """The final response of a redirect chain and the host slot it holds."""
        seen = set()
        for _ in range(self.settings.max_redirects + 1):
            if url in seen:
                raise ItemError(reasons.REDIRECT_LOOP, url)
            seen.add(url)
            parts = split_url(url)  # once per hop: the guard, robots.txt and the host share it
            if parts is None:
                raise ItemError(reasons.BAD_URL, url)
            await self.check_address(url, parts)
            if check_robots and not await self.allowed_by_robots(url, parts):
                raise ItemError(reasons.ROBOTS_DISALLOWED, url)
            resp, slot = await self._request(url, (parts.hostname or "").lower(), headers)
            if resp.status not in REDIRECT_STATUSES:
                return resp, slot
            location = resp.headers.get("Location")
            # Each hop gives its slot back before the next asks: with one slot per host, a
            # redirect to the same host (or its robots.txt) would otherwise wait for itself.
            resp.release()
            slot.release()
            if not location:
                raise ItemError(reasons.BAD_REDIRECT, f"{resp.status} without Location")
            try:
                url = urljoin(url, location)
            except ValueError:  # a Location that no URL parser takes
                raise ItemError(reasons.BAD_URL, f"redirect to {location!r}") from None
        raise ItemError(reasons.TOO_MANY_REDIRECTS, url)

    async def _request(
        self, url: str, host_name: str, headers: dict[str, str] | None
    ) -> tuple[aiohttp.ClientResponse, Slot]:
        """One request, headers read; the returned slot stays taken until the caller releases
        it with the response. On any error (cancellation included) it is released here."""
        assert self._session is not None, "use HttpClient as an async context manager"
        stats = self.stats[host_name]
        slot = await self.hosts.get(host_name).acquire()
        try:
            started = time.monotonic()
            stats.requests += 1
            try:
                resp = await self._session.get(url, headers=headers, allow_redirects=False)
            except asyncio.TimeoutError:
                stats.errors += 1
                raise ItemError(reasons.TIMEOUT, url) from None
            except aiohttp.ClientConnectorError as e:
                stats.errors += 1
                if isinstance(getattr(e, "os_error", None), AddressRefused):
                    raise ItemError(reasons.ADDRESS_REFUSED, str(e.os_error)) from None
                raise ItemError(reasons.CONNECTION_ERROR, f"{type(e).__name__}: {e}") from None
            except aiohttp.ClientError as e:
                stats.errors += 1
                raise ItemError(reasons.CONNECTION_ERROR, f"{type(e).__name__}: {e}") from None
        except BaseException:
            slot.release()
            raise
        stats.latency_total += time.monotonic() - started
        stats.by_class[f"{resp.status // 100}xx"] += 1
        if resp.status == 429:
            stats.status_429 += 1
        return resp, slot
