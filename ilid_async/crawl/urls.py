"""Small URL helpers shared by the store, the fetch layer and the pipeline."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

__all__ = ["split_url", "host_of", "domain_allowed"]

def split_url(url: str) -> SplitResult | None:
    """urlsplit, or None for a URL it refuses ("http://[oops/": an unclosed IPv6 bracket) or
    whose port is out of range: crawled text holds such URLs."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or too big
    except ValueError:
        return None
    return parts


def host_of(url: str) -> str:
    """The lower-cased host name; "" for a URL without one or one that does not parse."""
    parts = split_url(url)
    return (parts.hostname or "").lower() if parts is not None else ""


def domain_allowed(url: str, allowed: list[str]) -> bool:
    """A shop's allowed_domains: the host itself or any subdomain; an empty list allows all."""
    if not allowed:
        return True
    host = host_of(url)
    return any(host == d or host.endswith("." + d) for d in allowed)
