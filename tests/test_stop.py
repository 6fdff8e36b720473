"""Graceful stop: SIGTERM/SIGINT let work in flight finish and exit; a second signal stops at
once; either way the next run completes the work."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import REPO, short_prompt, write_config
from shop import ShopServer, TestShop, many_products

# The model, real subprocesses or real time: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow


@pytest.fixture
def shop40():
    server = ShopServer(TestShop(products=many_products(40))).start()
    yield server
    server.stop()


def start(config) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ilid_async", "run", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_labelling(db_path, proc) -> None:
    while proc.poll() is None:
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
            labelled = db.execute("SELECT COUNT(*) FROM records WHERE answer IS NOT NULL").fetchone()[0]
            db.close()
            if labelled >= 2:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    pytest.fail("the run ended before labelling started")


def leased(db_path) -> int:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT (SELECT COUNT(*) FROM pages WHERE state='leased') + (SELECT COUNT(*) "
                          "FROM records WHERE state IN ('labelling', 'imaging'))").fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("signals", [1, 2], ids=["graceful", "second-signal"])
def test_stop_on_signal_then_resume(shop40, tmp_path, signals):
    config = write_config(tmp_path, shop40.shop_toml(), llm=f'prompt = "{short_prompt(tmp_path)}"\ndebug_fraction = 0.5')
    db_path = tmp_path / "run" / "state.sqlite"
    proc = start(config)
    wait_until_labelling(db_path, proc)
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    # Work in flight was finished and committed (one signal) or dropped (two): either way
    # nothing is left leased once the run has ended, so `status` shows it as work to do.
    assert leased(db_path) == 0
    if signals == 1:  # and the dataset of what was done so far was written
        assert (tmp_path / "run" / "ilid.json").exists()
    again = start(config)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert leased(db_path) == 0
    db = sqlite3.connect(db_path)
    open_work = db.execute("SELECT COUNT(*) FROM records WHERE state='to_image' OR "
                           "(state='to_label' AND sample < 0.5)").fetchone()[0]
    db.close()
    assert open_work == 0


def test_ctrl_c_to_the_whole_process_group_is_one_clean_stop(shop40, tmp_path):
    """A terminal's Ctrl-C sends SIGINT to every process of the foreground group, the pool
    workers included: the run stops as for one signal (130), and no worker prints a
    KeyboardInterrupt traceback."""
    config = write_config(tmp_path, shop40.shop_toml(), llm=f'prompt = "{short_prompt(tmp_path)}"\ndebug_fraction = 0.5')
    proc = subprocess.Popen([sys.executable, "-m", "ilid_async", "run", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as a shell's foreground job
    wait_until_labelling(tmp_path / "run" / "state.sqlite", proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
