"""`defocus models`: the models that come with weights, and the architectures of the registry."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``models`` command."""

    @app.command("models")
    def models_cmd(
        pretrained: bool = typer.Option(False, "--pretrained", help="Only the names that load trained weights by "
                                        "name (--model NAME)."),
        as_json: bool = typer.Option(False, "--json", help="Print the listing as JSON."),
    ):
        """List the models with trained weights (name, architecture, backbone, size, files) and the registered
        architectures (random weights: train them, or use them for speed tests)."""
        import json

        from ..optional import MissingTorchError, is_missing_torch, torch_missing_message
        from ..pretrained import pretrained_models

        found = pretrained_models()
        released, archs, archs_note = [], [], None
        try:
            from ..models import default_backbone, describe_model, list_models

            released = list_models(pretrained=True)
            if not pretrained:
                archs = [(n, default_backbone(n), describe_model(n)) for n in list_models()]
        except ImportError as e:
            if not (is_missing_torch(e) or isinstance(e, MissingTorchError)):
                raise
            archs_note = torch_missing_message("listing the architectures")
        if as_json:
            out = {"pretrained": [m.to_dict() for m in found], "authors_released": released}
            if not pretrained:
                out["architectures"] = [{"name": n, "default_backbone": b, "description": d} for n, b, d in archs]
            typer.echo(json.dumps(out, indent=2))
            return
        if pretrained:  # only names that load weights as they are; the authors' need their files
            for m in found:
                typer.echo(m.name)
            return
        typer.echo("With trained weights (--model NAME):")
        if not found:
            typer.echo("  none in this installation (the default model falls back to the LBP baseline)")
        for m in found:
            params = f"{m.parameters / 1e6:.2f} M parameters" if m.parameters else ""
            typer.echo(f"  {m.name:20s} {m.architecture} on {m.backbone}, {params}  - {m.description}")
            for fmt, path in m.files.items():
                runs_on = "ONNX Runtime (default backend)" if fmt == "onnx" else "PyTorch (--backend torch)"
                typer.echo(f"    {fmt:12s} {m.size_bytes(fmt) / 1e6:5.1f} MB  {runs_on:31s} {path}")
        if released:
            typer.echo("\nWeights released by the paper's authors (not shipped: --model THEIR_FILE.pth, or "
                       "defocus convert):")
            typer.echo("  " + ", ".join(released))
        typer.echo("\nArchitectures (random weights: defocus train gives them weights; --model NAME[:BACKBONE] "
                   "for speed tests):")
        if archs_note:
            typer.echo(f"  {archs_note}")
        for name, backbone, description in archs:
            typer.echo(f"  {name:22s} {backbone:14s} {description}")
