"""Property tests (hypothesis) for the pure parsers that crawled text and config files reach:
URLs and config values. Whatever the input, they return a value or raise the documented error,
never anything else. (Retry-After and the address guard: test_hosts.py; sitemap bytes:
test_sitemap.py; charsets and page markup: test_extract.py.)"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from helpers import write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shop import SHOP_TOML

from ilid_async.config import load_config
from ilid_async.errors import UserError
from ilid_async.crawl.urls import domain_allowed, host_of, split_url

SHOP = SHOP_TOML.replace("{base}", "http://127.0.0.1:9")
QUICK = settings(max_examples=300, deadline=None)

# URL-ish text: the pieces crawled markup puts in <loc>, src and Location, recombined freely.
URL_PIECES = st.sampled_from(["http://", "https://", "//", "[", "]", "::1", "%", "%2", ":", "@",
                              "/", "?", "#", "..", "\\", " ", "\t", "\n", "127.0.0.1", "xn--",
                              "example.com", ":99999", ":-1", ":8080", "[v1.x]", "\u3002", "\uff0f"])
URLISH = st.lists(st.one_of(URL_PIECES, st.text(max_size=6)), max_size=12).map("".join)


@QUICK
@given(URLISH)
def test_split_url_returns_parts_or_none(url):
    parts = split_url(url)
    if parts is not None:
        assert parts.port is None or 0 <= parts.port <= 65535  # a usable port, or none


@QUICK
@given(URLISH, st.lists(st.sampled_from(["example.com", "com", "127.0.0.1", ""]), max_size=3))
def test_host_and_domain_never_raise(url, allowed):
    host = host_of(url)
    assert host == host.lower()
    verdict = domain_allowed(url, allowed)
    assert isinstance(verdict, bool)
    if verdict and allowed:
        assert any(host == d or host.endswith("." + d) for d in allowed)


# --- config values ----------------------------------------------------------------------------

# Keys whose values crawl settings hinge on, with any TOML value in their place.
CONFIG_KEYS = [
    ("run", "dir"), ("run", "dataset"), ("run", "max_label_backlog"), ("run", "extract_workers"),
    ("demo", "port"), ("demo", "products"), ("demo", "seed"),
    ("http", "user_agent"), ("http", "concurrency"), ("http", "per_host_concurrency"),
    ("http", "per_host_rate"), ("http", "connect_timeout"), ("http", "timeout"), ("http", "retries"),
    ("http", "backoff"), ("http", "max_redirects"), ("http", "max_page_bytes"),
    ("http", "max_sitemap_bytes"), ("http", "max_image_bytes"), ("http", "max_sitemaps"),
    ("http", "max_sitemap_depth"), ("http", "allow_loopback"),
    ("llm", "n_ctx"), ("llm", "n_parallel"), ("llm", "n_batch"), ("llm", "temperature"), ("llm", "top_p"),
    ("llm", "debug_fraction"), ("llm", "max_input_chars"), ("llm", "flash_attn"), ("llm", "backend"),
    ("images", "width"), ("images", "height"), ("images", "workers"), ("images", "max_pixels"),
    ("images", "format"), ("images", "png_compress_level"), ("images", "quality"),
    ("images", "duplicates"), ("images", "near_duplicate_bits"),
    ("output", "formats"), ("output", "shard_size"), ("filters", "min_field_length"),
]

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.integers(min_value=-2**63, max_value=2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), TEXT, st.sampled_from(["png", "on", "auto", "keep", "openai", "ilid", ""]),
)
# The values that broke settings before (issue 13): hypothesis is steered to them, then roams.
EDGES = st.sampled_from([0, -1, -5, 70000, 2**40, 0.0, -0.5, math.nan, math.inf, -math.inf, "", "a\r\nb",
                         "x\u0000", "../x", "a/b"])
VALUES = st.one_of(EDGES, SCALARS, st.lists(SCALARS, max_size=3))


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) \
            else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's (or a TOML error)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def _finite_numbers(cfg) -> bool:
    for section in (cfg.run, cfg.demo, cfg.http, cfg.llm, cfg.images, cfg.output, cfg.filters):
        for name in dir(section):
            value = getattr(section, name, None)
            if isinstance(value, float) and not math.isfinite(value):
                return False
    return True


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), VALUES), min_size=1, max_size=2,
                unique_by=lambda kv: kv[0]))
def test_config_values_load_or_name_the_key(pairs):
    sections: dict[str, str] = {}
    for (table, key), value in pairs:
        sections[table] = sections.get(table, "") + f"{key} = {toml_value(value)}\n"
    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), SHOP, **sections)
        try:
            cfg = load_config(config)
        except UserError as e:
            message = str(e)
            assert "\n" not in message and message.startswith(str(Path(folder)))
            return
        # What loads is usable: no number that disables a timeout or a rate (nan, inf).
        assert _finite_numbers(cfg)
        assert 1 <= cfg.demo.port <= 65535 and cfg.images.width > 0 and cfg.images.height > 0
        assert cfg.http.timeout > 0 and cfg.http.concurrency > 0 and cfg.run.dataset
        assert not any(c in cfg.http.user_agent for c in "\r\n\0")
