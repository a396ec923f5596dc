"""Sleeping that ends at once on SIGTERM/SIGINT/SIGHUP (``systemctl stop``, Ctrl-C, a closed terminal).

The signal's wake-up byte lands on a pipe the sleep waits on, so a waiting watcher wakes only when
there is something to do (wake.py adds the files it watches and the launcher's exit to the same
wait), and still stops within milliseconds.
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import List, Sequence

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self._wakeup = -1

    def install(self) -> StopRequest:
        """Take over SIGTERM, SIGINT and SIGHUP (main thread only).

        Each asks for a clean stop: a request on the wire is finished and recorded first, so a
        stop never leaves an attempt that the next watcher must report as uncertain."""
        read_end, write_end = os.pipe()
        for fd in (read_end, write_end):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(write_end)
        self._wakeup = read_end
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handler)
        # Blocked by a watcher that rested (commands/watch.py, rest.py): one that came meanwhile is handled now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return self

    def _handler(self, _signum, _frame) -> None:
        self.requested = True

    def sleep(self, seconds: float) -> bool:
        """Sleep; False (at once) when a stop was requested before or during the sleep."""
        deadline = time.monotonic() + seconds
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.wait(left)
        return False

    def wait(self, seconds: float, fds: Sequence[int] = ()) -> List[int]:
        """Wait up to ``seconds`` for one of ``fds`` to be readable: those that are ([] on a timeout).

        Returns early, with nothing ready, when a stop is requested (check ``requested``)."""
        if self.requested:
            return []
        watched = [*fds, self._wakeup] if self._wakeup >= 0 else list(fds)
        if not watched:
            time.sleep(max(0.0, seconds))
            return []
        ready, _, _ = select.select(watched, [], [], max(0.0, seconds))
        if self._wakeup in ready:
            try:
                os.read(self._wakeup, 512)
            except BlockingIOError:
                pass
        return [fd for fd in ready if fd != self._wakeup]
