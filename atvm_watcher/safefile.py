"""Reading a file someone else wrote: regular files only, never blocking, never more than asked.

Every file the watcher reads but does not own (the run's log, outcome, pid and report files, the
inventory, its own state files, which an operator may have replaced) is opened here. A FIFO or
device where a file belongs would block a plain open for reading until a writer comes (SIGTERM does
not end that wait), and a huge or endless file would fill memory. So the file is opened with
O_NONBLOCK, refused unless fstat says it is a regular file, and read up to a limit.

Further checks on what is opened (not following a symlink, who owns the file) belong in
``open_regular``, the one place every read goes through.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import List, Tuple, Union

PathLike = Union[str, Path]
CHUNK = 1 << 20


def open_regular(path: PathLike, *, follow_symlinks: bool = True) -> Tuple[int, os.stat_result]:
    """An fd open for reading on a regular file, and its stat; the caller closes the fd.

    A directory is an IsADirectoryError, anything else that is no regular file (a FIFO, a device, a
    socket) an OSError with EINVAL; with ``follow_symlinks=False`` a symlink is refused (ELOOP).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_capped(path: PathLike, limit: int, *, follow_symlinks: bool = True) -> Tuple[bytes, os.stat_result]:
    """Up to ``limit`` bytes from the start of a regular file (see open_regular), and its stat.

    To tell a file of exactly ``limit`` bytes from a longer one, ask for one byte more.
    """
    fd, st = open_regular(path, follow_symlinks=follow_symlinks)
    try:
        chunks: List[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def read_first_line(path: PathLike, limit: int = 256, *, follow_symlinks: bool = True) -> Tuple[str, os.stat_result]:
    """The first non-blank line of a small text file, stripped ("" when there is none), and its stat.

    Only the first ``limit`` bytes are read; they are decoded as UTF-8, an undecodable byte as U+FFFD.
    """
    raw, st = read_capped(path, limit, follow_symlinks=follow_symlinks)
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return (lines[0].strip() if lines else ""), st
