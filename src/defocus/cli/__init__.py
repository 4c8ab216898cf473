"""The ``defocus`` command line: a thin layer that parses arguments and calls the library.

Each capability lives in its own module here and exposes ``register(app)``.
"""
from __future__ import annotations

import importlib
import logging

import typer

from .. import __version__

COMMAND_MODULES = ["models", "predict", "evaluate", "data", "train", "convert", "export", "serve"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Defocus blur detection: which parts of a photo are in focus.")


def _version(value: bool):
    if value:
        typer.echo(f"defocus {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main():
    """Console-script entry point."""
    app()
