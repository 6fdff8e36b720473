"""Shared fixtures only: the helpers that tests import are in helpers.py, the test shop in shop.py."""

from __future__ import annotations

import pytest
from shop import ShopServer

# helpers.py is a plain module: have pytest rewrite its asserts too, so that they explain a failure.
pytest.register_assert_rewrite("helpers")


@pytest.fixture
def shop_server():
    server = ShopServer().start()
    yield server
    server.stop()
