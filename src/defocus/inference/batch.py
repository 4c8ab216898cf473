"""The batch runner: inputs (files, folders, globs, lists) -> output files on disk + ``summary.json``.

Shared by ``defocus predict``, servers and distributed workers, in two halves:

* :func:`plan_batch` checks everything that needs no model (the outputs chosen, the output folder writable,
  the inputs resolved to image files, each file's output stem, the images already done) and is fast;
* :func:`run_batch` predicts and writes what the plan lists and writes ``summary.json`` - also when it is
  interrupted (``KeyboardInterrupt``, or :class:`BatchInterrupted` from a signal), which it then re-raises.

The per-image pieces are public for callers that distribute the work themselves: :func:`output_stem`,
:func:`~defocus.inference.result.expected_outputs`, :func:`outputs_done`, :func:`write_entry` (one image's files
+ its summary entry), :func:`make_summary` and :func:`write_summary`.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import imageio
from .result import PNG_COMPRESS_LEVEL, SAVE_CHOICES, FailedPrediction, Prediction, check_save, expected_outputs

log = logging.getLogger(__name__)

#: ``on_error(path, reason)``: how a batch reports each failure.
ErrorReporter = Callable[[str, str], None]


class BatchInterrupted(KeyboardInterrupt):
    """A batch stopped by a signal (``signum``: e.g. ``signal.SIGTERM``); see :func:`raise_interrupt`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupt(signum, frame=None):
    """A signal handler that stops a batch as Ctrl-C does: ``signal.signal(signal.SIGTERM, raise_interrupt)``."""
    raise BatchInterrupted(signum)


@contextmanager
def sigterm_interrupts():
    """Within this block (in the main thread), SIGTERM stops a batch as Ctrl-C does (:class:`BatchInterrupted`),
    so that :func:`run_batch` writes its summary; elsewhere it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:  # None: a handler set outside Python (Ray's), which Python cannot put back
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def interrupt_signal(e: KeyboardInterrupt) -> int:
    """The signal number behind an interruption (``SIGINT`` for a plain ``KeyboardInterrupt``)."""
    return getattr(e, "signum", signal.SIGINT)


# ------------------------------------------------------------------------------------------- per image


def output_stem(path, root=None) -> str:
    """The output stem of ``path``: its path relative to ``root`` without the suffix, with ``/`` between
    sub-folders (``root/a/b/x.jpg`` -> ``a/b/x``), so that a folder's layout is kept under the output folder;
    the file's stem alone when ``root`` is ``None`` or does not contain ``path``."""
    path = Path(path)
    stem = path.stem or "image"
    if root is None:
        return stem
    try:
        parent = path.parent.relative_to(Path(root))
    except ValueError:
        return stem
    return (parent / stem).as_posix() if parent.parts else stem


def outputs_done(out_dir, stem: str, save=SAVE_CHOICES) -> bool:
    """Whether every chosen output of ``stem`` exists (outputs are written atomically: one that exists is
    complete)."""
    return all(p.is_file() for p in expected_outputs(out_dir, stem, save).values())


def relative_outputs(written: dict[str, Path], out_dir) -> dict[str, str]:
    """``{kind: path relative to out_dir}`` (``/``-separated) of written outputs."""
    return {k: Path(p).relative_to(out_dir).as_posix() for k, p in written.items()}


def write_entry(pred: Prediction, out_dir, stem: str, save=SAVE_CHOICES,
                png_compress_level: int = PNG_COMPRESS_LEVEL) -> dict:
    """Write ``pred``'s outputs under ``out_dir`` as ``stem`` (atomically) and return its summary entry
    (``path``, ``output``, ``outputs``, size, in-focus fraction, seconds including the writing, ``error``).
    A write failure is returned as the entry's error, not raised."""
    t0 = time.perf_counter()
    entry = {"path": pred.source, "output": stem}
    try:
        written = pred.save(out_dir, save, stem=stem, png_compress_level=png_compress_level)
    except Exception as e:  # a full disk, a vanished folder ...: this image's failure
        entry.update(FailedPrediction(pred.source, f"cannot write outputs ({e})").to_dict(), outputs={})
        return entry
    pred.seconds += time.perf_counter() - t0
    entry.update({k: v for k, v in pred.to_dict().items() if k != "path"})
    entry["outputs"] = relative_outputs(written, out_dir)
    return entry


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Job:
    """One image file and the stem its outputs are written under."""

    path: Path
    stem: str


@dataclass
class BatchPlan:
    """What a batch will do: ``jobs`` to predict, ``skipped`` ones whose outputs exist, ``errors`` (inputs
    that named nothing usable, as ``(input, reason)``) and ``outputs_named`` (this tool's own outputs among the
    inputs, not taken)."""

    out_dir: Path
    save: tuple[str, ...]
    jobs: list[Job] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    outputs_named: list[Path] = field(default_factory=list)


def folder_roots(inputs, files) -> list[Path | None]:
    """For each file, the first folder among ``inputs`` that contains it (its layout root), else ``None``."""
    roots = [p for p in (Path(str(i)).expanduser() for i in inputs) if p.is_dir()]
    found = []
    for f in files:
        found.append(next((r for r in roots if Path(f).is_relative_to(r)), None))
    return found


def unique_stems(files, roots, out_dir) -> list[str]:
    """A unique output stem per file (see :func:`output_stem`); within each output sub-folder, repeated stems
    get ``-2``, ``-3``, ... and no output replaces an input or a file this tool did not write (see
    :func:`defocus.imageio.output_stems`)."""
    out_dir = Path(out_dir)
    stems = [output_stem(f, r) for f, r in zip(files, roots)]
    groups: dict[str, list[int]] = {}
    for i, stem in enumerate(stems):
        groups.setdefault(stem.rpartition("/")[0].casefold(), []).append(i)
    for indices in groups.values():
        sub = stems[indices[0]].rpartition("/")[0]
        avoid = [out_dir / imageio.SUMMARY_NAME] if not sub else []
        names = imageio.output_stems([files[i] for i in indices], out_dir / sub, avoid=avoid)
        for i, name in zip(indices, names):
            stems[i] = f"{sub}/{name}" if sub else name
    return stems


def plan_batch(inputs, out_dir="outputs", save=SAVE_CHOICES, recursive: bool = False,
               skip_existing: bool = False, writes_summary: bool = True) -> BatchPlan:
    """Check and plan a batch without any model: ``ValueError`` for an unknown output in ``save`` or (when the
    batch ``writes_summary``) a ``summary.json`` in ``out_dir`` that no batch wrote, ``OSError`` when
    ``out_dir`` cannot be written; inputs are expanded (see :func:`defocus.imageio.collect_inputs`), a
    folder's sub-folder layout is kept under ``out_dir``, and with ``skip_existing`` the images whose outputs
    all exist are skipped - unless the earlier ``summary.json`` says those outputs are another file's."""
    save = check_save(save)
    out_dir = imageio.check_writable_dir(out_dir)
    if writes_summary:
        check_summary_is_ours(out_dir)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found = imageio.collect_inputs(inputs, recursive=recursive)
    plan = BatchPlan(out_dir, save, errors=list(found.errors), outputs_named=list(found.outputs))
    stems = unique_stems(found.files, folder_roots(inputs, found.files), out_dir)
    earlier = previous_entries(out_dir) if skip_existing else {}
    for path, stem in zip(found.files, stems):
        job = Job(path, stem)
        done_before = stem not in earlier or same_file(earlier[stem]["path"], path)
        if skip_existing and done_before and outputs_done(out_dir, stem, save):
            plan.skipped.append(job)
        else:
            plan.jobs.append(job)
    return plan


# ------------------------------------------------------------------------------------------------- run


class OutputWriter:
    """Writes predictions' files in a thread pool (at most ``workers`` waiting) and keeps the summary entries
    in the order they were added."""

    def __init__(self, plan: BatchPlan, workers: int, report: ErrorReporter, png_compress_level: int):
        self.plan, self.workers, self.report = plan, max(1, workers), report
        self.png_compress_level = png_compress_level
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="defocus-write")
        self.entries: list[dict | None] = []
        self.pending: deque[tuple[int, Future]] = deque()

    def add(self, entry: dict) -> None:
        """A finished entry (a failure, a skipped image)."""
        self.entries.append(entry)

    def submit(self, pred: Prediction, stem: str) -> None:
        """Write ``pred``'s outputs in the background; waits while too many writes are pending."""
        fut = self.pool.submit(write_entry, pred, self.plan.out_dir, stem, self.plan.save, self.png_compress_level)
        self.pending.append((len(self.entries), fut))
        self.entries.append(None)
        self.wait(self.workers)

    def wait(self, at_most: int = 0) -> None:
        """Collect finished writes until at most ``at_most`` are pending."""
        while len(self.pending) > at_most:
            index, fut = self.pending[0]
            entry = fut.result()
            self.pending.popleft()  # only once collected: an interruption above leaves it pending
            if entry["error"]:
                self.report(entry["path"], entry["error"])
            self.entries[index] = entry

    def close(self) -> list[dict]:
        """Wait for every write; the entries, in order."""
        try:
            self.wait(0)
        finally:
            self.pool.shutdown(wait=True)
        return [e for e in self.entries if e is not None]


def check_summary_is_ours(out_dir) -> None:
    """Refuse (``ValueError``) an output folder whose ``summary.json`` is not one that a batch wrote: it would
    be replaced."""
    path = Path(out_dir) / imageio.SUMMARY_NAME
    if path.exists() and not imageio.is_batch_summary(path):
        raise ValueError(f"{path} exists and was not written by defocus predict: it would be replaced; choose "
                         f"another output folder (-o), or move that file")


def previous_entries(out_dir) -> dict[str, dict]:
    """The successful entries of an earlier ``summary.json`` in ``out_dir``, by output stem (empty when there is
    none or it cannot be read)."""
    try:
        summary = json.loads((Path(out_dir) / imageio.SUMMARY_NAME).read_text(encoding="utf-8"))
        return {e["output"]: e for e in summary.get("images", []) if e.get("output") and not e.get("error")}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}


def failed_entry(failure: FailedPrediction, stem: str | None = None) -> dict:
    """The summary entry of an input that failed: the keys of a done image's entry, ``output`` its stem
    (``None`` for an input that never became an image job) and ``outputs`` empty."""
    return {"path": failure.source, "output": stem, **failure.to_dict(), "outputs": {}}


def same_file(a, b) -> bool:
    """Whether two paths name the same file (relative paths taken from the current folder)."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, TypeError, ValueError):
        return False


def skipped_entry(job: Job, plan: BatchPlan, earlier: dict[str, dict]) -> dict:
    """The summary entry of a skipped image: its earlier entry (with the path as given now) when there is one for
    the same file."""
    entry = earlier.get(job.stem)
    if entry is not None and same_file(entry.get("path"), job.path):
        entry = {**entry, "path": str(job.path)}
    else:
        entry = {"path": str(job.path), "output": job.stem, "width": None, "height": None,
                 "in_focus_fraction": None, "threshold": None, "seconds": 0.0, "error": None}
    outputs = relative_outputs(expected_outputs(plan.out_dir, job.stem, plan.save), plan.out_dir)
    return {**entry, "outputs": outputs, "skipped": True}


def make_summary(plan: BatchPlan, entries: list[dict], predictor=None, seconds: float = 0.0,
                 interrupted: bool = False) -> dict:
    """The ``summary.json`` content: the model and settings (``None`` when no model was needed), counts, and
    one entry per image done, failed or skipped."""
    return {
        "model": predictor.info.to_dict() if predictor is not None else None,
        "settings": predictor.settings() if predictor is not None else None,
        "outputs": list(plan.save),
        "out_dir": str(plan.out_dir),
        "n_images": len(entries),
        "failed": sum(1 for e in entries if e.get("error")),
        "skipped": sum(1 for e in entries if e.get("skipped")),
        "n_planned": len(plan.jobs) + len(plan.skipped) + len(plan.errors),
        "interrupted": interrupted,
        "seconds_total": round(seconds, 3),
        "images": entries,
    }


def summary_json(summary: dict) -> str:
    """``summary`` as indented JSON text that encodes as UTF-8: non-ASCII names as they are, unless a name is no
    valid Unicode (a file name in another encoding): then every non-ASCII character is escaped (``\\udce9``)."""
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(summary, indent=2, ensure_ascii=True)
    return text


def write_summary(summary: dict, out_dir) -> Path:
    """Write ``summary.json`` into ``out_dir`` atomically."""
    data = summary_json(summary).encode("utf-8")
    return imageio.write_bytes_atomic(data, Path(out_dir) / imageio.SUMMARY_NAME)


def log_error(path: str, reason: str) -> None:
    """The default :data:`ErrorReporter`: one ``ERROR`` log record per failure."""
    log.error("%s: %s", path, reason)


def _predict_jobs(predictor, plan: BatchPlan, writer: OutputWriter, report: ErrorReporter, bar) -> None:
    if not plan.jobs:
        return
    results = predictor.predict_many([job.path for job in plan.jobs], on_error="return",
                                     keep_images="overlay" in plan.save)
    for res, job in zip(results, plan.jobs):
        if res.ok:
            writer.submit(res, job.stem)
        else:
            report(res.source, res.error)
            writer.add(failed_entry(res, job.stem))
        bar.update(1)


def run_batch(predictor, plan: BatchPlan, progress: bool = True, on_error: ErrorReporter | None = None,
              png_compress_level: int = PNG_COMPRESS_LEVEL) -> dict:
    """Predict the plan's jobs with ``predictor`` (may be ``None`` when there are none), write their outputs and
    ``summary.json``; returns the summary. Failures are reported through ``on_error(path, reason)`` (default: an
    ``ERROR`` log record; log records are printed above the progress bar) and the batch goes on. On
    ``KeyboardInterrupt`` the writes already started are finished, the summary of what was done is written
    (``"interrupted": true``) and the interruption is re-raised."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    if plan.jobs and predictor is None:
        raise ValueError("a predictor is needed: the plan has images to predict")
    report = on_error or log_error
    t_start = time.perf_counter()
    writer = OutputWriter(plan, predictor.workers if predictor is not None else 1, report, png_compress_level)
    for item, reason in plan.errors:
        report(item, reason)
        writer.add(failed_entry(FailedPrediction(item, reason)))
    earlier = previous_entries(plan.out_dir) if plan.skipped else {}
    for job in plan.skipped:
        writer.add(skipped_entry(job, plan, earlier))
    interruption = None
    bar = tqdm(total=len(plan.jobs), unit="img", disable=not progress or len(plan.jobs) <= 1, dynamic_ncols=True)
    try:
        with logging_redirect_tqdm():
            _predict_jobs(predictor, plan, writer, report, bar)
    except KeyboardInterrupt as e:
        interruption = e
    finally:
        bar.close()
        entries = writer.close()
    summary = make_summary(plan, entries, predictor, time.perf_counter() - t_start, interruption is not None)
    write_summary(summary, plan.out_dir)
    if interruption is not None:
        raise interruption
    return summary


def predict_files(predictor, inputs, out_dir="outputs", save=SAVE_CHOICES, recursive: bool = False,
                  progress: bool = True, on_error: ErrorReporter | None = None,
                  png_compress_level: int = PNG_COMPRESS_LEVEL, skip_existing: bool = False) -> dict:
    """Run ``predictor`` on files / folders / globs / ``.txt`` lists and write the outputs into ``out_dir``:
    :func:`plan_batch` then :func:`run_batch`.

    Writes ``<stem>_prob.png``, ``<stem>_mask.png`` and ``<stem>_overlay.jpg`` (as chosen by ``save``) per image
    and ``summary.json``; output stems are unique, keep a folder input's sub-folder layout and never name an
    input file. Every failure is reported through ``on_error(path, reason)`` and recorded in the summary; the
    batch carries on. Raises ``OSError`` when ``out_dir`` cannot be written.

    Returns the summary dict (``images``: one entry per input, ``failed``: the number of failures).
    """
    plan = plan_batch(inputs, out_dir, save, recursive=recursive, skip_existing=skip_existing)
    return run_batch(predictor, plan, progress=progress, on_error=on_error, png_compress_level=png_compress_level)
