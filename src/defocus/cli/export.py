"""`defocus export` (ONNX with a parity check) and `defocus benchmark` (throughput, latency, memory)."""
from __future__ import annotations

from typing import List, Optional

import typer

from ..defaults import DEFAULT_OPSET, EXPORT_TOLERANCE


def _csv(value: str, option: str) -> list[str]:
    """The items of a comma-separated option; an empty item is a usage error (exit 2)."""
    items = [v.strip() for v in value.split(",")]
    if not all(items):
        raise typer.BadParameter(f"{value!r}: an empty item in the comma-separated list", param_hint=option)
    return items


def _batch_sizes(value: str) -> list[int]:
    """``--batch-size``: comma-separated positive integers."""
    items = _csv(value, "--batch-size")
    if not all(v.isdigit() and int(v) > 0 for v in items):
        raise typer.BadParameter(f"{value!r}: give positive integers separated by commas, e.g. 1,8",
                                 param_hint="--batch-size")
    return [int(v) for v in items]


def register(app: typer.Typer) -> None:
    """Add the ``export`` and ``benchmark`` commands."""

    @app.command("export")
    def export_cmd(
        model: str = typer.Option("default", "--model", "-m", help="Checkpoint (.safetensors / authors' .pth), "
                                  "'default', or a registry NAME[:BACKBONE] (random weights)."),
        output: str = typer.Option(..., "--output", "-o", help="ONNX file to write."),
        opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset version."),
        fuse: bool = typer.Option(True, "--fuse/--no-fuse", help="Fold conv + BN pairs before exporting."),
        fp16_weights: bool = typer.Option(False, "--fp16-weights", help="Store the weights that are float16 "
                                          "values as float16, cast to float32 in the graph (half the file; use "
                                          "with --no-fuse for float16 checkpoints such as the bundled one)."),
        check_images: Optional[List[str]] = typer.Option(None, "--check-image", help="Real image(s) to include "
                                                         "in the parity check (repeatable)."),
        check: bool = typer.Option(True, "--check/--no-check", help="Validate against PyTorch with ONNX Runtime."),
        tolerance: float = typer.Option(EXPORT_TOLERANCE, "--tolerance",
                                        help="Largest accepted probability difference."),
    ):
        """Export a network to ONNX (dynamic batch, height, width; input 'image' = normalised NCHW float32,
        output 'logit') and check it against PyTorch."""
        from ..export import export_onnx
        from ..inference import load_network

        try:
            net, info = load_network(model)
            report = export_onnx(net, output, opset=opset, fuse=fuse, check=check,
                                 check_images=check_images or (), tolerance=tolerance,
                                 fp16_weights=fp16_weights)
        except (ValueError, OSError, ImportError) as e:
            from ..optional import error_text

            typer.echo(f"error: {error_text(e)}", err=True)
            raise typer.Exit(2)
        except AssertionError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        for case in report.get("cases", []):
            typer.echo(f"  {case['case']:36s} max |prob diff| {case['max_abs_diff_prob']:.2e}   "
                       f"max |logit diff| {case['max_abs_diff_logit']:.2e}")
        if check:
            typer.echo(f"parity (ONNX Runtime vs PyTorch, float32): max |prob diff| "
                       f"{report['max_abs_diff_prob']:.2e}, max |logit diff| {report['max_abs_diff_logit']:.2e}")
        typer.echo(f"wrote {output} ({report['bytes'] / 1e6:.1f} MB; {info})")

    @app.command("benchmark")
    def benchmark_cmd(
        model: str = typer.Option("default", "--model", "-m", help="As for predict; a registry NAME[:BACKBONE] "
                                  "measures speed with random weights."),
        method: Optional[str] = typer.Option(None, "--method", help="Time a training-free baseline instead."),
        size: Optional[int] = typer.Option(None, "--size", min=32, help="Input side (default: the model's own: "
                                           "512 for the bundled model, 320 for most others)."),
        batch_size: Optional[str] = typer.Option(None, "--batch-size", help="Comma-separated batch sizes "
                                                 "(default: 1,8)."),
        backend: str = typer.Option("auto", "--backend", help="Comma-separated: auto (the backend predict runs "
                                    "the model on), torch, onnx, torch-baseline (the unoptimised eval model)."),
        runs: int = typer.Option(10, "--runs", min=1, help="Timed runs per configuration."),
        warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed runs first."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Intra-op threads (default: "
                                              "PyTorch's)."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, auto."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ):
        """Images/s, latency p50/p90 and peak memory (RSS) per backend and batch size, each measured in a
        fresh process, with machine information."""
        import json

        from ..bench import benchmark, format_table

        try:
            report = benchmark(model=model, size=size,
                               batch_sizes=None if batch_size is None else _batch_sizes(batch_size),
                               backends=_csv(backend, "--backend"), runs=runs, warmup=warmup, threads=threads,
                               device=device, method=method)
        except (ValueError, OSError, ImportError) as e:
            from ..optional import error_text

            typer.echo(f"error: {error_text(e)}", err=True)
            raise typer.Exit(2)
        typer.echo(json.dumps(report, indent=2) if as_json else format_table(report))
