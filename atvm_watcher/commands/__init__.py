"""One module per command of the CLI; ``cli.py`` parses the arguments and hands off to ``run`` of one."""
