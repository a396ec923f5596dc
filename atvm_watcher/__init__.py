"""atvm-watcher: one trustworthy Mattermost post per finished ATVM run (standard library only)."""

__version__ = "0.1.0"
