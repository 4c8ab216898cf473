"""`defocus predict`: in-focus maps, masks and overlays for image files, folders, globs or lists."""
from __future__ import annotations

from typing import List, Optional

import typer

from ..errors import first_line
from ..imageio import DEFAULT_MAX_PIXELS, SUMMARY_NAME
from ..inference import (BACKENDS, DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, DRAFT_PIXELS, PRECISIONS,
                         SAVE_CHOICES, UPSAMPLE_CHOICES)



def report_error(path: str, reason: str) -> None:
    """One ``error: <path>: <reason>`` line on stderr, above the progress bar."""
    import sys

    from tqdm import tqdm

    tqdm.write(f"error: {path}: {reason}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command."""

    @app.command("predict")
    def predict_cmd(
        inputs: List[str] = typer.Argument(..., metavar="INPUT...",
                                           help="Image files, folders, glob patterns, or .txt files listing them."),
        out: str = typer.Option("outputs", "--output", "-o", help="Output folder."),
        model: str = typer.Option("default", "--model", "-m",
                                  help="'default' (bundled weights), a checkpoint (.safetensors, authors' .pth, "
                                       ".onnx), or a registry NAME[:BACKBONE] (random weights: speed tests only)."),
        method: Optional[str] = typer.Option(None, "--method", help="Training-free baseline instead of a network: "
                                             "lbp or hifst."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
        size: Optional[int] = typer.Option(None, "--size", min=1, help="Network input size. Default: the model's "
                                           "own (the bundled model: 512; a trained model: its data.size; others: the paper's 320)."),
        threshold: Optional[float] = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                                  help="Mask threshold on the in-focus probability (default 0.5; "
                                                       "with --method, the method's own: LBP 0.3, HiFST Otsu's)."),
        save: List[str] = typer.Option([",".join(SAVE_CHOICES)], "--save",
                                       help=f"Outputs to write: any of {','.join(SAVE_CHOICES)} (comma-separated "
                                            f"or repeated)."),
        backend: str = typer.Option(BACKENDS[0], "--backend", help="auto (the bundled model and .onnx files on "
                                     "ONNX Runtime, other models on PyTorch), torch, or onnx (ONNX Runtime)."),
        batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", min=1, help="Images per forward pass."),
        keep_aspect: bool = typer.Option(False, "--keep-aspect", help="Keep the aspect ratio (long side = size) "
                                         "instead of the paper's square resize."),
        upscale: Optional[bool] = typer.Option(None, "--upscale/--no-upscale",
                                               help="Enlarge photos smaller than the input size (the paper's); "
                                                    "--no-upscale runs them at their own size (enlarging softens a "
                                                    "sharp photo). Default: the model's own (the bundled model: "
                                                    "--no-upscale; other models: --upscale)."),
        recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders (their layout "
                                       "is kept under the output folder)."),
        skip_existing: bool = typer.Option(False, "--skip-existing", help="Resume: skip the images whose outputs "
                                           "all exist in the output folder (--ray always resumes)."),
        as_json: bool = typer.Option(False, "--json", help="Print summary.json to stdout (--ray: the run's "
                                     "counts; the per-image rows are in predictions.parquet)."),
        upsample: str = typer.Option(UPSAMPLE_CHOICES[0], "--upsample", help="Resizing of the map back to the image "
                                     "size: bilinear, or nearest (the paper's)."),
        fast_decode: bool = typer.Option(False, "--fast-decode", help="Decode JPEGs at a reduced DCT scale "
                                         "(>= 2x the input size): faster on large photos, nearly identical maps."),
        draft_pixels: int = typer.Option(DRAFT_PIXELS, "--draft-pixels", min=0, help="JPEGs above this many "
                                         "pixels are decoded for the network at a reduced DCT scale (>= 4x the "
                                         "input size; bounded memory); 0: always decode in full (the paper's)."),
        max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=0, help="Refuse larger images (guard "
                                       "against decompression bombs); 0 disables the limit."),
        flip_tta: bool = typer.Option(False, "--flip-tta", help="Also run each image mirrored and average the two "
                                      "maps (not in the paper; networks only): twice the time, slightly better "
                                      "maps."),
        refine: bool = typer.Option(False, "--refine", help="Refine each map along the photo's colour edges "
                                    "(closed-form matting: fills grey insides of sharp subjects, snaps fringes to "
                                    "edges; not in the paper; networks only): a few seconds an image on a CPU."),
        precision: str = typer.Option(PRECISIONS[0], "--precision", help="fp32; bf16 (CUDA, or a CPU with native "
                                      "bf16 instructions); fp16 (CUDA). Not exact."),
        compile_model: bool = typer.Option(False, "--compile", help="torch.compile the network."),
        workers: int = typer.Option(DEFAULT_WORKERS, "--workers", min=1, help="Decoding / writing threads."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        use_ray: bool = typer.Option(False, "--ray", help="Run on Ray Data (a local instance, or RAY_ADDRESS): "
                                     "resumable, writes OUT/predictions.parquet."),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDRESS",
                                                  help="Ray cluster to run on (auto, ray://head:10001); implies "
                                                  "--ray."),
        ray_concurrency: int = typer.Option(1, "--ray-concurrency", min=1, help="Ray: number of actors."),
        ray_batch_size: int = typer.Option(32, "--ray-batch-size", min=1, help="Ray: images per actor call."),
        ray_gpus: float = typer.Option(0.0, "--ray-gpus", min=0.0, help="Ray: GPUs per actor (> 0: GPU actors)."),
        ray_cpus: float = typer.Option(1.0, "--ray-cpus", min=0.0, help="Ray: CPUs per actor."),
    ):
        """Predict which parts of each image are in focus. Writes OUT/<stem>_prob.png (255 = in focus),
        <stem>_mask.png, <stem>_overlay.jpg and OUT/summary.json. Exit status 1 if any input failed, 2 for a
        set-up error, 130 / 143 when interrupted (Ctrl-C / SIGTERM; summary.json lists what was done)."""
        import signal

        from ..inference import (Predictor, check_model_spec, interrupt_signal, plan_batch, run_batch,
                                 sigterm_interrupts, summary_json)

        save = ",".join(save)  # --save prob --save mask: both

        if use_ray or ray_address:  # the same Predictor as Ray Data actors: defocus.distributed
            from ..distributed import predict_dataset

            try:
                run = predict_dataset(inputs, out, model=model, save=save, recursive=recursive,
                                      address=ray_address, concurrency=ray_concurrency, ray_batch_size=ray_batch_size,
                                      num_cpus=ray_cpus, num_gpus=ray_gpus, progress=progress, on_error=report_error,
                                      device=device, size=size, backend=backend, method=method,
                                      keep_aspect=keep_aspect, upscale=upscale, threshold=threshold,
                                      batch_size=batch_size, max_pixels=max_pixels or None, upsample=upsample,
                                      fast_decode=fast_decode, draft_pixels=draft_pixels or None,
                                      flip_tta=flip_tta, refine=refine,
                                      precision=precision, compile=compile_model, workers=workers)
            except KeyboardInterrupt as e:
                signum = interrupt_signal(e)
                typer.echo(f"interrupted ({signal.Signals(signum).name}); run the same command again to resume",
                           err=True)
                raise typer.Exit(128 + signum)
            except Exception as e:  # Ray's own errors span many lines: their first line is the message
                typer.echo(f"error: {first_line(e)}", err=True)
                raise typer.Exit(2)
            if run.outputs_named:
                typer.echo(f"note: {len(run.outputs_named)} input(s) not taken: outputs of defocus predict "
                           f"(e.g. {run.outputs_named[0]})", err=True)
            if as_json:
                typer.echo(summary_json(run.to_dict()))
            typer.echo(f"{run.processed - run.failed} image(s) done, {run.failed} failed, {run.skipped} skipped "
                       f"(done before); table {run.table or 'not written (no row)'} (model: {run.model})", err=True)
            if run.failed or not (run.processed or run.skipped):
                raise typer.Exit(1)
            return

        plan = predictor = None
        with sigterm_interrupts():
            try:
                # everything that needs no model is checked first: a wrong path fails at once
                check_model_spec(model)
                plan = plan_batch(inputs, out, save, recursive=recursive, skip_existing=skip_existing)
                if plan.outputs_named:
                    typer.echo(f"note: {len(plan.outputs_named)} input(s) not taken: outputs of defocus predict "
                               f"(e.g. {plan.outputs_named[0]})", err=True)
                if plan.jobs:
                    predictor = Predictor(model, method=method, device=device, backend=backend, size=size,
                                          keep_aspect=keep_aspect, upscale=upscale, threshold=threshold,
                                          batch_size=batch_size, max_pixels=max_pixels or None, upsample=upsample,
                                          fast_decode=fast_decode, draft_pixels=draft_pixels or None,
                                          flip_tta=flip_tta, refine=refine, precision=precision,
                                          compile=compile_model,
                                          workers=workers)
                summary = run_batch(predictor, plan, progress=progress, on_error=report_error)
            except (ValueError, OSError, ImportError) as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2)
            except KeyboardInterrupt as e:
                signum = interrupt_signal(e)
                started = plan is not None and (predictor is not None or not plan.jobs)
                where = f"; the images done are listed in {plan.out_dir / SUMMARY_NAME}" if started else ""
                typer.echo(f"interrupted ({signal.Signals(signum).name}){where}", err=True)
                raise typer.Exit(128 + signum)
        if as_json:
            typer.echo(summary_json(summary))
        done = summary["n_images"] - summary["failed"] - summary["skipped"]
        skipped = f", {summary['skipped']} skipped (outputs exist)" if summary["skipped"] else ""
        model_used = f" (model: {predictor.info})" if predictor is not None else ""
        typer.echo(f"{done} image(s) done, {summary['failed']} failed{skipped}; outputs in {summary['out_dir']}"
                   f"{model_used}", err=True)
        if summary["failed"] or not summary["n_images"]:
            raise typer.Exit(1)
