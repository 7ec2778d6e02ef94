"""The `herald` command line: `commands` defines it, `running` runs a command's roles, `dlq` and
`keys` are its operator subcommands."""

from __future__ import annotations

from herald.cli.commands import app, main

__all__ = ["app", "main"]
