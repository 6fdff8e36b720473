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


def test_a_refetched_page_updates_its_own_record_and_a_copy_elsewhere_is_a_duplicate(tmp_path):
    store = Store(tmp_path / "state.sqlite")
    store.add_pages("shop", [("http://a.test/p/1", None), ("http://a.test/p/2", None)])
    common = dict(record_id="r1", shop="shop", source="s", image_url="http://a.test/i.jpg", reject_reason=None)
    first = store.commit_page_record("http://a.test/p/1", raw_label="Hinge", raw_data=["zinc"],
                                     cleaned=("Hinge", ["zinc"]), **common)
    assert first == ("record", None)
    labels = {"label_short": "hinge", "label_long": "zinc hinge", "description": None, "material": "zinc",
              "material_finish": None}
    store.lease_for_labelling(10)
    assert store.commit_labels("r1", answer=labels, labels=labels, folder="hinge") == "to_image"
    # Another page with the same image: SPEC 2 rule 1 keeps the first record.
    assert store.commit_page_record("http://a.test/p/2", raw_label="Hinge 2", raw_data=["x"],
                                    cleaned=("Hinge", ["x"]), **common) == ("duplicate_image_url", None)
    # The same page fetched again, unchanged: nothing to do.
    assert store.commit_page_record("http://a.test/p/1", raw_label="Hinge", raw_data=["zinc"],
                                    cleaned=("Hinge", ["zinc"]), **common) == ("record", None)
    assert store.count_records("to_image") == 1
    # Changed text: labelled again; the old image is named so that it can be removed.
    assert store.commit_page_record("http://a.test/p/1", raw_label="Hinge", raw_data=["brass"],
                                    cleaned=("Hinge", ["brass"]), **common) == ("record", "hinge/r1.png")
    assert store.count_records("to_label") == 1 and store.count_records("to_image") == 0
    store.close()
