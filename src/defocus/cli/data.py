"""`defocus data list|prepare|verify|pairs|uniform-crops|synth`: dataset registry, official-download preparation
and checks, labels from photo pairs, uniform crops of labelled photos, synthetic defocus rendering."""
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
    typer.echo(report.summary(strict))
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
        sheets: Optional[Path] = typer.Option(None, "--sheets", help="mfifb / dfd: write a contact sheet per pair "
                                              "into this folder."),
        keep_excluded: bool = typer.Option(False, "--keep-excluded", help="mfifb: also label the pairs listed as "
                                           "not optical (synthetic or duplicate)."),
        label_window: Optional[float] = typer.Option(None, "--label-window", min=0.001, max=0.5,
                                                     help="mfifb / dfd: focus-measure window as a fraction of the "
                                                          "short side (default 0.02; the benchmark's labels)."),
    ):
        """Copy or link an official download into the registry layout under ROOT (mfifb and dfd: label the
        photo pairs and write images, masks and ignore masks)."""
        from ..data.pairs import PairError
        from ..data.prepare import prepare_dataset, prepared_datasets
        from ..data.registry import DataError
        from ..data.verify import verify_dataset

        pair_options = {}
        if sheets is not None:
            pair_options["sheets"] = sheets
        if keep_excluded:
            pair_options["keep_excluded"] = True
        if label_window is not None:
            from ..data.pairs import PairLabelConfig

            pair_options["cfg"] = PairLabelConfig(window=label_window)
        try:
            report = prepare_dataset(name, src, root, mode=mode, overwrite=overwrite, pair_options=pair_options)
        except (DataError, PairError, ValueError, OSError) as e:
            _fail(str(e))
        for part in report.parts:
            typer.echo(f"{part}: {report.written[part]} files written, {report.kept[part]} already there")
        if report.renamed:
            typer.echo(f"{report.renamed} masks stored under their image's stem (paired by sorted order)")
        for p in report.skipped:
            typer.echo(f"left out: {p}")
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
        """Check counts, pairing, sizes, mask values and polarity; exit 1 if any problem is found. A combined
        name (`a+b`) checks each part."""
        from ..data.registry import DataError, canonical_name, get_spec
        from ..data.verify import verify_dataset

        try:
            specs = [get_spec(part) for part in name.split("+")]
        except DataError as e:
            _fail(str(e))
        if not any(s.name == "folder" for s in specs):
            if images is not None or masks is not None or canonical_name(mask_white) != "infocus":
                _fail(f"--images, --masks and --mask-white describe the dataset 'folder'; {name} has its own")
        elif (images is None) != (masks is None):
            _fail("--images and --masks go together (the dataset 'folder')")
        if list_file is not None and not any(p.subset == "list" for s in specs for p in s.parts):
            _fail(f"--list-file selects the stems of a dataset that needs a list (cuhk2-tr, cuhk2-te); {name} "
                  f"takes none")
        try:
            reports = [verify_dataset(part, root, list_file=list_file, image_dir=images, mask_dir=masks,
                                      mask_white=mask_white) for part in name.split("+")]
        except (DataError, ValueError, OSError) as e:
            _fail(str(e))
        ok = [_print_report(report, strict) for report in reports]
        if not all(ok):
            raise typer.Exit(1)

    @data.command("pairs")
    def pairs_cmd(
        first: Path = typer.Argument(..., help="Focus pair: one image (e.g. focused near). Aperture pair: the "
                                     "wide-aperture image."),
        second: Path = typer.Argument(..., help="Focus pair: the other image (focused far). Aperture pair: the "
                                      "narrow-aperture image."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder (images/, masks/, ignore/, sheets/)."),
        aperture: bool = typer.Option(False, "--aperture", help="An aperture pair (wide, narrow): label the wide "
                                      "image only."),
        sheet: bool = typer.Option(False, "--sheet", help="Also write a contact sheet: image | mask (grey = "
                                   "undetermined) | overlay."),
        window: float = typer.Option(0.02, "--window", help="Focus-measure window (Gaussian std) as a fraction "
                                     "of the short side."),
        margin: float = typer.Option(2.0, "--margin", help="Focus-measure ratio for 'sharper than the other'."),
        tolerance: float = typer.Option(1.3, "--tolerance", help="Aperture pairs: ratio still 'as sharp as' the "
                                        "narrow-aperture image."),
        min_gradient: float = typer.Option(1.5, "--min-gradient", help="Least RMS gradient (grey levels / px) "
                                           "to decide at all (texture floor)."),
        floor: float = typer.Option(2.0, "--floor", help="Least re-blur ratio of an in-focus image (absolute "
                                    "sharpness floor)."),
        aperture_floor: float = typer.Option(1.5, "--aperture-floor", help="The sharpness floor of the wide "
                                             "image of an aperture pair."),
        boundary: float = typer.Option(2.0, "--boundary", help="Undetermined band at label transitions, in "
                                       "windows."),
        min_region: float = typer.Option(0.002, "--min-region", help="Least labelled region, fraction of the "
                                         "frame."),
    ):
        """Label a focus bracket (two shots, focused near and far) or an aperture bracket (wide and narrow
        aperture) of one scene from a tripod: writes OUT/images/<stem>.<ext>, OUT/masks/<stem>.png (255 = in
        focus) and OUT/ignore/<stem>.png (255 = undetermined) for each labelled image."""
        from ..data.pairs import (APERTURE, FOCUS, PairError, PairLabelConfig, labelled_images, label_files,
                                  pair_sheet, write_labelled)

        try:
            cfg = PairLabelConfig(window=window, margin=margin, tolerance=tolerance, min_gradient=min_gradient,
                                  floor=floor, aperture_floor=aperture_floor, boundary=boundary,
                                  min_region=min_region)
            if first.resolve() == second.resolve():
                raise PairError(f"{first}: the same file given twice")
            a, b, labels = label_files(first, second, APERTURE if aperture else FOCUS, cfg)
            items = labelled_images(first, second, labels)
            if len({it.stem for it in items}) < len(items):
                raise PairError(f"{first} and {second} have the same stem; rename one")
            page = pair_sheet([a, b], labels) if sheet else None
            write_labelled(items, out, page, items[0].stem)
        except (PairError, ValueError, OSError) as e:
            _fail(str(e))
        al = labels.alignment
        typer.echo(f"aligned: shift {al.shift[0]:+.2f}, {al.shift[1]:+.2f} px, scale {1 + al.scale:.4f}")
        for it in items:
            share = it.label.determined_fraction
            focus = f"{it.label.in_focus_fraction:.1%} of them in focus" if share > 0 else "no label"
            typer.echo(f"{it.stem}: {share:.1%} determined, {focus} -> {out}")

    @data.command("uniform-crops")
    def uniform_crops_cmd(
        set_dir: Path = typer.Argument(..., help="A prepared set: images/, masks/ (255 = in focus), ignore/ "
                                       "(255 = undetermined), e.g. ROOT/MFIFB."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder (one per split): images/, masks/, "
                                 "ignore/, blurred.txt, sharp.txt, crops.tsv."),
        split: Optional[str] = typer.Option(None, "--split", help="A split shipped with the package (e.g. "
                                            "mfifb-val, dfd-test); default: every image of the set."),
        list_file: Optional[Path] = typer.Option(None, "--list-file", help="Stem list (instead of --split)."),
        side: float = typer.Option(0.5, "--side", help="Window side, fraction of the image's short side."),
        stride: float = typer.Option(0.25, "--stride", help="Window step, fraction of the window side."),
        min_determined: float = typer.Option(0.4, "--min-determined", help="Least share of a window's pixels "
                                             "that carry a label."),
        purity: float = typer.Option(0.98, "--purity", help="Least share of the labelled pixels that are "
                                     "blurred (blurred crop) or in focus (sharp crop)."),
        min_side: int = typer.Option(200, "--min-side", help="Smallest window side in pixels (smaller crops, "
                                     "enlarged to a network's input size, no longer look sharp)."),
        whole_label: bool = typer.Option(False, "--whole-label", help="Label every pixel of a crop as its kind "
                                         "and none undetermined (crops for training; default: the pair labels, "
                                         "for evaluation)."),
    ):
        """Cut from each labelled photo the window that is blurred everywhere and the one that is in focus
        (almost) everywhere, where there is one, at full resolution, and write them as a prepared set."""
        from ..data.files import list_images
        from ..data.registry import DataError, packaged_splits, split_stems
        from ..data.uniform_crops import BLURRED, SHARP, uniform_crops
        from ..listfiles import read_list_stems

        if split is not None and list_file is not None:
            _fail("give --split or --list-file, not both")
        if split is not None:
            names = packaged_splits()
            if split not in names:
                _fail(f"unknown split {split!r} (known: {', '.join(names)})")
            stems = split_stems(f"{split}.txt")
        elif list_file is not None:
            try:
                stems = read_list_stems(list_file)
            except (OSError, UnicodeDecodeError) as e:
                _fail(f"{list_file}: cannot read ({e})")
        else:
            stems = [p.stem for p in list_images(set_dir / "images")]
        try:
            crops = uniform_crops(set_dir, stems, out, side=side, stride=stride, min_determined=min_determined,
                                  purity=purity, min_side_px=min_side, whole_label=whole_label)
        except (DataError, ValueError, OSError) as e:
            _fail(str(e))
        n = {k: sum(c.kind == k for c in crops) for k in (BLURRED, SHARP)}
        typer.echo(f"{len(stems)} images: {n[BLURRED]} blurred and {n[SHARP]} sharp crops -> {out}")

    @data.command("synth")
    def synth_cmd(
        src: Optional[List[Path]] = typer.Option(None, "--src", help="Folder of sharp photos (repeatable)."),
        masks: Optional[List[Path]] = typer.Option(None, "--masks", help="Matching folder of foreground masks."),
        natural: Optional[Path] = typer.Option(None, "--natural",
                                               help="Use every <set>/{images,masks} under this root."),
        n: int = typer.Option(..., "-n", min=1, help="Number of samples."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder (images/, masks/, samples.jsonl)."),
        seed: int = typer.Option(0, "--seed", min=0, help="Same seed, same samples."),
        size: Optional[int] = typer.Option(None, "--size", min=8, help="Output side in pixels (default: the "
                                           f"--config file's size, else {PAPER_SIZE})."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON of SynthConfig fields to override."),
    ):
        """Render N synthetic defocus image/mask pairs (mask 255 = in focus)."""
        from ..data.synth import SynthConfig, list_natural_sources, write_synthetic

        sources = list(zip(src or [], masks or []))
        if len(src or []) != len(masks or []):
            _fail("give one --masks folder for every --src folder")
        if natural is not None:
            if not natural.is_dir():
                _fail(f"{natural}: no such folder (--natural)")
            sources += list_natural_sources(natural)
        if not sources:
            _fail("no sources: give --src IMAGES --masks MASKS or --natural ROOT")
        cfg = SynthConfig()
        if config is not None:
            import yaml

            from ..data.synth import config_from_dict

            try:
                cfg = config_from_dict(yaml.safe_load(config.read_text()) or {})
            except (ValueError, TypeError, OSError, yaml.YAMLError) as e:
                _fail(f"{config}: {e}")
        if size is None:
            size = cfg.size if config is not None and cfg.size is not None else PAPER_SIZE
        try:
            path = write_synthetic(sources, out, n, seed=seed, size=size, cfg=cfg)
        except (ValueError, OSError) as e:
            _fail(str(e))
        typer.echo(f"{n} samples written to {path}")
