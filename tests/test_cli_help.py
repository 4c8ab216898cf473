"""Every command's and option's help text reaches the rendered --help of its command word for word (no text lost to markup)."""
from __future__ import annotations

import re

import click
import pytest
import typer.main
from typer.testing import CliRunner

from defocus.cli import app

BOX_CHARS = "│╭╮╰╯─"


def _commands(group: click.Command, path=()):
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, path + (name,))


def _flat(text: str) -> str:
    for ch in BOX_CHARS:
        text = text.replace(ch, " ")
    return re.sub(r"\s+", " ", text).strip()


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "defocus" for p, _ in COMMANDS])
def test_help_shows_every_option_text(path, command):
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=400, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    shown = _flat(result.output)
    helps = [p.help for p in command.params if getattr(p, "help", None)]
    assert helps or not command.params
    if command.help:
        helps.append(command.help)
    for text in helps:
        assert _flat(text) in shown, f"{' '.join(path)}: help text not shown as written: {text!r}"


def test_the_check_catches_text_lost_to_markup():
    """A bracketed phrase like "[default: 0.5]" is eaten by the help renderer: the check above would see it."""
    probe = typer.Typer()

    @probe.command()
    def run(x: float = typer.Option(0.5, help="A number [default: 0.5; or more].")):
        """Probe."""

    shown = _flat(CliRunner().invoke(probe, ["--help"], terminal_width=400, env={"COLUMNS": "400"}).output)
    assert "A number" in shown
    assert _flat("A number [default: 0.5; or more].") not in shown
