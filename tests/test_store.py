"""The store's lease/commit discipline on a real SQLite file."""

from __future__ import annotations

from ilid_async.store import Store


def test_leases_skip_busy_hosts_and_return_to_pending_on_reopen(tmp_path):
    store = Store(tmp_path / "state.sqlite")
    store.add_pages("shop", [(f"http://a.test/p/{i}", None) for i in range(5)])
    store.add_pages("shop", [(f"http://b.test/p/{i}", None) for i in range(3)])
    assert store.add_pages("shop", [("http://a.test/p/0", None)]) == 0  # seen before
    first = store.lease_pages(4)
    assert [t.host for t in first] == ["a.test"] * 4
    # a.test is at its limit: the next lease must give b.test's pages, not a.test's fifth.
    second = store.lease_pages(4, room=lambda host: 0 if host == "a.test" else 8)
    assert [t.url for t in second] == [f"http://b.test/p/{i}" for i in range(3)]
    store.release_leases()
    # With room for two per host, one lease gives each host two, never three of one.
    mixed = store.lease_pages(10, room=lambda host: 2)
    assert sorted(t.url for t in mixed) == sorted(
        [f"http://a.test/p/{i}" for i in range(2)] + [f"http://b.test/p/{i}" for i in range(2)])
    store.release_leases()
    first = store.lease_pages(4)
    second = store.lease_pages(3)
    store.finish_page(first[0].url, failed="http_404")
    store.close()

    reopened = Store(tmp_path / "state.sqlite")
    assert reopened.release_leases() == 6  # 3 + 3 leased pages were in flight at the "kill"
    leased_again = reopened.lease_pages(10)
    assert len(leased_again) == 7 and first[0].url not in {t.url for t in leased_again}
    reopened.close()
