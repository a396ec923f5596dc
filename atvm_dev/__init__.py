"""Development tooling for atvm-watcher: test doubles and fakes that the installed bundle does not ship."""
