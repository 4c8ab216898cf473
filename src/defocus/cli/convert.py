"""`defocus convert`: the authors' released .pth files -> defocus safetensors."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

_DTYPES = ("float32", "float16", "bfloat16")


def register(app: typer.Typer) -> None:
    """Add the ``convert`` command."""

    @app.command("convert")
    def convert_cmd(
        src: Path = typer.Argument(..., help="The authors' checkpoint (.pth), e.g. a DFFNet / D-DFFNet release."),
        dst: Path = typer.Argument(..., help="Output file (.safetensors); opens with defocus.load_model."),
        arch: Optional[str] = typer.Option(
            None, "--arch",
            help="Variant, when the file cannot tell: dffnet (default) or dffnet_no_dffm, which have identical "
                 "keys (told apart by the BatchNorm counters of the convolutions only DFFNet runs, when the file "
                 "has them). Other variants (dffnet_no_attention, pdnet, rdffnet) are recognised from the keys."),
        dtype: str = typer.Option("float32", "--dtype", help="Stored precision: float32, float16 or bfloat16."),
    ):
        """Convert an authors' D-DFFNet-family checkpoint to a self-describing safetensors file, strictly."""
        import torch

        from ..convert import convert_checkpoint

        if dtype not in _DTYPES:
            raise typer.BadParameter(f"{dtype!r} is not one of {', '.join(_DTYPES)}", param_hint="--dtype")
        if dst.is_dir():
            raise typer.BadParameter(f"{dst} is a folder; name the output file (e.g. {dst / 'model.safetensors'})",
                                     param_hint="DST")
        if dst.suffix.lower() != ".safetensors":
            raise typer.BadParameter(f"{dst}: the output is a safetensors file (name it .safetensors; for ONNX, "
                                     f"defocus export the converted file)", param_hint="DST")
        try:
            report = convert_checkpoint(src, dst, arch=arch, dtype=getattr(torch, dtype))
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        except OSError as e:
            typer.echo(f"error: {dst}: cannot write ({e.strerror or e})", err=True)
            raise typer.Exit(1)
        typer.echo(f"{dst}: {report.summary()}")
