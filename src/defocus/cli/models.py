"""`defocus models`: list the model registry."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``models`` command."""

    @app.command("models")
    def models_cmd(pretrained: bool = typer.Option(False, "--pretrained", help="Only the models whose weights the "
                                                   "authors released (load_model / defocus convert read them).")):
        """List the registered models with their default backbone."""
        from ..models import default_backbone, describe_model, list_models

        for name in list_models(pretrained=pretrained):
            typer.echo(f"{name:22s} {default_backbone(name):14s} {describe_model(name)}")
