"""Reading files the watcher does not own: regular files only, never blocking on a FIFO, never past a limit."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from atvm_watcher import safefile
from atvm_watcher.statedir import read_json


def test_reads_at_most_the_limit_and_gives_the_stat(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 3000)
    data, st = safefile.read_capped(path, 1000)
    assert data == b"x" * 1000 and st.st_size == 3000
    assert safefile.read_capped(path, 5000)[0] == b"x" * 3000


@pytest.mark.parametrize("text, first", [("COMPLETED\n", "COMPLETED"), ("\n\n  137 \nrest\n", "137"),
                                         ("", ""), (" \n\t\n", ""), ("caf\xe9\n", "caf\xe9")])
def test_first_line(tmp_path, text, first):
    path = tmp_path / "B.status"
    path.write_text(text, encoding="utf-8")
    assert safefile.read_first_line(path)[0] == first


def test_first_line_reads_only_the_limit(tmp_path):
    path = tmp_path / "B.exit"
    path.write_bytes(b"1234567890\n")
    assert safefile.read_first_line(path, limit=4)[0] == "1234"


def test_a_fifo_is_refused_without_blocking(tmp_path, no_hang):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError) as caught:
        safefile.read_capped(tmp_path / "fifo", 10)
    assert (caught.value.errno, caught.value.strerror) == (errno.EINVAL, "not a regular file")


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError):
        safefile.open_regular(tmp_path)


def test_a_symlink_is_followed_unless_asked_not_to(tmp_path):
    (tmp_path / "target").write_text("0\n")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert safefile.read_first_line(tmp_path / "link")[0] == "0"
    with pytest.raises(OSError) as caught:
        safefile.read_first_line(tmp_path / "link", follow_symlinks=False)
    assert caught.value.errno == errno.ELOOP


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        safefile.read_capped(tmp_path / "absent", 10)


def test_a_fifo_in_place_of_a_state_file_is_unreadable_not_a_hang(tmp_path: Path, no_hang):
    os.mkfifo(tmp_path / "state.json")
    assert read_json(tmp_path / "state.json") == (None, "state.json unreadable: not a regular file")


def test_an_oversized_state_file_is_refused_by_its_size(tmp_path: Path):
    path = tmp_path / "state.json"
    with path.open("wb") as fh:
        fh.truncate(5 * 1024 * 1024)
    assert read_json(path) == (None, f"state.json is implausibly large ({5 * 1024 * 1024} bytes)")
