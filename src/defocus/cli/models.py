"""`defocus models`: list the model registry."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``models`` command."""

    @app.command("models")
    def models_cmd():
        """List the registered models with their default backbone."""
        from ..models import default_backbone, describe_model, list_models

        for name in list_models():
            typer.echo(f"{name:22s} {default_backbone(name):14s} {describe_model(name)}")
