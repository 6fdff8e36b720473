"""Small URL helpers shared by the store, the fetch layer and the pipeline."""

from __future__ import annotations

from urllib.parse import urlsplit


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def domain_allowed(url: str, allowed: list[str]) -> bool:
    """A shop's allowed_domains: the host itself or any subdomain; an empty list allows all."""
    if not allowed:
        return True
    host = host_of(url)
    return any(host == d or host.endswith("." + d) for d in allowed)
