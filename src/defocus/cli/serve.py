"""`defocus serve`: the HTTP API and web page (needs the ``serve`` extra: FastAPI, uvicorn, python-multipart)."""
from __future__ import annotations

from typing import Optional

import typer

from ..defaults import SERVE_MAX_PIXELS


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SERVE_EXTRA_MODULES = ("fastapi", "uvicorn", "multipart")


def _missing_extra() -> str | None:
    import importlib.util

    missing = [m for m in SERVE_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return (f"defocus serve needs the 'serve' extra ({', '.join(missing)} not installed): "
                f"pip install \"defocus[serve]\"")
    return None


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command."""

    @app.command("serve")
    def serve_cmd(
        model: str = typer.Option("default", "--model", "-m", help="'default' (bundled weights), a checkpoint "
                                  "(.safetensors, authors' .pth, .onnx), or a registry NAME[:BACKBONE]."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default; use "
                                 "--api-key when binding a wider one)."),
        port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
        workers: int = typer.Option(2, "--workers", min=1, help="Inference threads."),
        queue: int = typer.Option(8, "--queue", min=0, help="Requests that may wait for a worker; beyond that "
                                  "the server answers 503 with Retry-After."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
        size: Optional[int] = typer.Option(None, "--size", min=32, max=1536, help="Default network input size. "
                                           "Default: the model's own (the bundled model: 512; other models: the "
                                           "paper's 320)."),
        keep_aspect: bool = typer.Option(False, "--keep-aspect", help="Keep the aspect ratio by default."),
        upscale: Optional[bool] = typer.Option(None, "--upscale/--no-upscale", help="Enlarge images smaller than "
                                               "the input size by default (the paper's). Default: the model's own "
                                               "(the bundled model: no)."),
        threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Default mask threshold."),
        upsample: str = typer.Option("bilinear", "--upsample", help="bilinear, or nearest (the paper's)."),
        flip_tta: bool = typer.Option(False, "--flip-tta", help="Also run each image mirrored and average the two "
                                      "maps (not in the paper): twice the time per request."),
        refine: bool = typer.Option(False, "--refine", help="Refine every map along the photo's colour edges "
                                    "(closed-form matting; not in the paper): a few seconds an image on a CPU."),
        max_upload_mb: float = typer.Option(40.0, "--max-upload-mb", min=0.001, help="Largest accepted file, in MiB (2^20 bytes)."),
        max_pixels: int = typer.Option(SERVE_MAX_PIXELS, "--max-pixels", min=1, help="Largest accepted image "
                                       "(width x height; a guard against decompression bombs)."),
        timeout: float = typer.Option(60.0, "--timeout", min=0.001, help="Seconds a request may take."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, help="PyTorch CPU threads per worker "
                                              "(default: PyTorch's default)."),
        api_key: Optional[str] = typer.Option(None, "--api-key", envvar="DEFOCUS_API_KEY",
                                              help="Require this key in the X-API-Key header of /v1 requests."),
    ):
        """Serve in-focus maps over HTTP: the /v1 API (documented at /docs) and a web page at /."""
        import logging
        import socket

        missing = _missing_extra()
        if missing:
            typer.echo(f"error: {missing}", err=True)
            raise typer.Exit(2)
        import uvicorn

        from ..serve import ServeSettings, create_app
        from ..serve.predictors import build_predictor

        try:
            settings = ServeSettings(model=model, device=device, size=size, keep_aspect=keep_aspect,
                                     upscale=upscale, threshold=threshold, upsample=upsample, flip_tta=flip_tta,
                                     refine=refine, workers=workers, queue_size=queue, max_upload_bytes=int(max_upload_mb * 2**20),
                                     max_pixels=max_pixels,
                                     request_timeout=timeout, api_key=api_key or None, threads=threads)
            predictor = build_predictor(settings)
        except (ValueError, OSError, ImportError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        if host not in LOOPBACK_HOSTS and not api_key:
            logging.getLogger("defocus.serve").warning(
                "binding %s without --api-key: anyone who can reach this address can use the server", host)
        try:  # uvicorn reports a taken port in a multi-line log and exits with its own status: check first
            socket.create_server((host, port)).close()
        except OSError as e:
            typer.echo(f"error: cannot serve on {host}:{port} ({e.strerror or e})", err=True)
            raise typer.Exit(2)
        typer.echo(f"defocus serve: http://{host}:{port}/ (API docs at /docs); model: {predictor.info}", err=True)
        try:
            uvicorn.run(create_app(settings, predictor), host=host, port=port, log_level="info")
        except OSError as e:  # e.g. the port was taken since the check
            typer.echo(f"error: cannot serve on {host}:{port} ({e})", err=True)
            raise typer.Exit(2)
