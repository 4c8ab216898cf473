"""`defocus data list|prepare|verify|synth`: dataset registry, official-download preparation and checks,
synthetic defocus rendering."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..defaults import PAPER_SIZE


def _fail(msg: str, code: int = 2):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _print_report(report, strict: bool) -> bool:
    for issue in report.issues:
        typer.echo(str(issue))
    typer.echo(report.summary())
    return report.ok and not (strict and report.warnings)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group."""
    data = typer.Typer(no_args_is_help=True,
                       help="Datasets: list, prepare downloads, verify, render synthetic defocus.")
    app.add_typer(data, name="data")

    @data.command("list")
    def list_cmd():
        """List the registered datasets, their expected size and raw mask polarity."""
        from ..data.registry import REGISTRY

        for spec in REGISTRY.values():
            pol = ", ".join(sorted({p.mask_white for p in spec.parts})) or "declared"
            n = spec.expected if spec.expected is not None else "-"
            typer.echo(f"{spec.name:18s} {str(n):>5s}  white={pol:14s} {spec.description}")

    @data.command("prepare")
    def prepare_cmd(
        name: str = typer.Argument(..., help="cuhk, dut, ctcug or ebd (or any dataset prepared from one)."),
        src: Path = typer.Option(..., "--src", help="The unpacked download."),
        root: Path = typer.Option(..., "--root", help="Data root to fill (registry layout)."),
        mode: str = typer.Option("copy", "--mode", help="copy, hardlink or symlink (never re-encodes)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace differing files already in the root."),
        verify: bool = typer.Option(True, "--verify/--no-verify", help="Verify the prepared dataset afterwards."),
    ):
        """Copy or link an official download into the registry layout under ROOT."""
        from ..data.prepare import prepare_dataset, prepared_datasets
        from ..data.registry import DataError
        from ..data.verify import verify_dataset

        try:
            report = prepare_dataset(name, src, root, mode=mode, overwrite=overwrite)
        except (DataError, ValueError) as e:
            _fail(str(e))
        for part in report.parts:
            typer.echo(f"{part}: {report.written[part]} files written, {report.kept[part]} already there")
        if report.renamed:
            typer.echo(f"{report.renamed} masks stored under their image's stem (paired by sorted order)")
        for p in report.problems:
            typer.echo(f"problem: {p}")
        ok = report.ok
        if verify:
            for ds in prepared_datasets(report):
                ok &= _print_report(verify_dataset(ds, root), strict=False)
        if not ok:
            raise typer.Exit(1)

    @data.command("verify")
    def verify_cmd(
        name: str = typer.Argument(..., help="A registered dataset (see `defocus data list`)."),
        root: Optional[Path] = typer.Option(None, "--root", help="Data root (default: $DEFOCUS_DATA)."),
        list_file: Optional[Path] = typer.Option(None, "--list-file", help="Stem list (cuhk2-tr / cuhk2-te)."),
        images: Optional[Path] = typer.Option(None, "--images", help="Image folder (dataset 'folder')."),
        masks: Optional[Path] = typer.Option(None, "--masks", help="Mask folder (dataset 'folder')."),
        mask_white: str = typer.Option("in-focus", "--mask-white", help="'in-focus' or 'blur' (dataset 'folder')."),
        strict: bool = typer.Option(False, "--strict",
                                    help="Fail on warnings too (soft masks, polarity, stray files)."),
    ):
        """Check counts, pairing, sizes, mask values and polarity; exit 1 if any problem is found."""
        from ..data.registry import DataError
        from ..data.verify import verify_dataset

        try:
            report = verify_dataset(name, root, list_file=list_file, image_dir=images, mask_dir=masks,
                                    mask_white=mask_white)
        except (DataError, ValueError) as e:
            _fail(str(e))
        if not _print_report(report, strict):
            raise typer.Exit(1)

    @data.command("synth")
    def synth_cmd(
        src: Optional[List[Path]] = typer.Option(None, "--src", help="Folder of sharp photos (repeatable)."),
        masks: Optional[List[Path]] = typer.Option(None, "--masks", help="Matching folder of foreground masks."),
        natural: Optional[Path] = typer.Option(None, "--natural",
                                               help="Use every <set>/{images,masks} under this root."),
        n: int = typer.Option(..., "-n", help="Number of samples."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder (images/, masks/, samples.jsonl)."),
        seed: int = typer.Option(0, "--seed", help="Same seed, same samples."),
        size: int = typer.Option(PAPER_SIZE, "--size", help="Output side in pixels."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON of SynthConfig fields to override."),
    ):
        """Render N synthetic defocus image/mask pairs (mask 255 = in focus)."""
        from ..data.synth import SynthConfig, list_natural_sources, write_synthetic

        sources = list(zip(src or [], masks or []))
        if len(src or []) != len(masks or []):
            _fail("give one --masks folder for every --src folder")
        if natural is not None:
            sources += list_natural_sources(natural)
        if not sources:
            _fail("no sources: give --src IMAGES --masks MASKS or --natural ROOT")
        cfg = SynthConfig()
        if config is not None:
            import yaml

            from ..data.synth import config_from_dict

            cfg = config_from_dict(yaml.safe_load(config.read_text()) or {})
        try:
            path = write_synthetic(sources, out, n, seed=seed, size=size, cfg=cfg)
        except (ValueError, OSError) as e:
            _fail(str(e))
        typer.echo(f"{n} samples written to {path}")
