#!/usr/bin/env python3
"""atvm-watcher: one trustworthy Mattermost post per finished ATVM run. Run with --help."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if sys.version_info < (3, 9):  # noqa: UP036 - the controller may have an older python3
    sys.exit("atvm_run_watcher.py needs Python 3.9 or newer")

from atvm_watcher.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(fast_exit=True))  # a watch ends its process in main, once flushed (cli.leave)
