"""`defocus models`: list the model registry."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``models`` command."""

    @app.command("models")
    def models_cmd():
        """List the registered models."""
        from ..models import describe_model, list_models

        for name in list_models():
            typer.echo(f"{name:22s} {describe_model(name)}")
