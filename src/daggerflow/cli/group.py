"""The ``daggerflow`` command group, its consoles and the usage-error exception."""

from __future__ import annotations

import sys

import click
from rich.console import Console

DEFAULT_URL = "http://127.0.0.1:6066"

# Piped output is not cut to 80 columns: tables keep whole ids.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="daggerflow", prog_name="daggerflow")
def cli() -> None:
    """daggerflow: durable, event-driven workflows with Dagger's model."""


def _add_demo() -> None:
    from ..demo.command import demo

    cli.add_command(demo)


_add_demo()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="daggerflow")


class UsageFailure(click.ClickException):
    """A mistake in the command line, its TARGET or the installation: one line, exit 2
    (click's own code for usage errors). Failures at run time exit 1."""

    exit_code = 2
