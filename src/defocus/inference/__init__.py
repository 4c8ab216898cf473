"""Any-size inference: photos -> native-resolution in-focus maps, masks, overlays and files on disk.

* :mod:`~defocus.inference.loading`: model names and files resolved to a network (:func:`load_network`,
  :class:`ModelInfo`);
* :mod:`~defocus.inference.runners`: one small runner per backend (PyTorch, ONNX Runtime, classical methods)
  behind :func:`make_runner`, and :class:`RuntimeOptions`;
* :mod:`~defocus.inference.result`: :class:`Prediction` / :class:`FailedPrediction`, overlays, and
  :func:`write_outputs` (one image's files, written atomically);
* :mod:`~defocus.inference.predictor`: :class:`Predictor` and :class:`PredictOptions`;
* :mod:`~defocus.inference.batch`: the batch runner (:func:`predict_files` = :func:`plan_batch` +
  :func:`run_batch`) that the command line, servers and distributed workers share.

Speed without changing outputs: conv + BN pairs are folded (:mod:`defocus.models.fuse`), the model runs in
``torch.inference_mode`` with channels-last tensors, decoding runs in a thread pool while the model computes,
and large maps are resized and written with Pillow. ``precision="bf16"`` (CUDA, or a CPU with native bf16
instructions), ``precision="fp16"`` (CUDA) and ``compile=True`` trade exactness or start-up time for speed.
An exported ``.onnx`` model runs on ONNX Runtime without importing torch; importing this package never
imports torch.
"""
from __future__ import annotations

from ..bundled import BUNDLED_WEIGHTS, bundled_weights
from ..imageio import DEFAULT_MAX_PIXELS, OUTPUT_SUFFIXES, ImageDecodeError
from .batch import (BatchInterrupted, BatchPlan, Job, interrupt_signal, make_summary, output_stem, outputs_done,
                    plan_batch, predict_files, raise_interrupt, run_batch, sigterm_interrupts, summary_json,
                    write_entry, write_summary)
from .loading import ModelInfo, check_model_spec, classical_methods, load_network, resolve_device
from .predictor import DRAFT_FACTOR, DRAFT_PIXELS, KEEP_IMAGE_PIXELS, PredictOptions, Predictor
from .result import (BOUNDARY_COLOUR, OVERLAY_DIM, OVERLAY_TINT, SAVE_CHOICES, STRIP_PIXELS, UPSAMPLE_CHOICES,
                     FailedPrediction, MapResizer, Prediction, check_save, draw_overlay_in_place, expected_outputs,
                     focus_boundary, make_overlay, prob_to_uint8, write_output, write_outputs)
from .runners import (BACKENDS, CLASSICAL_MAX_SIDE, DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, PRECISIONS,
                      ClassicalRunner, OnnxRunner, Runner, RuntimeOptions, TorchRunner, make_runner)

__all__ = [
    # predicting
    "Predictor", "PredictOptions", "RuntimeOptions", "Prediction", "FailedPrediction", "ImageDecodeError",
    # models and runners
    "ModelInfo", "load_network", "check_model_spec", "resolve_device", "classical_methods", "bundled_weights",
    "make_runner", "Runner", "TorchRunner", "OnnxRunner", "ClassicalRunner",
    # pictures and files of one result
    "make_overlay", "draw_overlay_in_place", "focus_boundary", "prob_to_uint8", "write_output", "write_outputs",
    "expected_outputs", "check_save", "MapResizer",
    # batches
    "predict_files", "plan_batch", "run_batch", "BatchPlan", "Job", "output_stem", "outputs_done", "write_entry",
    "make_summary", "summary_json", "write_summary", "BatchInterrupted", "raise_interrupt", "sigterm_interrupts",
    "interrupt_signal",
    # constants
    "BUNDLED_WEIGHTS", "BACKENDS", "BOUNDARY_COLOUR", "CLASSICAL_MAX_SIDE", "DEFAULT_BATCH_SIZE",
    "DEFAULT_WORKERS", "DEFAULT_MAX_PIXELS", "DRAFT_FACTOR", "DRAFT_PIXELS", "KEEP_IMAGE_PIXELS",
    "OUTPUT_SUFFIXES",
    "OVERLAY_DIM", "OVERLAY_TINT", "PRECISIONS", "SAVE_CHOICES", "STRIP_PIXELS", "UPSAMPLE_CHOICES",
]
