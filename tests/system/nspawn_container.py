"""A throw-away Debian with a real systemd as PID 1, for the end-to-end test of the unit.

How it is done, and the traps avoided, are in the project's NSPAWN notes: the root filesystem
is made once by debootstrap and cached; each boot lays a tmpfs over it (``--volatile=overlay``),
so every run starts from the same pristine tree; commands run inside through ``nsenter`` into
the container's init; shutdown is poweroff, then SIGTERM to nspawn, then SIGKILL to both.

Several containers at once (the fleet test) cannot share one folder (nspawn: "currently busy"):
each boots its own writable copy of a cached tree (``WritableCopy``: an overlay mount, else a
copy), under its own machine name. ``ensure_ssh_rootfs`` caches a variant with an SSH server.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import List, Optional, Sequence

CACHE_DIR = Path("/var/cache/atvm-watcher")
ROOTFS = CACHE_DIR / "rootfs-bookworm"
SSH_ROOTFS = CACHE_DIR / "rootfs-bookworm-ssh"
PACKAGES = "systemd,systemd-sysv,dbus,python3"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
INSIDE_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "SYSTEMD_PAGER=",
    "SYSTEMD_COLORS=0",
]


class ContainerError(RuntimeError):
    pass


def missing_tools() -> List[str]:
    return [t for t in ("systemd-nspawn", "debootstrap", "nsenter") if shutil.which(t) is None]


def debian_mirror() -> str:
    """The host's own Debian mirror (it is the one known to be reachable), else the default."""
    if os.environ.get("ATVM_DEBIAN_MIRROR"):
        return os.environ["ATVM_DEBIAN_MIRROR"]
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        m = re.search(r"^URIs:\s*(\S+)", sources.read_text(encoding="utf-8"), re.MULTILINE)
        if m:
            return m.group(1)
    return DEFAULT_MIRROR


def _rootfs_ready(root: Path) -> bool:
    return all((root / p).exists() for p in ("usr/bin/python3", "lib/systemd/systemd", "usr/bin/dbus-daemon"))


def ensure_rootfs(root: Path = ROOTFS) -> Path:
    """Build the cached root filesystem unless a complete one is there (about a minute once)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not debootstrap into one folder
        if _rootfs_ready(root):
            return root
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        cmd = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(partial),
               debian_mirror()]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise ContainerError(f"debootstrap failed ({done.returncode}):\n{done.stdout[-3000:]}")
        partial.rename(root)  # only a complete tree ever carries the cached name
    return root


def ensure_ssh_rootfs(root: Path = SSH_ROOTFS, base: Path = ROOTFS) -> Path:
    """The cached tree plus openssh-server, made once from it (a copy, then apt-get inside)."""
    ensure_rootfs(base)
    with open(root.parent / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _rootfs_ready(root) and (root / "usr/sbin/sshd").exists():
            return root
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(partial)], check=True)
        # No service may start while the package installs: there is no init in this container.
        policy = partial / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        script = ("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                  "--no-install-recommends openssh-server && apt-get clean")
        args = ["systemd-nspawn", "-D", str(partial), "--register=no", "--console=pipe", "--quiet",
                "/bin/sh", "-c", script]
        if not _host_runs_systemd():
            args.insert(1, "--keep-unit")
        done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=900)
        policy.unlink()
        if done.returncode != 0 or not (partial / "usr/sbin/sshd").exists():
            raise ContainerError(f"installing openssh-server failed ({done.returncode}):\n{done.stdout[-3000:]}")
        partial.rename(root)
    return root


class WritableCopy:
    """A private, writable tree over a cached one: an overlay mount (instant), else a full copy."""

    def __init__(self, lower: Path, where: Path):
        self.where = where
        self.root = where / "root"
        self.mounted = False
        for name in ("root", "upper", "work"):
            (where / name).mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={lower},upperdir={where / 'upper'},workdir={where / 'work'}"
        done = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            self.mounted = True
        else:
            self.root.rmdir()
            subprocess.run(["cp", "-a", "--reflink=auto", str(lower), str(self.root)], check=True)

    def release(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "--lazy", str(self.root)], check=False)
            self.mounted = False
        shutil.rmtree(self.where, ignore_errors=True)


def _host_runs_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


class Container:
    def __init__(self, rootfs: Path, log_path: Path, machine: Optional[str] = None, volatile: bool = True):
        """``volatile``: a tmpfs over the tree (a shared cached one); False for a private copy.
        ``machine``: the name (and hostname) inside; containers running together need their own."""
        self.rootfs = rootfs
        self.log_path = log_path
        self.machine = machine
        self.volatile = volatile
        self.nspawn: Optional[subprocess.Popen] = None
        self.init_pid: Optional[int] = None
        self._lock = None

    # --- lifecycle -------------------------------------------------------------------------
    def boot(self, timeout: float = 60.0) -> None:
        args = ["systemd-nspawn", "-D", str(self.rootfs), "--register=no", "--console=pipe", "-b"]
        if self.volatile:
            args.insert(-1, "--volatile=overlay")
        if self.machine:
            args.insert(-1, f"--machine={self.machine}")
        if not _host_runs_systemd():
            args.insert(-1, "--keep-unit")  # no bus to ask for a scope: stay in our own cgroup
        # A second nspawn on the same folder fails ("currently busy"): concurrent runs take turns.
        self._lock = open(self.rootfs.parent / "nspawn.lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        with open(self.log_path, "wb") as log:
            self.nspawn = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        deadline = time.monotonic() + timeout
        self.init_pid = self._wait_for_init(deadline)
        self._wait_for_bus(deadline)
        left = max(5, int(deadline - time.monotonic()))
        state = self.run("timeout", str(left), "systemctl", "is-system-running", "--wait", check=False)
        if state.stdout.strip() not in ("running", "degraded"):
            raise ContainerError(f"container did not boot: {state.stdout!r}\n{self.log_tail()}")

    def _wait_for_init(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            self._raise_if_nspawn_gone()
            pid = self._find_init()
            if pid is not None:
                return pid
            time.sleep(0.05)
        raise ContainerError(f"no container init appeared\n{self.log_tail()}")

    def _find_init(self) -> Optional[int]:
        """The nspawn child whose pid inside its namespace is 1."""
        assert self.nspawn is not None
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if fields.get("PPid", "").strip() != str(self.nspawn.pid):
                continue
            nspid = fields.get("NSpid", "").split()
            if len(nspid) > 1 and nspid[-1] == "1":
                return int(status.parent.name)
        return None

    def _wait_for_bus(self, deadline: float) -> None:
        # Entering before systemd listens fails with "Failed to connect to bus", for good.
        private = Path(f"/proc/{self.init_pid}/root/run/systemd/private")
        while time.monotonic() < deadline:
            self._raise_if_nspawn_gone()
            try:
                comm = Path(f"/proc/{self.init_pid}/comm").read_text().strip()
                if comm == "systemd" and stat.S_ISSOCK(private.stat().st_mode):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise ContainerError(f"systemd in the container never listened\n{self.log_tail()}")

    def _raise_if_nspawn_gone(self) -> None:
        assert self.nspawn is not None
        if self.nspawn.poll() is not None:
            raise ContainerError(f"systemd-nspawn exited with {self.nspawn.returncode}\n{self.log_tail()}")

    def shutdown(self) -> None:
        try:
            self._stop()
        finally:
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None

    def _stop(self) -> None:
        """poweroff; else SIGTERM to nspawn (clean stop); else SIGKILL nspawn and the orphaned init."""
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        if self.init_pid is not None:
            try:
                self.run("systemctl", "poweroff", "--no-block", check=False, timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for sig, wait in ((None, 20), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if sig is not None:
                self._signal(sig)
            try:
                self.nspawn.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _signal(self, sig: int) -> None:
        assert self.nspawn is not None
        try:
            self.nspawn.send_signal(sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL and self.init_pid is not None:
            try:
                os.kill(self.init_pid, signal.SIGKILL)  # nspawn's death would orphan it
            except ProcessLookupError:
                pass

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # --- inside ----------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 60, input: Optional[bytes | str] = None,
            ) -> subprocess.CompletedProcess:
        full = ["nsenter", "--target", str(self.init_pid), "--all", "--", "env", "-i", *INSIDE_ENV, *cmd]
        text = not isinstance(input, bytes)
        done = subprocess.run(full, input=input, capture_output=True, timeout=timeout, text=text)
        if check and done.returncode != 0:
            raise ContainerError(
                f"inside the container {list(cmd)} exited {done.returncode}\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            )
        return done

    def sh(self, script: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run("sh", "-c", script, check=check, timeout=timeout)

    def write_file(self, path: str, content: str, mode: str = "0644") -> None:
        self.run("install", "-D", "-m", mode, "/dev/stdin", path, input=content)

    def read_file(self, path: str) -> Optional[str]:
        done = self.run("cat", path, check=False)
        return done.stdout if done.returncode == 0 else None

    def unit_props(self, unit: str, names: Sequence[str]) -> dict:
        out = self.run("systemctl", "show", "--property=" + ",".join(names), "--", unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
