"""The state directory: atomic JSON files, markers, locks. The only module that writes there.

Layout per build (README.md): ``state.json``, ``posted.marker``, ``cancelled.marker``,
``subruns/<group>/...``; ours besides: ``request.json`` (what the operator asked for),
``delivery.json`` (intent/outcome of the webhook call), ``events.jsonl`` (history),
``watch.lock`` (held by the one live watcher), ``state.lock`` (short critical sections shared
with ``cancel``, so a cancel and a post can never interleave).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from .safefile import read_capped

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
STATE_LOCK_WAIT_SECONDS = 120.0  # longer than one webhook attempt, which runs under the lock


class StateError(Exception):
    """The state directory could not be written (full disk, read-only, permissions)."""


class Locked(Exception):
    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def utc_now_iso(ts: Optional[float] = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_json(data: Any, **opts: Any) -> bytes:
    """UTF-8 JSON; a string UTF-8 cannot hold (a lone surrogate from a hostile report title or a
    non-UTF-8 file name) falls back to \\u escapes instead of crashing the watcher."""
    try:
        return json.dumps(data, ensure_ascii=False, **opts).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, ensure_ascii=True, **opts).encode("ascii")


def write_json_atomic(path: Path, data: Dict[str, Any]) -> None:
    """tmp + fsync + rename + fsync(dir): readers see the old file or the new one, never half."""
    write_bytes_atomic(path, encode_json(data, indent=2, sort_keys=True) + b"\n")


def write_bytes_atomic(path: Path, body: bytes) -> None:
    """tmp + fsync + rename + fsync(dir), as write_json_atomic; StateError when it cannot be written."""
    # os.urandom, not the secrets module: that one imports OpenSSL (megabytes in every waiting watcher)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        # A new file of our own: never an existing one, never through a link someone planted.
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_json(path: Path) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(data, problem): missing -> (None, None); corrupt/unreadable -> (None, reason)."""
    try:
        raw, st = read_capped(path, 4 * 1024 * 1024 + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path.name} unreadable: {exc.strerror}"
    if len(raw) > 4 * 1024 * 1024:
        return None, f"{path.name} is implausibly large ({st.st_size} bytes)"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, f"{path.name} is corrupt (not valid JSON)"
    if not isinstance(data, dict):
        return None, f"{path.name} is corrupt (not a JSON object)"
    return data, None


def _open_lock(path: Path) -> int:
    try:
        return os.open(str(path), os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class RunDir:
    """Files for one posted unit: a plain run (the build folder) or one sub-run."""

    path: Path
    within: Tuple[Path, ...] = ()  # the folders between the build folder and this one, checked too

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def posted_marker(self) -> Path:
        return self.path / "posted.marker"

    @property
    def delivery_file(self) -> Path:
        return self.path / "delivery.json"

    def ensure(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {self.path}: {exc.strerror}") from None
        # A build or sub-run folder that is a link would send every write (markers, state) elsewhere.
        for folder in (*self.within, self.path):
            if folder.is_symlink():
                raise StateError(f"{folder} is a symbolic link; refusing to write through it "
                                 "(remove it; the watcher creates a real folder)")

    def read_state(self) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        return read_json(self.state_file)

    def write_state(self, data: Dict[str, Any]) -> None:
        self.ensure()
        write_json_atomic(self.state_file, {**data, "updated_at": utc_now_iso()})

    def is_posted(self) -> bool:
        return self.posted_marker.exists()

    def mark_posted(self, info: Dict[str, Any]) -> None:
        write_json_atomic(self.posted_marker, info)

    def read_delivery(self) -> Dict[str, Any]:
        """The delivery record; one that exists but cannot be read counts as delivery-uncertain:
        it may have said "sending", and at-most-once must not guess otherwise."""
        data, problem = read_json(self.delivery_file)
        if problem:
            return {"phase": "uncertain", "detail": f"{problem}: an earlier attempt may have posted"}
        return data or {}

    def write_delivery(self, data: Dict[str, Any]) -> None:
        self.ensure()
        write_json_atomic(self.delivery_file, {**data, "updated_at": utc_now_iso()})


ARCHIVE = ".archive"  # under the state root: earlier runs' state, kept by record-request --rerun


class BuildDir(RunDir):
    """The per-build folder under the state root."""

    @classmethod
    def of(cls, state_root: Path, build: str) -> BuildDir:
        return cls(state_root / build)  # build is validated by buildname.check_build_name first

    @property
    def build(self) -> str:
        return self.path.name

    @property
    def cancelled_marker(self) -> Path:
        return self.path / "cancelled.marker"

    @property
    def request_file(self) -> Path:
        return self.path / "request.json"

    @property
    def events_file(self) -> Path:
        return self.path / "events.jsonl"

    def record_request(self, request: Dict[str, Any]) -> None:
        """request.json: what was asked for, and when (the earliest this run's evidence may date from)."""
        self.ensure()
        write_json_atomic(self.request_file, {**request, "requested_at": utc_now_iso()})

    def requested_at(self) -> Optional[float]:
        data, _ = read_json(self.request_file)
        try:
            return datetime.fromisoformat(str((data or {})["requested_at"])).timestamp()
        except (KeyError, ValueError, OverflowError, OSError):
            return None

    def archive(self, state_root: Path) -> Path:
        """Move this build's whole folder under the state root's archive; returns where it went."""
        folder = state_root / ARCHIVE
        stamp = f"{self.build}.{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(1, 1000):
                target = folder / (stamp if n == 1 else f"{stamp}-{n}")
                try:
                    os.mkdir(target, 0o700)  # claims the name: two archives in one second never collide
                except FileExistsError:
                    continue
                os.replace(self.path, target)  # rename(2) may replace the empty folder just made
                return target
            raise OSError(errno.EEXIST, "too many archives of this build in one second")
        except OSError as exc:
            raise StateError(f"cannot archive {self.path}: {exc.strerror or exc}") from None

    def set_aside_state(self) -> Optional[str]:
        """Move a damaged state.json aside (kept for the operator); returns the new name, or None."""
        aside = self.path / f"state.json.corrupt-{int(time.time())}"
        try:
            os.replace(self.state_file, aside)
        except OSError:
            return None
        return aside.name

    def subrun(self, group: str) -> RunDir:
        return RunDir(self.path / "subruns" / group, (self.path, self.path / "subruns"))

    def subrun_names(self) -> Tuple[str, ...]:
        try:
            return tuple(sorted(p.name for p in (self.path / "subruns").iterdir() if p.is_dir()))
        except OSError:
            return ()

    def is_cancelled(self) -> bool:
        return self.cancelled_marker.exists()

    def mark_cancelled(self, info: Dict[str, Any]) -> None:
        self.ensure()
        write_json_atomic(self.cancelled_marker, info)

    def append_event(self, event: Dict[str, Any]) -> None:
        """History for inspect/status; best effort: a full disk must not stop a post, and must not
        leave half a line either (a short write is cut back off)."""
        line = encode_json({"at": utc_now_iso(), **event}, sort_keys=True) + b"\n"
        with contextlib.suppress(OSError, StateError):
            self.ensure()
            fd = os.open(str(self.events_file), os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o644)
            try:
                size = os.fstat(fd).st_size
                try:
                    if os.write(fd, line) != len(line):
                        raise OSError(errno.ENOSPC, "short write")
                except OSError:
                    os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def state_lock(self, wait: float = STATE_LOCK_WAIT_SECONDS) -> Iterator[None]:
        """Short exclusive section shared by the watcher (check-cancel + post) and cancel."""
        self.ensure()
        fd = _open_lock(self.path / "state.lock")
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        raise StateError(f"cannot lock {self.path / 'state.lock'}: {exc.strerror}") from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def acquire_watch_lock(self) -> int:
        """Hold for the watcher's lifetime; Locked(holder) if another watcher has it."""
        self.ensure()
        path = self.path / "watch.lock"
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise Locked(self.watch_lock_holder() or "another process") from None
            raise StateError(f"cannot lock {path}: {exc.strerror}") from None
        with contextlib.suppress(OSError):  # the pid is for status only; the lock is what counts
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def watch_lock_holder(self) -> Optional[str]:
        """'pid N' when a live watcher holds the lock, else None (probing does not keep the lock)."""
        path = self.path / "watch.lock"
        try:
            fd = os.open(str(path), os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                return f"pid {pid}" if pid.isdigit() else "another process"
            return None
        finally:
            os.close(fd)
