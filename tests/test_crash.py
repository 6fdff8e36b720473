"""Kill -9 safety: the real command is SIGKILLed during each stage and restarted; it must end with
the same records, ids and image bytes as a run that was never interrupted, every committed
label unchanged, and nothing lost, doubled or half-written."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from helpers import REPO, short_prompt, write_config
from shop import ShopServer, TestShop, many_products

# The model, real subprocesses or real time: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow

N_PRODUCTS = 240


@pytest.fixture
def big_shop():
    server = ShopServer(TestShop(products=many_products(N_PRODUCTS), sitemap_seconds=1.5)).start()
    yield server
    server.stop()


def make_config(tmp_path: Path, server: ShopServer) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    # Batched labelling as a user runs it (throughput schedule): a record's labels may depend
    # on the records decoded beside it, so two runs may label a record differently; what must
    # hold is that committed labels never change and nothing is lost or duplicated.
    prompt = short_prompt(tmp_path)
    return write_config(tmp_path, server.shop_toml(), llm=f'debug_fraction = 0.3\nn_parallel = 4\nprompt = "{prompt}"',
                        http="per_host_rate = 150\nper_host_concurrency = 4", images="width = 128\nheight = 128")


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ilid_async", "run", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def counts(db_path: Path) -> dict[str, int]:
    """What the running command has committed so far, read beside it (WAL allows that)."""
    if not db_path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
        try:
            q = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
            return {
                "sitemaps_open": q("SELECT COUNT(*) FROM sitemaps WHERE state IN ('pending','leased')"),
                "pages": q("SELECT COUNT(*) FROM pages"),
                "pages_done": q("SELECT COUNT(*) FROM pages WHERE state IN ('done','failed')"),
                "labelled": q("SELECT COUNT(*) FROM records WHERE answer IS NOT NULL"),
                "to_label": q("SELECT COUNT(*) FROM records WHERE state IN ('to_label','labelling') "
                              "AND sample < 0.3"),
                "images_done": q("SELECT COUNT(*) FROM records WHERE state='done'"),
                "images_open": q("SELECT COUNT(*) FROM records WHERE state IN ('to_image','imaging')"),
            }
        finally:
            db.close()
    except sqlite3.Error:
        return {}  # the schema is being created


KILL_MOMENTS = {
    "sitemap walk": lambda c: c.get("sitemaps_open", 0) > 0 and c.get("pages", 0) > 20,
    "extraction": lambda c: N_PRODUCTS // 3 < c.get("pages_done", 0) < N_PRODUCTS - 20,
    "labelling": lambda c: c.get("labelled", 0) >= 5 and c.get("to_label", 0) > 5,
    # Images are quick next to labelling, and a record's label and image commits may land in
    # one group commit: "more images still to come" is the image stage's state a reader sees.
    "image writing": lambda c: c.get("images_done", 0) >= 3 and (c.get("images_open", 0) > 0
                                                                 or c.get("to_label", 0) > 0),
}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def assert_all_exit(pids: list[int], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists()
                 and not (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")]
        time.sleep(0.05)
    assert not alive, f"processes left behind: {alive}"


def run_killed_at(config: Path, moment: str) -> bool:
    """Start the command, SIGKILL it when the moment comes; False if it finished first."""
    proc = start(config)
    db = config.parent / "run" / "state.sqlite"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if KILL_MOMENTS[moment](counts(db)):
            workers = children_of(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert_all_exit(workers)  # the image workers do not outlive a killed run
            return True
        time.sleep(0.02)
    proc.communicate(timeout=300)
    return False


def run_to_end(config: Path) -> None:
    proc = start(config)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err


def outputs(run: Path) -> tuple[list[dict], dict[str, bytes], list[Path]]:
    """The dataset entries, the image bytes by record id, and half-written files."""
    entries = orjson.loads((run / "ilid.json").read_bytes())
    images = {p.stem: p.read_bytes() for p in (run / "images").rglob("*.png")}
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    return entries, images, leftovers


def store_records(run: Path) -> list[dict]:
    """Every record in the order its page was found in the sitemaps (the dataset's order; the
    records table itself is in the order pages happened to be parsed), with its committed
    answer and labels."""
    db = sqlite3.connect(run / "state.sqlite")
    try:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(
            "SELECT r.id, r.page_url, r.image_url, r.label, r.data, r.sample, r.state, r.answer, r.labels "
            "FROM records r JOIN pages p ON p.url = r.page_url ORDER BY p.rowid, r.rowid")]
    finally:
        db.close()


def test_sigkill_at_every_stage_then_resume_keeps_every_record_and_committed_label(big_shop, tmp_path):
    reference = make_config(tmp_path / "reference", big_shop)
    run_to_end(reference)
    ref_entries, ref_images, _ = outputs(reference.parent / "run")
    ref_records = store_records(reference.parent / "run")
    assert len(ref_entries) >= 20

    crashed = make_config(tmp_path / "crashed", big_shop)
    run = crashed.parent / "run"
    killed_at, committed = [], []
    for moment in KILL_MOMENTS:
        if run_killed_at(crashed, moment):
            killed_at.append(moment)
        if (run / "state.sqlite").exists():
            committed.append({r["id"]: (r["answer"], r["labels"]) for r in store_records(run)
                              if r["answer"] is not None})
    # Each moment is reached in its own restart; a finished run would mean a moment was missed.
    assert killed_at == list(KILL_MOMENTS)
    # Labels were committed before at least two of the kills, so later restarts are checked
    # against them.
    assert len([snapshot for snapshot in committed if snapshot]) >= 2
    run_to_end(crashed)
    entries, images, leftovers = outputs(run)
    records = store_records(run)

    # The same records with the same ids and texts, in the same order; none lost or doubled.
    fields = ("id", "page_url", "image_url", "label", "data", "sample")
    assert [tuple(r[k] for k in fields) for r in records] == [tuple(r[k] for k in fields) for r in ref_records]
    # Every record picked by the debug fraction was labelled; labels committed before a kill
    # were never relabelled (records in flight at a kill may get other valid labels).
    chosen = [r for r in records if r["sample"] < 0.3]
    assert chosen and all(r["state"] not in ("to_label", "labelling") and r["answer"] is not None for r in chosen)
    final = {r["id"]: (r["answer"], r["labels"]) for r in records}
    for snapshot in committed:
        assert all(final[record_id] == labels for record_id, labels in snapshot.items())
    # The dataset is what the store committed: each done record once, in discovery order, with
    # its committed labels, and the same image bytes as the uninterrupted run for the same record.
    done = [r for r in records if r["state"] == "done"]
    assert [e["id"] for e in entries] == [r["id"] for r in done]
    for entry, record in zip(entries, done):
        labels = orjson.loads(record["labels"])
        assert all(entry[key] == labels[key] for key in ("label_short", "label_long", "description"))
    assert set(images) == {e["id"] for e in entries}  # every entry's image, no orphan
    assert all(images[i] == ref_images[i] for i in images.keys() & ref_images.keys())
    assert images.keys() & ref_images.keys()  # the two runs share images to compare
    assert leftovers == []  # no half-written file


# --- a dead worker (issue 13 item 12) ---------------------------------------------------------

def pool_workers(pid: int) -> list[int]:
    """The run's pool worker processes (spawned; not multiprocessing's resource tracker)."""
    found = []
    for child in children_of(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


def run_and_kill_a_worker(config: Path, stages: str, ready) -> subprocess.CompletedProcess:
    """Start the command, SIGKILL one pool worker once ``ready(counts)``, as the kernel's OOM
    killer would, and wait for the command to end."""
    proc = subprocess.Popen([sys.executable, "-m", "ilid_async", "run", str(config), "--stages", stages],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = config.parent / "run" / "state.sqlite"
    try:
        deadline = time.monotonic() + 120
        while not ready(counts(db)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        workers = pool_workers(proc.pid)
        assert proc.poll() is None and workers, "the run ended before a worker could be killed"
        os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=180)  # a run that waits for the dead worker hangs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def page_and_record_states(run: Path) -> tuple[dict, dict]:
    db = sqlite3.connect(run / "state.sqlite")
    try:
        return (dict(db.execute("SELECT state || ' ' || COALESCE(reason, ''), COUNT(*) FROM pages GROUP BY 1")),
                dict(db.execute("SELECT state || ' ' || COALESCE(reason, ''), COUNT(*) FROM records GROUP BY 1")))
    finally:
        db.close()


@pytest.fixture
def shop120():
    server = ShopServer(TestShop(products=many_products(120))).start()
    yield server
    server.stop()


def test_a_page_worker_killed_mid_crawl_costs_no_page(shop120, tmp_path):
    config = write_config(tmp_path, shop120.shop_toml(), run='extract_workers = 2',
                          http="per_host_rate = 30\nper_host_concurrency = 4")
    result = run_and_kill_a_worker(config, "crawl", lambda c: c.get("pages_done", 0) >= 10)
    assert result.returncode == 0, result.stderr
    pages, records = page_and_record_states(tmp_path / "run")
    # Every page was extracted, those in the dead worker's pool again: none failed or leased.
    assert pages == {"done record": 120} and records == {"to_label ": 120}


def label_by_hand(db_path: Path) -> None:
    from ilid_async.run.store import Store

    store = Store(db_path)
    try:
        for task in store.lease_for_labelling(1000):
            labels = {"label_short": "machine part", "label_long": "machine part for machines",
                      "description": "A part.", "material": "steel", "material_finish": None}
            store.commit_labels(task.id, answer=labels, labels=labels, folder="machine_part")
    finally:
        store.close()


def test_an_image_worker_killed_mid_stage_costs_no_image(shop120, tmp_path):
    config = write_config(tmp_path, shop120.shop_toml(), http="per_host_rate = 30\nper_host_concurrency = 4",
                          images="workers = 2\nwidth = 128\nheight = 128")
    crawl = subprocess.run([sys.executable, "-m", "ilid_async", "run", str(config), "--stages", "crawl"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert crawl.returncode == 0, crawl.stderr
    label_by_hand(tmp_path / "run" / "state.sqlite")
    result = run_and_kill_a_worker(config, "images", lambda c: c.get("images_done", 0) >= 10)
    assert result.returncode == 0, result.stderr
    _, records = page_and_record_states(tmp_path / "run")
    assert records == {"done ": 120}
    assert len(list((tmp_path / "run" / "images" / "machine_part").glob("*.png"))) == 120
