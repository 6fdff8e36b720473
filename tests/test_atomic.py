"""The one atomic writer (atomic.write_atomic): whole file or the old one, mode kept, no litter."""

from __future__ import annotations

import os
import stat

import pytest

from ilid_async.atomic import DEFAULT_MODE, write_atomic


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_is_written_whole_with_the_shared_mode_and_its_folder_made(tmp_path):
    target = tmp_path / "a" / "b" / "file.json"
    assert write_atomic(target, lambda f: f.write(b"[1]\n")) == 4  # what write returned
    assert target.read_bytes() == b"[1]\n"
    assert mode(target) == DEFAULT_MODE
    assert os.listdir(target.parent) == ["file.json"]


@pytest.mark.parametrize("durable", [True, False])
def test_a_replaced_file_keeps_its_mode(tmp_path, durable):
    target = tmp_path / "file"
    target.write_bytes(b"old")
    target.chmod(0o600)
    write_atomic(target, lambda f: f.write(b"new"), durable=durable)
    assert target.read_bytes() == b"new" and mode(target) == 0o600


def test_a_failing_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"half of the new")
        raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError, match="the writer failed"):
        write_atomic(target, write)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file"]


def test_a_file_where_the_folder_should_be_is_an_oserror_and_changes_nothing(tmp_path):
    (tmp_path / "blocker").write_bytes(b"x")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "blocker" / "file", lambda f: f.write(b"new"))
    assert (tmp_path / "blocker").read_bytes() == b"x"
