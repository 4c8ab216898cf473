"""Batch prediction on a Ray cluster: the same :class:`~defocus.inference.Predictor` over millions of photos.

:func:`predict_dataset` turns the inputs (a folder, a glob, a ``.txt`` list, object-storage URIs, or a
``ray.data.Dataset`` of paths, file bytes or decoded images) into a Ray Data pipeline: Ray Data reads what lives
on object storage, then ``map_batches`` runs a pool of actors, each holding one Predictor (the model is loaded
once per actor, on a CPU or a GPU). An actor decodes its batch in the Predictor's thread pool while the network
runs, and writes each image's maps atomically in a second thread pool, exactly as ``defocus predict`` does. The
driver collects one small row per image into the Parquet table of :mod:`defocus.prediction_table`.

A rerun over the same input and output folder is a resume: images with a successful row in the table for the
output name they get now are skipped, and so are images whose output files are all present and that no row gives
to another image (their row is rebuilt from the mask); a job killed half way loses at most the images it was
working on. Training's multi-GPU helpers are elsewhere
(:mod:`defocus.engine.distributed`); this module needs the ``ray`` extra (``pip install "defocus[ray]"``).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from . import imageio, prediction_table
from .inference.batch import outputs_done, plan_batch, sigterm_interrupts, write_entry
from .inference.result import SAVE_CHOICES, check_save, expected_outputs

log = logging.getLogger(__name__)

#: Rows handed to an actor per call: large enough to keep the network's batches full, small enough that
#: a killed actor loses little work.
DEFAULT_RAY_BATCH_SIZE = 32
#: The driver appends collected rows to the table at least this often (rows / seconds).
DEFAULT_FLUSH_ROWS = 1000
DEFAULT_FLUSH_SECONDS = 30.0


class RayNotInstalledError(ImportError):
    """Ray (or pyarrow) is not installed: ``pip install "defocus[ray]"``."""


def import_ray():
    """Import and return ``ray`` with Ray Data, or raise :class:`RayNotInstalledError` with the install line."""
    try:
        import ray
        import ray.data  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as e:
        raise RayNotInstalledError(f"Ray Data is not installed ({e.name or e}): pip install \"defocus[ray]\"") \
            from None
    return ray


@dataclass
class DatasetSummary:
    """What a :func:`predict_dataset` run did."""

    out_dir: Path
    table: Path | None     #: the Parquet table (all runs into this folder, one row per input path); None: no row yet
    model: str             #: the model, as recorded in the table's ``model`` column
    processed: int         #: inputs this run predicted or found unusable
    failed: int            #: of which failed
    skipped: int           #: inputs an earlier run had done (found in the table, or by their output files)
    seconds: float
    outputs_named: tuple = ()  #: inputs not taken: files that are outputs of ``defocus predict``

    def to_dict(self) -> dict:
        """A JSON-serialisable form."""
        return {"out_dir": str(self.out_dir), "table": None if self.table is None else str(self.table),
                "model": self.model,
                "processed": self.processed, "failed": self.failed, "skipped": self.skipped,
                "seconds": round(self.seconds, 3), "outputs_named": [str(p) for p in self.outputs_named]}


# ------------------------------------------------------------------------------------------ output naming


def _strip_scheme(path: str) -> str:
    return path.split("://", 1)[1] if "://" in path else path


def relative_stem(path: str, roots) -> str:
    """Output stem of a URI or dataset row's ``path``: its location below the longest matching root (a folder
    or URI prefix; schemes are ignored) without the suffix (``s3://b/photos/2024/a.jpg`` under ``s3://b/photos``
    -> ``2024/a``), else the file name's stem. Local inputs get theirs from the batch plan of
    ``defocus predict``."""
    p = _strip_scheme(str(path)).replace(os.sep, "/")
    for root in sorted((_strip_scheme(str(r)).replace(os.sep, "/").rstrip("/") for r in roots), key=len,
                       reverse=True):
        if root and p.startswith(root + "/"):
            rel = p[len(root) + 1:]
            stem, dot, suffix = rel.rpartition(".")
            return stem if dot and stem and "/" not in suffix else rel
    return Path(p).stem or "image"


def _inside(stem: str) -> bool:
    """Whether output stem ``stem`` names files inside the output folder."""
    parts = Path(stem).parts
    return bool(stem) and not Path(stem).is_absolute() and ".." not in parts and bool(Path(stem).name)


# ------------------------------------------------------------------------------------------- the actors


#: What an actor did with a row (its ``status`` column, dropped from the table): predicted it, found it in the
#: table (the row is dropped), found its outputs on disk (the row is rebuilt from them), or found it is itself an
#: output of this tool (read back by a URI listing of a folder that holds the outputs: not taken, row dropped).
PREDICTED, IN_TABLE, FROM_FILES, AN_OUTPUT = "predicted", "in-table", "from-files", "an-output"


def _row(path, stem, model, width=None, height=None, fraction=None, error=None, seconds=0.0, status=PREDICTED):
    return {"path": str(path), "output": stem, "width": width, "height": height, "in_focus_fraction": fraction,
            "model": model, "error": error, "seconds": seconds, "status": status}


def _row_from_files(out_dir: Path, stem: str, save, path, model) -> dict | None:
    """The row of an image whose outputs (including the mask, which gives the exact in-focus fraction) were
    all written by an earlier run from this input (the mask records its input), else ``None``."""
    if "mask" not in save or not outputs_done(out_dir, stem, save):
        return None
    mask_path = expected_outputs(out_dir, stem, ("mask",))["mask"]
    if not imageio.is_tagged_output(mask_path):
        return None
    try:
        with Image.open(mask_path) as im:
            recorded = im.info.get(imageio.OUTPUT_SOURCE_TAG)
            mask = np.asarray(im.convert("L")) > 127
    except Exception:  # an unreadable mask: predict again
        return None
    if recorded is not None and recorded != imageio.source_id(path):  # left behind by another input
        return None
    return _row(path, stem, model, mask.shape[1], mask.shape[0], round(float(mask.mean()), 6), status=FROM_FILES)


def _taken_by_other_file(targets: dict[str, Path]) -> Path | None:
    for p in targets.values():
        if os.path.lexists(p) and not imageio.is_tagged_output(p):
            return p
    return None


def _column(batch: dict, name: str):
    col = batch.get(name)
    return None if col is None else list(col)


class PredictBatch:
    """A Ray Data actor: holds one Predictor and turns a batch of rows (``path``; optional ``output``,
    ``bytes`` or ``image``) into table rows, writing each image's maps into ``out_dir``. ``done``: the output
    stems an earlier run's table records, each with the path that wrote them (a dict, or a Ray object reference
    to one): an input is skipped when it wrote its own stem, and predicted again when another input did."""

    def __init__(self, predictor_options: dict, out_dir: str, save: tuple, model: str, roots: tuple = (),
                 done=None, resume: bool = True):
        from .inference import Predictor

        self.predictor = Predictor(**predictor_options)
        self.out_dir, self.save, self.model = Path(out_dir), tuple(save), model
        if done is not None and not isinstance(done, dict):  # a Ray object reference to the dict
            import ray

            done = ray.get(done)
        self.roots, self.done, self.resume = tuple(roots), done or {}, resume
        self.writer = ThreadPoolExecutor(self.predictor.workers, thread_name_prefix="defocus-write")

    def __call__(self, batch: dict) -> dict:
        """Predict and write one batch; returns its table rows (plus a ``status`` column) as an Arrow table."""
        paths = [str(p) for p in batch["path"]]
        given = _column(batch, "output") or [None] * len(paths)
        stems = [str(s) if s else relative_stem(p, self.roots) for p, s in zip(paths, given)]
        data, images = _column(batch, "bytes"), _column(batch, "image")
        rows, todo = [], []
        for i, (path, stem) in enumerate(zip(paths, stems)):
            if data is not None and imageio.is_output_file(path.rsplit("/", 1)[-1], BytesIO(bytes(data[i]))):
                rows.append(_row(path, stem, self.model, status=AN_OUTPUT))
                continue
            if not _inside(stem):
                rows.append(_row(path, stem, self.model, error=f"output name {stem!r} leaves the output folder"))
                continue
            targets = expected_outputs(self.out_dir, stem, self.save)
            writer = self.done.get(stem)
            if writer == path:
                rows.append(_row(path, stem, self.model, status=IN_TABLE))
                continue
            if self.resume and writer is None and \
                    (row := _row_from_files(self.out_dir, stem, self.save, path, self.model)) is not None:
                rows.append(row)
                continue
            other = _taken_by_other_file(targets)
            if other is not None:
                rows.append(_row(path, stem, self.model, error=f"output {other} exists and was not written by "
                                                                 "defocus: not overwritten"))
                continue
            source, reason = (_open_bytes(data[i]) if data is not None else
                              (np.asarray(images[i]), None) if images is not None else (path, None))
            if reason is not None:
                rows.append(_row(path, stem, self.model, error=reason))
                continue
            todo.append((path, stem, source))
        rows.extend(self._predict_and_write(todo))
        table = prediction_table.rows_to_table(rows)
        return table.append_column("status", _string_array([r["status"] for r in rows]))

    def _predict_and_write(self, todo: list) -> list[dict]:
        rows, pending = [], []
        results = self.predictor.predict_many([t[2] for t in todo], on_error="return",
                                              keep_images="overlay" in self.save)
        for (path, stem, _), res in zip(todo, results):
            if not res.ok:
                rows.append(_row(path, stem, self.model, error=res.error, seconds=res.seconds))
                continue
            res.source_tag = path  # the maps record their input, so that a rerun never gives them to another
            pending.append((path, stem, self.writer.submit(write_entry, res, self.out_dir, stem, self.save)))
            while len(pending) > self.predictor.workers:  # bounded: each pending image holds full-size maps
                rows.append(self._finish(*pending.pop(0)))
        rows.extend(self._finish(*p) for p in pending)
        return rows

    def _finish(self, path, stem, fut) -> dict:
        e = fut.result()  # write_entry returns a write failure as the entry's error
        return _row(path, stem, self.model, e.get("width"), e.get("height"), e.get("in_focus_fraction"),
                    e.get("error"), e.get("seconds", 0.0))


def _string_array(values):
    """An Arrow string array."""
    import pyarrow as pa

    return pa.array(values, pa.string())


def _open_bytes(data) -> tuple[Image.Image | None, str | None]:
    """``(image, None)``: a file's bytes opened lazily (the Predictor checks the size before decoding), or
    ``(None, reason)`` when they cannot be opened."""
    if data is None or len(data) == 0:
        return None, "empty file (0 bytes)"
    try:
        return imageio.open_pil(BytesIO(bytes(data))), None
    except Image.DecompressionBombError as e:
        return None, f"image too large ({e})"
    except ValueError as e:
        return None, str(e)
    except OSError as e:  # as a file read by path reports it (a truncated header ...)
        return None, f"cannot open: {e}"
    except Exception:
        return None, "not an image, or a format Pillow cannot read"


# ------------------------------------------------------------------------------------------------ inputs


@dataclass
class _Inputs:
    dataset: object           # ray.data.Dataset of rows: path [, output, bytes, image]
    count: int | None         # rows, when known before running
    roots: tuple = ()
    errors: tuple = ()        # (input, reason) of inputs that named nothing usable
    skipped: int = 0          # inputs finished before, already dropped on the driver (local inputs)
    outputs_named: tuple = ()  # local inputs that are outputs of defocus predict (never predicted)


def _is_uri(x) -> bool:
    return isinstance(x, str) and "://" in x


def _make_inputs(ray, inputs, out_dir: Path, save, recursive: bool, roots, done: dict, batch_size: int) -> _Inputs:
    if isinstance(inputs, ray.data.Dataset):
        return _dataset_inputs(inputs, roots)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ValueError("no inputs given")
    uris = [str(i) for i in items if _is_uri(i)]
    if uris and len(uris) != len(items):
        raise ValueError("give either local paths or URIs (scheme://...), not both")
    if uris:
        return _uri_inputs(ray, uris, roots)
    return _local_inputs(ray, items, out_dir, save, recursive, done, batch_size)


def _local_inputs(ray, items, out_dir: Path, save, recursive: bool, done: dict, batch_size: int) -> _Inputs:
    """Files listed on the driver with the output stems ``defocus predict`` gives them (a folder's layout kept,
    repeated names made unique, inputs and foreign files never overwritten); finished ones dropped."""
    plan = plan_batch(items, out_dir, save, recursive=recursive, writes_summary=False)
    jobs = [(os.path.abspath(job.path), job.stem) for job in plan.jobs]
    rows = [{"path": path, "output": stem} for path, stem in jobs if done.get(stem) != path]
    blocks = max(1, min(len(rows), -(-len(rows) // batch_size)))
    ds = ray.data.from_items(rows, override_num_blocks=blocks) if rows else None
    return _Inputs(ds, len(rows), (), tuple(plan.errors), skipped=len(jobs) - len(rows),
                   outputs_named=tuple(plan.outputs_named))


def _uri_inputs(ray, uris: list[str], roots) -> _Inputs:
    exts = sorted(s.lstrip(".") for s in imageio.IMAGE_SUFFIXES)
    exts += [e.upper() for e in exts]
    ds = ray.data.read_binary_files(uris, include_paths=True, file_extensions=exts)
    return _Inputs(ds, None, tuple(roots or uris))


def _dataset_inputs(ds, roots) -> _Inputs:
    names = set(ds.schema().names)
    if "path" not in names:
        raise ValueError("the dataset needs a 'path' column (it names the outputs and the table rows); "
                         "e.g. ray.data.read_images(..., include_paths=True)")
    keep = [c for c in ("path", "output", "bytes", "image") if c in names]
    return _Inputs(ds.select_columns(keep), None, tuple(roots or ()))


# ------------------------------------------------------------------------------------------------ driver


class _RowCollector:
    """The driver's side: counts the rows coming back from the actors, reports failures, and appends the rows
    to the table in parts (every ``flush_rows`` rows or ``flush_seconds``)."""

    def __init__(self, out_dir: Path, report: Callable[[str, str], None], flush_rows: int, flush_seconds: float):
        self.out_dir, self.report = out_dir, report
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.processed = self.failed = self.skipped = 0
        self.outputs_named: list[str] = []  # inputs read back that are outputs of this tool (not taken)
        self.buffer: list = []
        self.last_flush = time.monotonic()

    def add_listing_errors(self, errors, model: str):
        """Rows for inputs that named nothing usable (a missing file, an empty folder)."""
        if errors:  # local paths as absolute paths, as the other rows of local files
            rows = [_row(item if _is_uri(item) else os.path.abspath(item), None, model, error=reason)
                    for item, reason in errors]
            for row in rows:
                self.report(row["path"], row["error"])
            self.processed += len(rows)
            self.failed += len(rows)
            self.buffer.append(prediction_table.rows_to_table(rows))

    def add(self, table):
        """One batch of rows from an actor (with its ``status`` column)."""
        import pyarrow as pa

        status = table.column("status").to_pylist()
        self.skipped += sum(s in (IN_TABLE, FROM_FILES) for s in status)
        self.processed += status.count(PREDICTED)
        paths = table.column("path").to_pylist()
        self.outputs_named += [p for p, s in zip(paths, status) if s == AN_OUTPUT]
        kept = table.filter(pa.array([s not in (IN_TABLE, AN_OUTPUT) for s in status])).drop_columns(["status"])
        for path, err in zip(kept.column("path").to_pylist(), kept.column("error").to_pylist()):
            if err is not None:
                self.failed += 1
                self.report(path, err)
        if kept.num_rows:
            self.buffer.append(kept)
        if sum(t.num_rows for t in self.buffer) >= self.flush_rows or \
                time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self):
        """Append the buffered rows to the table."""
        import pyarrow as pa

        if self.buffer:
            prediction_table.write_part(pa.concat_tables(self.buffer), self.out_dir)
        self.buffer, self.last_flush = [], time.monotonic()


def _connect(ray, address: str | None) -> bool:
    """Connect to (or start) Ray; returns whether this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    if address in (None, "", "local"):
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    return True


def predict_dataset(inputs, out_dir="outputs", *, model="default", save=SAVE_CHOICES, recursive: bool = False,
                    roots=None, address: str | None = None, concurrency: int = 1,
                    ray_batch_size: int = DEFAULT_RAY_BATCH_SIZE, num_cpus: float = 1.0, num_gpus: float = 0.0,
                    resume: bool = True, progress: bool = True,
                    on_error: Callable[[str, str], None] | None = None, flush_rows: int = DEFAULT_FLUSH_ROWS,
                    flush_seconds: float = DEFAULT_FLUSH_SECONDS, **predictor_options) -> DatasetSummary:
    """Predict every input on Ray and write the same per-image files as ``defocus predict`` plus a Parquet table.

    Args:
        inputs: image files, folders (``recursive`` for sub-folders), globs, ``.txt`` lists (all listed on the
            driver, so they must be readable there and, at the same path, on every node); object-storage or other
            ``scheme://`` URIs of files or folders (read by Ray Data's file systems); or a ``ray.data.Dataset``
            with a ``path`` column and optionally ``output`` (the output stem), ``bytes`` (the file's bytes) or
            ``image`` (an HxWx3 array, as from ``ray.data.read_images(..., include_paths=True)``).
        out_dir: output folder (local or a shared file system every node can write): the maps and
            ``predictions.parquet`` (columns: path, output, width, height, in_focus_fraction, model, error,
            seconds). Outputs keep the inputs' sub-folder layout below each given folder / URI / ``roots``.
        model, **predictor_options: the :class:`~defocus.inference.Predictor` each actor builds (``size``,
            ``keep_aspect``, ``threshold``, ``batch_size`` of the network, ``device``, ``backend``, ...).
        save: any of ``prob``, ``mask``, ``overlay``.
        roots: folders / URI prefixes that output stems are relative to (for dataset inputs).
        address: the Ray cluster (``"auto"``, ``"ray://head:10001"``, ``"host:6379"``); ``None`` or ``"local"``
            starts a local instance unless ``RAY_ADDRESS`` is set or Ray is already initialised.
        concurrency: number of actors; ``num_cpus`` / ``num_gpus``: resources of each (``num_gpus > 0``: GPU
            actors, the Predictor runs on CUDA). ``ray_batch_size``: rows per actor call (the network's own batch
            is the Predictor's ``batch_size``).
        resume: skip inputs done by an earlier run into ``out_dir`` (by the table, or by their files).
        on_error: called on the driver as ``on_error(path, reason)`` for every failed input (default: logged).
        flush_rows, flush_seconds: how often collected rows are appended to the table.

    Bad inputs become rows with an error; the job goes on. Returns a :class:`DatasetSummary`.
    """
    ray = import_ray()
    from tqdm import tqdm

    from .inference import Predictor

    t_start = time.perf_counter()
    save = check_save(save)
    if concurrency < 1 or ray_batch_size < 1:
        raise ValueError("concurrency and ray_batch_size must be at least 1")
    report = on_error or (lambda path, reason: log.error("%s: %s", path, reason))
    out_dir = imageio.check_writable_dir(out_dir)
    options = {"model": model, **predictor_options}
    classical = options.get("method") is not None
    if num_gpus > 0 and options.get("device", "auto") in ("auto", "cpu") and not classical:
        options["device"] = "cuda"
    elif num_gpus <= 0 and options.get("device", "auto") == "auto":
        options["device"] = "cpu"
    # one Predictor on the driver checks the model and settings before any cluster work and names the model (a
    # network's run options on the CPU, where the driver may have no GPU; a classical method's as given, which
    # refuses those that apply to networks)
    probe = Predictor(**(options if classical else {**options, "device": "cpu", "precision": "fp32",
                                                    "compile": False}))
    model_name = str(probe.info)
    del probe
    done = prediction_table.done_outputs(out_dir) if resume else {}

    started = _connect(ray, address)
    data_context = ray.data.DataContext.get_current()
    bars, data_context.enable_progress_bars = data_context.enable_progress_bars, False  # ours: one tqdm bar
    rows = _RowCollector(out_dir, report, flush_rows, flush_seconds)
    try:
        # after Ray's start, which installs its own SIGTERM handler: SIGTERM stops the run as Ctrl-C does
        with sigterm_interrupts():
            if started and num_gpus > 0 and ray.cluster_resources().get("GPU", 0) < num_gpus:
                raise ValueError(f"each actor asks for {num_gpus:g} GPU(s) and the local Ray instance has "
                                 f"{ray.cluster_resources().get('GPU', 0):g}: use num_gpus=0 (--ray-gpus 0) or a "
                                 f"cluster with GPUs")
            src = _make_inputs(ray, inputs, out_dir, save, recursive, roots, done, ray_batch_size)
            rows.add_listing_errors(src.errors, model_name)
            rows.skipped += src.skipped
            if src.dataset is not None:
                ds = src.dataset.map_batches(
                    PredictBatch, batch_size=ray_batch_size, batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=num_cpus, num_gpus=num_gpus,
                    fn_constructor_kwargs={"predictor_options": options, "out_dir": str(out_dir), "save": save,
                                           "model": model_name, "roots": src.roots, "resume": resume,
                                           "done": ray.put(done) if done else None})
                with tqdm(total=src.count, unit="img", disable=not progress, dynamic_ncols=True) as bar:
                    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                        rows.add(table)
                        bar.update(table.num_rows)
    finally:
        rows.flush()
        table_path = prediction_table.compact_table(out_dir)
        table_path = table_path if table_path.exists() else None
        data_context.enable_progress_bars = bars
        if started:
            ray.shutdown()
    return DatasetSummary(out_dir, table_path, model_name, rows.processed, rows.failed, rows.skipped,
                          time.perf_counter() - t_start, tuple(src.outputs_named) + tuple(rows.outputs_named))
