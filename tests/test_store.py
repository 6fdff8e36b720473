"""The store's lease/commit discipline on a real SQLite file."""

from __future__ import annotations

import pytest

from ilid_async.run.store import Store


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
    # Another page with the same image: rules §2 rule 1 keeps the first record.
    assert store.commit_page_record("http://a.test/p/2", raw_label="Hinge 2", raw_data=["x"],
                                    cleaned=("Hinge", ["x"]), **common) == ("duplicate_image_url", None)
    # The same page fetched again, unchanged: nothing to do.
    assert store.commit_page_record("http://a.test/p/1", raw_label="Hinge", raw_data=["zinc"],
                                    cleaned=("Hinge", ["zinc"]), **common) == ("record", None)
    assert store.queries.count_records("to_image") == 1
    # Changed text: labelled again; the old image is named so that it can be removed.
    assert store.commit_page_record("http://a.test/p/1", raw_label="Hinge", raw_data=["brass"],
                                    cleaned=("Hinge", ["brass"]), **common) == ("record", "hinge/r1.png")
    assert store.queries.count_records("to_label") == 1 and store.queries.count_records("to_image") == 0
    store.close()


def _committed_pages(path) -> dict[str, str]:
    """Page states as another process sees them: only what was committed."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT url, state FROM pages"))
    finally:
        db.close()


def test_group_commits_hold_items_until_the_group_is_full_or_flushed(tmp_path):
    path = tmp_path / "state.sqlite"
    store = Store(path)
    store.add_pages("shop", [(f"http://a.test/p/{i}", None) for i in range(6)])
    store.database.group_commits(max_items=4, max_seconds=3600)
    leased = store.lease_pages(6)  # one item of the group
    store.finish_page(leased[0].url, outcome="no_image")
    store.finish_page(leased[1].url, failed="http_404")
    # This connection sees its own work; another one sees none of it yet.
    assert store.queries.count_records("to_label") == 0
    assert set(_committed_pages(path).values()) == {"pending"}
    store.finish_page(leased[2].url, outcome="no_image")  # the fourth item: the group commits
    assert list(_committed_pages(path).values()).count("done") == 2
    store.finish_page(leased[3].url, outcome="no_image")
    assert list(_committed_pages(path).values()).count("done") == 2
    store.database.flush()
    assert list(_committed_pages(path).values()).count("done") == 3
    store.close()


def test_a_failing_item_in_a_group_rolls_back_only_itself(tmp_path):
    path = tmp_path / "state.sqlite"
    store = Store(path)
    store.add_pages("shop", [("http://a.test/p/1", None), ("http://a.test/p/2", None)])
    store.database.group_commits(max_items=100, max_seconds=3600)
    store.finish_page("http://a.test/p/1", outcome="no_image")
    try:
        with store.database.transaction() as db:
            db.execute("UPDATE pages SET state='done' WHERE url='http://a.test/p/2'")
            raise RuntimeError("the item's work failed half-way")
    except RuntimeError:
        pass
    store.database.flush()
    assert _committed_pages(path) == {"http://a.test/p/1": "done", "http://a.test/p/2": "pending"}
    store.close()


def test_a_killed_group_loses_its_leases_with_its_results(tmp_path):
    """What SIGKILL does to an open group: neither the lease nor the result survives, so the
    work is pending again (not leased and lost, not done without its result)."""
    import os
    import subprocess
    import sys

    path = tmp_path / "state.sqlite"
    store = Store(path)
    store.add_pages("shop", [(f"http://a.test/p/{i}", None) for i in range(3)])
    store.close()
    child = (
        "import os, sys\n"
        "from ilid_async.run.store import Store\n"
        f"store = Store({str(path)!r})\n"
        "store.database.group_commits(max_items=100, max_seconds=3600)\n"
        "done = store.lease_pages(1)[0].url\n"
        "store.finish_page(done, outcome='no_image')\n"
        "store.lease_pages(2)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", child], env={**os.environ}, capture_output=True)
    assert proc.returncode == -9, proc.stderr
    reopened = Store(path)
    assert reopened.release_leases() == 0
    assert {t.url for t in reopened.lease_pages(10)} == {f"http://a.test/p/{i}" for i in range(3)}
    reopened.close()


@pytest.mark.parametrize("content", [b"this is no database" * 100, b"SQLite format 3\x00" + b"\x00" * 50])
@pytest.mark.parametrize("readonly", [False, True])
def test_a_corrupt_state_store_is_a_user_error_naming_it(tmp_path, content, readonly):
    from ilid_async.errors import UserError

    path = tmp_path / "state.sqlite"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        Store(path, readonly=readonly)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_status_of_a_corrupt_store_is_one_line_exit_2(tmp_path):
    from helpers import run_cli, write_config

    config = write_config(tmp_path, "source = 'x'\nsitemap_urls = ['http://127.0.0.1:9/s.xml']\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.sqlite").write_bytes(b"garbage" * 1000)
    for command in ("status", "run"):
        result = run_cli(command, str(config), timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "state.sqlite" in lines[0], result.stderr


def test_an_older_store_gains_the_sitemap_depth_and_children_count_against_the_caps(tmp_path):
    import sqlite3

    path = tmp_path / "state.sqlite"
    old = sqlite3.connect(path)  # the sitemaps table as the first release made it
    old.execute("CREATE TABLE sitemaps (url TEXT PRIMARY KEY, shop TEXT NOT NULL, host TEXT NOT NULL, "
                "state TEXT NOT NULL, reason TEXT, urls_found INTEGER NOT NULL DEFAULT 0, "
                "pass INTEGER NOT NULL DEFAULT 0, updated REAL)")
    old.execute("INSERT INTO sitemaps VALUES ('http://a.test/s.xml', 'shop', 'a.test', 'pending', NULL, 0, 0, 0)")
    old.commit()
    old.close()
    store = Store(path)
    try:
        (seed,) = store.lease_sitemaps(10)
        assert seed.depth == 0
        # Two of five children fit under max_sitemaps = 3 (the seed is one); as many refusals as
        # that get rows (the children met before in this pass take no room and are no refusal).
        children = [f"http://a.test/c{i}.xml" for i in range(5)]
        assert store.add_sitemaps("shop", children, 0, depth=1, max_sitemaps=3,
                                  refused=[("http://b.test/x.xml", "off_domain")]) == 2
        assert store.add_sitemaps("shop", children[:2], 0, depth=1, max_sitemaps=3) == 0
        rows = dict(((u, (s, r, d)) for u, s, r, d in store.db.execute(
            "SELECT url, state, reason, depth FROM sitemaps WHERE url <> ?", (seed.url,))))
        assert rows == {children[0]: ("pending", None, 1), children[1]: ("pending", None, 1),
                        "http://b.test/x.xml": ("failed", "off_domain", 1),
                        children[2]: ("failed", "too_many_sitemaps", 1),
                        children[3]: ("failed", "too_many_sitemaps", 1)}
        assert store.queries.counters() == {"sitemaps_refused_unrecorded": 1}  # children[4]
        assert [t.depth for t in store.lease_sitemaps(10)] == [1, 1]
    finally:
        store.close()


HOLD_EXCLUSIVE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_a_store_another_program_keeps_locked_is_one_line_exit_2_and_status_still_reads(tmp_path):
    import subprocess
    import sys

    from helpers import run_cli, write_config

    config = write_config(tmp_path, "source = 'x'\nsitemap_urls = ['http://127.0.0.1:9/s.xml']\n")
    path = tmp_path / "run" / "state.sqlite"
    store = Store(path)
    store.add_pages("x", [("http://127.0.0.1:9/p/1", None)])
    store.close()
    (tmp_path / "run" / "ilid.json").write_text("[]")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_cli("run", str(config), timeout=120)  # waits out SQLite's busy timeout first
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0] == (f"error: {path}: the run's state store is locked by another program (database is "
                            "locked); stop that program and run the same command again")
        for command in ("status", "stats"):
            reader = run_cli(command, str(config), timeout=120)
            assert reader.returncode == 0, reader.stderr
    finally:
        holder.stdin.close()
        holder.wait()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_a_full_disk_under_the_store_stops_the_crawl_with_one_line_and_the_next_run_completes(tmp_path, how):
    import sqlite3
    import subprocess
    import sys

    from helpers import REPO, run_cli, write_config
    from shop import ShopServer, TestShop, full_disk, many_products

    server = ShopServer(TestShop(products=many_products(300))).start()
    try:
        config = write_config(tmp_path, server.shop_toml(), http="per_host_rate = 0")
        run = tmp_path / "run"
        with full_disk(run, how, 256_000) as (limit, make_room):
            stopped = subprocess.run([sys.executable, "-m", "ilid_async", "run", str(config), "--stages", "crawl"],
                                     cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=limit)
            lines = [line for line in stopped.stderr.splitlines() if not line.startswith("progress ")]
            assert stopped.returncode == 2 and len(lines) == 1, stopped.stderr
            assert lines[0].startswith("error: ") and "state.sqlite" in lines[0], lines[0]
            make_room()
            again = run_cli("run", str(config), "--stages", "crawl", timeout=300)
            assert again.returncode == 0, again.stderr
            db = sqlite3.connect(run / "state.sqlite")
            try:
                pages = dict(db.execute("SELECT state || ' ' || COALESCE(reason, ''), COUNT(*) FROM pages GROUP BY 1"))
                records = db.execute("SELECT COUNT(*), COUNT(DISTINCT page_url) FROM records").fetchone()
            finally:
                db.close()
            assert pages == {"done record": 300} and records == (300, 300)
    finally:
        server.stop()
