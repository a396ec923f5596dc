"""Development tools for atvm-watcher: never installed, never imported by the watcher at run time.

``receiver.py`` (a Mattermost-compatible webhook receiver that can misbehave on request: the demo's
server and the tests' double) and ``simulate.py`` (a simulated ATVM launcher writing a run's
evidence). The release bundle ships ``atvm_watcher/`` only (tools/make-bundle.sh), so ``demo``,
which needs both, runs from a checkout of the repository.
``atvm_run_watcher_crashpoint.py`` is the watcher's CLI with a crash point armed, for the crash tests.
"""
