"""How every herald command refuses: a one-line message on stderr, exit code 2."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    typer.echo(f"herald: error: {message}", err=True)
    raise typer.Exit(2)
