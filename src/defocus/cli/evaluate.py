"""`defocus evaluate`: score saved maps of any method, or run a checkpoint on datasets."""
from __future__ import annotations

import importlib.util
import json
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

#: Figure formats of --plot (matplotlib picks the format from the suffix).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


class ProtocolName(str, Enum):
    """--protocol: the evaluation protocols (docs/evaluation.md)."""

    paper = "paper"
    paper_external = "paper-external"
    standard = "standard"


class Inference(str, Enum):
    """--inference: run a checkpoint the paper's way, or in the input mode its file records."""

    paper = "paper"
    model = "model"


class Polarity(str, Enum):
    """--pred-polarity / --gt-polarity: what white means in the maps or masks given."""

    in_focus = "in-focus"
    blur = "blur"


def folder_label(masks: Path) -> str:
    """A dataset label for a folder of masks: the folder's name, or its parent's when the name only says masks
    (``data/CUHK/masks`` -> ``CUHK``)."""
    folder = masks.resolve()
    generic = {"masks", "mask", "gt", "groundtruth", "ground_truth", "labels"}
    return folder.parent.name if folder.name.lower() in generic and folder.parent.name else folder.name


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command."""

    @app.command("evaluate")
    def evaluate_cmd(
        pred: Optional[List[Path]] = typer.Option(None, "--pred", help="Folder of prediction maps (repeat for "
                                                  "several methods)."),
        gt: Optional[Path] = typer.Option(None, "--gt", help="Folder of masks (maps mode; with --model and "
                                          "--images: a local dataset)."),
        list_file: Optional[Path] = typer.Option(None, "--list", help="Stems to score, one per line."),
        pred_suffix: str = typer.Option("", "--pred-suffix", help="End of the map file stems to drop before "
                                        "pairing (e.g. _prob for 'defocus predict' outputs)."),
        label: Optional[List[str]] = typer.Option(None, "--label", help="Method label per --pred / for --model."),
        protocol: ProtocolName = typer.Option(ProtocolName.paper, "--protocol", help="Evaluation protocol."),
        pred_polarity: Polarity = typer.Option(Polarity.in_focus, "--pred-polarity",
                                               help="What white means in the maps."),
        gt_polarity: Polarity = typer.Option(Polarity.in_focus, "--gt-polarity",
                                             help="What white means in the masks."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
        curves: Optional[Path] = typer.Option(None, "--curves", help="Write PR / F-threshold curves (.json/.csv)."),
        plot: Optional[Path] = typer.Option(None, "--plot", help="Save a PR + F-threshold figure (.png/.svg)."),
        skip_missing: bool = typer.Option(False, "--skip-missing", help="Skip (and report) missing or unreadable "
                                          "files instead of failing."),
        model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint to run, or 'default' (the bundled "
                                           "model) (model mode)."),
        dataset: Optional[List[str]] = typer.Option(None, "--dataset", help="Registry dataset (repeatable); in "
                                                    "maps mode, the dataset's label; with --images, a first name "
                                                    "that is no registry dataset labels that folder."),
        root: Optional[Path] = typer.Option(None, "--root", help="Data root of the registry datasets."),
        images: Optional[Path] = typer.Option(None, "--images", help="Folder of images paired with --gt masks "
                                              "(model mode)."),
        inference: Inference = typer.Option(Inference.paper, "--inference", help="Model mode: paper (the "
                                            "paper's 320x320 squash) or model (the model's own input, as "
                                            "'defocus predict' runs it; the bundled model: 512, small photos "
                                            "not enlarged)."),
        refine: bool = typer.Option(False, "--refine", help="Model mode with --inference model: refine each map "
                                    "along its image's colour edges, as 'defocus predict --refine' does."),
        size: Optional[int] = typer.Option(None, "--size", min=1, help="Model mode: input size (default: 320 "
                                           "with --inference paper, the model's own with --inference model)."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, "
                                   "mps ..."),
        drop_mismatched: bool = typer.Option(False, "--drop-mismatched", help="Leave out images whose size "
                                             "differs from their mask's (the reference's behaviour)."),
        ignore: Optional[Path] = typer.Option(None, "--ignore", help="Folder of ignore masks paired by stem "
                                              "(white = undetermined pixels, left out; standard protocol)."),
        markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write the results table (Markdown)."),
        csv: Optional[Path] = typer.Option(None, "--csv", help="Write the results table (CSV)."),
        per_image: Optional[Path] = typer.Option(None, "--per-image", help="Write every image's scores (CSV: "
                                                 "method, dataset, stem, MAE, Fβ, precision, recall, IoU, ...)."),
        bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Resamples of the images for confidence "
                                      "intervals of every number and of each method's difference to the "
                                      "reference (e.g. 2000; 0 = none)."),
        confidence: float = typer.Option(0.95, "--confidence", min=0.5, max=0.999,
                                         help="Level of the bootstrap intervals."),
        reference: Optional[str] = typer.Option(None, "--reference", help="Label of the method the others are "
                                                "compared with (default: the first)."),
        require: Optional[List[str]] = typer.Option(None, "--require", help="A number the results must reach, "
                                                    "[DATASET:]METRIC<=VALUE or >= (e.g. 'mae<=0.08', "
                                                    "'iou>=0.92'; repeatable): each is checked on every method "
                                                    "and dataset, exit status 3 if one is not met."),
    ):
        """Score prediction maps against masks, or run a checkpoint on datasets (MAE / F-beta / IoU)."""
        from ..acceptance import check_requirements, needs_curves, parse_requirement
        from ..atomic import write_bytes_atomic
        from ..data.registry import is_registered
        from ..evaluation import EvaluationInputError, FolderDataset, evaluate, write_curves

        try:
            requirements = [parse_requirement(r) for r in require or []]
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--require")
        want_curves = curves is not None or plot is not None or needs_curves(requirements)
        labels = list(label or [])
        if len(set(labels)) < len(labels):
            raise typer.BadParameter("give each method its own --label", param_hint="--label")
        if reference is not None and not bootstrap:
            raise typer.BadParameter("--reference chooses the method the bootstrap compares with: add --bootstrap N",
                                     param_hint="--reference")
        if plot is not None and plot.suffix.lower() not in PLOT_SUFFIXES:
            raise typer.BadParameter(f"the figure's format follows its suffix: one of {', '.join(PLOT_SUFFIXES)}",
                                     param_hint="--plot")
        if plot is not None and importlib.util.find_spec("matplotlib") is None:
            typer.echo("error: --plot needs matplotlib, which is not installed: pip install 'defocus[viz]'", err=True)
            raise typer.Exit(2)
        try:
            if (model is None) == (not pred):
                raise typer.BadParameter("give --pred (maps mode) or --model (model mode)")
            if model is None:
                if gt is None:
                    raise typer.BadParameter("--pred needs --gt")
                if size is not None or inference is not Inference.paper or refine:
                    raise typer.BadParameter("--inference, --size and --refine apply to model mode (--model)")
                if drop_mismatched:
                    raise typer.BadParameter("--drop-mismatched applies to model mode (--model); in maps mode a "
                                             "map of another size than its mask is resized, and reported")
                if dataset and len(dataset) > 1:
                    raise typer.BadParameter("maps mode takes at most one --dataset (a label)")
                if labels and len(labels) != len(pred):
                    raise typer.BadParameter("give one --label per --pred")
                table = evaluate(pred=list(pred), gt=gt, list_file=list_file, protocol=protocol.value,
                                 pred_polarity=pred_polarity.value, gt_polarity=gt_polarity.value,
                                 skip_missing=skip_missing, curves=want_curves,
                                 dataset=dataset[0] if dataset else None, method=labels or None,
                                 pred_suffix=pred_suffix, ignore_dir=ignore)
            else:
                if pred_suffix or pred_polarity is not Polarity.in_focus:
                    raise typer.BadParameter("--pred-suffix and --pred-polarity apply to maps mode (--pred)")
                if refine and inference is not Inference.model:
                    raise typer.BadParameter("--refine goes with --inference model (the map as defocus predict "
                                             "makes it)")
                sets = list(dataset or [])
                if images is not None:
                    if gt is None:
                        raise typer.BadParameter("--images needs --gt")
                    name = sets.pop(0) if sets and not is_registered(sets[0]) else folder_label(gt)
                    sets = [FolderDataset(name, images, gt, gt_polarity.value, ignore)] + sets
                elif gt is not None or ignore is not None or gt_polarity is not Polarity.in_focus:
                    raise typer.BadParameter("--gt, --ignore and --gt-polarity describe a local dataset: give "
                                             "its images with --images (a registry dataset knows its masks)")
                if not sets:
                    raise typer.BadParameter("--model needs --dataset NAME (with --root) or --images and --gt")
                table = evaluate(model=model, datasets=sets, root=root, protocol=protocol.value, device=device,
                                 skip_missing=skip_missing, curves=want_curves, drop_mismatched=drop_mismatched,
                                 method=labels[0] if labels else None, size=size, inference=inference.value,
                                 refine=refine, list_file=list_file)
            intervals = []
            if bootstrap:
                from ..bootstrap import bootstrap_table

                intervals = bootstrap_table(table, reference=reference, n_resamples=bootstrap, level=confidence)
        except (EvaluationInputError, FileNotFoundError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        try:  # a requirement naming no dataset of the results: said after the results, not instead of them
            verdicts, requirement_error = check_requirements(table, requirements), None
        except ValueError as e:
            verdicts, requirement_error = [], e

        single = len(table) == 1
        text = table[0].to_markdown() if single else table.to_markdown()
        if intervals:
            from ..bootstrap import bootstrap_markdown

            text += "\n" + bootstrap_markdown(intervals)
        if as_json:
            obj = table[0].to_dict() if single else table.to_dict(images=True)
            if intervals:
                obj["bootstrap"] = [r.to_dict() for r in intervals]
            if verdicts:
                obj["requirements"] = [v.to_dict() for v in verdicts]
            typer.echo(json.dumps(obj, indent=2))
        else:
            typer.echo(text)
        try:
            if curves is not None:
                write_curves(table, curves)
            if plot is not None:
                from ..evaluation import curves_of
                from ..plots import plot_curves

                plot.parent.mkdir(parents=True, exist_ok=True)
                plot_curves(curves_of(table.reports), plot, title=f"protocol: {protocol.value}")
            for path, content in ((markdown, text), (csv, table.to_csv()), (per_image, table.images_to_csv())):
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_bytes_atomic(content.encode("utf-8"), path)
        except (OSError, ImportError) as e:
            typer.echo(f"error: cannot write the results ({e})", err=True)
            raise typer.Exit(1)
        if requirement_error is not None:
            typer.echo(f"error: {requirement_error}", err=True)
            raise typer.Exit(1)
        if any(r.skipped for r in table):
            typer.echo(f"warning: {sum(len(r.skipped) for r in table)} image(s) skipped (listed in the report)",
                       err=True)
        empty = [" on ".join(x for x in (r.method, r.dataset) if x) or "the dataset" for r in table if r.n == 0]
        if empty:
            typer.echo(f"error: no image was scored for {', '.join(empty)}", err=True)
            raise typer.Exit(1)
        if verdicts:
            for v in verdicts:
                typer.echo(v.to_line(), err=as_json)
            failed = sum(not v.met for v in verdicts)
            typer.echo(f"requirements: {len(verdicts) - failed} of {len(verdicts)} met", err=as_json)
            if failed:
                raise typer.Exit(3)
