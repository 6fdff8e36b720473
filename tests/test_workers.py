"""LoopPool: the image transforms' process pool, driven by the event loop over one socket a
worker. Real spawned workers, killed with SIGKILL where a test needs a dead one."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

from ilid_async.images.transform import ImageError
from ilid_async.workers import CALLS_PER_WORKER, LoopPool, RestartingPool, WorkerDied, worker_pool

pytestmark = pytest.mark.slow  # every test spawns worker processes


def _square_or_fail(x: int) -> int:
    if x % 7 == 3:
        raise ImageError("truncated_image", f"input {x}")
    return x * x


def _digest(data: bytes, salt: bytes = b"") -> tuple[int, str]:
    return len(data), hashlib.sha256(salt + data).hexdigest()


def _pid() -> int:
    return os.getpid()


def _sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _kill_this_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def test_results_and_errors_come_back_to_their_own_calls():
    pool = LoopPool(2)
    loop = asyncio.get_running_loop()
    try:
        results = await asyncio.wait_for(asyncio.gather(
            *(loop.run_in_executor(pool, _square_or_fail, i) for i in range(60)), return_exceptions=True), 60)
        for i, result in enumerate(results):
            if i % 7 == 3:
                assert isinstance(result, ImageError)
                assert (result.reason, result.detail) == ("truncated_image", f"input {i}")
            else:
                assert result == i * i
        # keyword arguments travel too
        assert await asyncio.wrap_future(pool.submit(_digest, b"abc", salt=b"x")) == \
            (3, hashlib.sha256(b"xabc").hexdigest())
    finally:
        pool.shutdown()


async def test_arguments_far_bigger_than_a_socket_buffer_arrive_whole():
    """A 24 MB download (the default cap is 25 MB) goes to a worker in many partial writes while
    other calls are under way."""
    blobs = [os.urandom(24_000_000), os.urandom(1), os.urandom(3_000_001), b""]
    pool = LoopPool(2)
    loop = asyncio.get_running_loop()
    try:
        got = await asyncio.wait_for(asyncio.gather(*(loop.run_in_executor(pool, _digest, blob) for blob in blobs)), 60)
        assert got == [(len(blob), hashlib.sha256(blob).hexdigest()) for blob in blobs]
    finally:
        pool.shutdown()


async def test_work_goes_to_every_worker_and_none_holds_more_than_its_share():
    pool = LoopPool(2)
    loop = asyncio.get_running_loop()
    try:
        # Calls that sleep: the first worker free takes the next, so both take part.
        pids = await asyncio.wait_for(asyncio.gather(
            *(loop.run_in_executor(pool, _sleep_then_pid, 0.05) for _ in range(12))), 60)
        assert len(set(pids)) == 2
        assert pool.held == [0, 0] and pool.waiting == 0
        futures = [pool.submit(_sleep_then_pid, 0.2) for _ in range(10)]
        assert pool.held == [CALLS_PER_WORKER, CALLS_PER_WORKER]
        assert pool.waiting == 10 - 2 * CALLS_PER_WORKER
        await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)), 60)
    finally:
        pool.shutdown()


async def test_a_call_cancelled_while_it_waits_is_never_run():
    pool = LoopPool(1)
    try:
        busy = [pool.submit(_sleep_then_pid, 0.3) for _ in range(CALLS_PER_WORKER)]
        skipped = pool.submit(_kill_this_process)  # would break the pool if it ran
        assert skipped.cancel()
        after = pool.submit(_pid)
        pids = await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, [*busy, after])), 60)
        assert len(set(pids)) == 1
        assert skipped.cancelled()
    finally:
        pool.shutdown()


async def test_a_killed_worker_fails_every_call_the_pool_holds_and_the_pool_takes_no_more():
    pool = LoopPool(2)
    try:
        victim = await asyncio.wrap_future(pool.submit(_pid))
        held = [pool.submit(_sleep_then_pid, 0.5) for _ in range(8)]
        os.kill(victim, signal.SIGKILL)
        outcomes = await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, held), return_exceptions=True), 60)
        # The calls the other worker finished before the death was seen keep their results.
        assert any(isinstance(outcome, BrokenProcessPool) for outcome in outcomes)
        assert all(isinstance(outcome, (BrokenProcessPool, int)) for outcome in outcomes)
        with pytest.raises(BrokenProcessPool):
            pool.submit(_pid)
    finally:
        pool.shutdown()
    assert not any(_alive(pid) for pid in pool.pids)


@pytest.mark.parametrize("make_pool", [lambda: LoopPool(2), lambda: worker_pool(2)], ids=["LoopPool", "worker_pool"])
async def test_restarting_pool_runs_the_others_again_and_fails_the_poison(make_pool):
    pool = RestartingPool(make_pool)
    loop = asyncio.get_running_loop()
    try:
        calls = [loop.run_in_executor(pool, _square_or_fail, i) for i in range(30)]
        calls.insert(10, loop.run_in_executor(pool, _kill_this_process))
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 120)
        assert isinstance(results.pop(10), WorkerDied)
        for i, result in enumerate(results):
            assert isinstance(result, ImageError) if i % 7 == 3 else result == i * i
        assert pool.restarts >= 1
        assert await loop.run_in_executor(pool, _square_or_fail, 5) == 25
    finally:
        pool.shutdown()


async def test_shutdown_ends_the_workers_cancels_waiting_calls_and_fails_running_ones():
    pool = LoopPool(1)
    await asyncio.wrap_future(pool.submit(_pid))  # started
    running = [pool.submit(_sleep_then_pid, 0.3) for _ in range(CALLS_PER_WORKER)]
    waiting = [pool.submit(_pid) for _ in range(3)]
    pool.shutdown(wait=True)
    assert all(future.cancelled() for future in waiting)
    assert all(isinstance(future.exception(0), RuntimeError) for future in running)
    assert not any(_alive(pid) for pid in pool.pids)
    with pytest.raises(BrokenProcessPool):
        pool.submit(_pid)


async def test_workers_ignore_ctrl_c():
    """A terminal's Ctrl-C reaches the whole process group: the run decides how to stop."""
    pool = LoopPool(1)
    try:
        pid = await asyncio.wrap_future(pool.submit(_pid))
        os.kill(pid, signal.SIGINT)
        assert await asyncio.wait_for(asyncio.wrap_future(pool.submit(_sleep_then_pid, 0.1)), 60) == pid
    finally:
        pool.shutdown()


_OWNER = """
import asyncio, sys
from ilid_async.workers import LoopPool
from test_workers import _pid
async def main():
    pool = LoopPool(2)
    pids = await asyncio.gather(*(asyncio.wrap_future(pool.submit(_pid)) for _ in range(8)))
    print(*sorted(set(pids)), flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


def test_workers_end_when_their_parent_is_killed():
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert pids and all(_alive(pid) for pid in pids)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def _memory_kept_after_free() -> bool:
    """Whether an 8 MB buffer, written and freed, stays in this process (resident) for the next."""
    def resident() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    buffer = bytearray(8 << 20)  # zero-filled: every page touched
    before_free = resident()
    del buffer
    return before_free - resident() < 4 << 20


def _threads_after_a_matrix_product() -> int:
    import numpy as np

    matrix = np.ones((256, 256))
    _ = matrix @ matrix  # big enough for OpenBLAS to use all its threads
    return len(os.listdir("/proc/self/task"))


async def test_image_pool_workers_keep_freed_memory_and_run_numpy_on_one_thread():
    from ilid_async.images.transform import image_pool

    plain, tuned = LoopPool(1), image_pool(1)
    try:
        assert await asyncio.wrap_future(plain.submit(_memory_kept_after_free)) is False
        assert await asyncio.wrap_future(tuned.submit(_memory_kept_after_free)) is True
        assert await asyncio.wrap_future(tuned.submit(_threads_after_a_matrix_product)) == 1
        if (os.cpu_count() or 1) > 1:  # OpenBLAS starts one thread a core unless told
            assert await asyncio.wrap_future(plain.submit(_threads_after_a_matrix_product)) > 1
    finally:
        plain.shutdown()
        tuned.shutdown()
