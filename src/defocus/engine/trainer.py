"""The training loop: one plain PyTorch loop for stage 1, stage 2 and R-DFFNet.

It selects the device, runs mixed precision on CUDA when asked, wraps the trainable module in
DistributedDataParallel under ``torchrun``, clamps gradients, follows the schedules, logs to CSV (and TensorBoard),
writes atomic resumable checkpoints every N minutes and at the end, validates every K epochs, and saves the final
student with :func:`defocus.models.save_model`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import metrics
from ..config import TrainConfig, dump_config, load_config
from ..devices import resolve_device
from ..errors import first_line
from ..models.io import read_metadata
from ..models.predict import predict_probs
from .checkpoint import CHECKPOINT_NAME, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .data import batch_items, build_train_dataset, build_val_dataset, collate_by_shape, shape_keys
from .distributed import any_true, barrier, init_distributed, local_rank_from_env
from .logs import CSVLog, TensorBoardLog
from .sampling import ResumableSampler, SeededDataset
from .schedules import distill_weight, lr_factor, run_epochs, total_steps
from .stages import STAGES, build_depth_teacher

log = logging.getLogger(__name__)

MODEL_NAME = "model.safetensors"
BEST_NAME = "model_best.safetensors"
LOWER_IS_BETTER = {"mae"}


class RunSetupError(ValueError):
    """Building the run failed before any step (a device or backbone that does not exist, an unusable folder)."""


class TeacherInterrupted(KeyboardInterrupt):
    """A signal stopped the stage-1 teacher that a stage-2 run trains first (``distill.teacher_bootstrap``);
    ``result`` is the teacher's :class:`TrainResult` (its checkpoint continues with the stage-2 run's resume)."""

    def __init__(self, result: "TrainResult"):
        super().__init__(result.interrupted)
        self.result = result


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the update (checkpoints stay as they were)."""


@dataclass
class TrainResult:
    """Where a run left its files and how far it got (``complete`` is False after a budget, step-limit or signal
    stop)."""

    output_dir: Path
    model_path: Path
    checkpoint_path: Path
    step: int
    epoch: int
    complete: bool
    last_loss: float
    best: Optional[dict] = None
    interrupted: Optional[str] = None  # "SIGINT" / "SIGTERM" when a signal stopped the run


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def hold_batchnorm_statistics(module: torch.nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode: it normalises by its running statistics and does not
    update them (its scale and shift still train), so small or one-shape batches train as the network will run."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


class Trainer:
    """Train the stage named by ``cfg.stage``.

    Args:
        cfg: the run's configuration.
        train_dataset: a dataset of ``dict(image, target, ...)`` items to use instead of ``cfg.data``.
        val_dataset: likewise for validation (otherwise ``cfg.data.val``).
    """

    def __init__(self, cfg: TrainConfig, train_dataset=None, val_dataset=None):
        self.cfg = cfg
        eng = cfg.engine
        self.out = Path(cfg.output_dir)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"output_dir {self.out} is a file")
        resume = resume_path(eng.resume, self.out)
        if resume is None and (self.out / CHECKPOINT_NAME).exists():
            raise ValueError(f"{self.out} holds another run (its {CHECKPOINT_NAME}): continue it with --resume auto, "
                             f"or train into another folder (--set output_dir=...)")
        if resume is not None and not same_folder(resume.parent, self.out) and \
                any((self.out / name).exists() for name in (CHECKPOINT_NAME, "log.csv")):
            raise ValueError(f"{self.out} holds another run: continuing {resume} there would mix the two runs' "
                             f"files; continue it in its own folder ({resume.parent}) or in a new one")
        self.device = resolve_device(eng.device, local_rank_from_env())
        self.dist = init_distributed(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = eng.cudnn_benchmark

        state = load_checkpoint(resume, map_location="cpu") if resume else None
        if state is not None:  # before a bootstrap teacher trains: a resume that cannot run fails at once
            self.check_resumable(state)
        seed_everything(cfg.seed)
        stage_kwargs = {}
        if cfg.stage == "stage2":
            depth_teacher = build_depth_teacher(cfg)  # its file's errors, too, come before a teacher trains
            rng = capture_rng()
            stage_kwargs = dict(teacher_path=resolve_teacher(cfg), depth_teacher=depth_teacher)
            restore_rng(rng)
        self.stage = STAGES[cfg.stage](cfg, self.device, **stage_kwargs)
        self.trainable = self.stage.trainable
        self.optimizers = self.stage.optimizers
        self.base_lrs = {k: [g["lr"] for g in opt.param_groups] for k, opt in self.optimizers.items()}

        self._setup_precision()
        module = self.trainable
        self.ddp = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            module = self.ddp = DDP(module, device_ids=ids)
        self.forward = torch.compile(module) if eng.compile else module

        base = train_dataset if train_dataset is not None else build_train_dataset(
            cfg.data, self.stage.mean, self.stage.std, cfg.seed,
            with_depth=getattr(self.stage, "uses_scene_depth", False))
        self.dataset = SeededDataset(base, cfg.seed)
        bs = cfg.data.batch_size
        keys = shape_keys(cfg.data, base) if train_dataset is None else None
        self.sampler = ResumableSampler(self.dataset, num_replicas=self.dist.world, rank=self.dist.rank,
                                        shuffle=cfg.data.shuffle, seed=cfg.seed, drop_last=cfg.data.drop_last,
                                        shape_keys=keys, batch_size=bs)
        per_rank = self.sampler.num_samples
        self.batches_per_epoch = per_rank // bs if cfg.data.drop_last else math.ceil(per_rank / bs)
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training set ({len(base)} samples over {self.dist.world} process(es)) has fewer "
                             f"samples than one batch ({bs})")
        self.loader = DataLoader(self.dataset, batch_size=bs, sampler=self.sampler, drop_last=cfg.data.drop_last,
                                 num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda",
                                 persistent_workers=False, collate_fn=collate_by_shape)
        self.total_steps = total_steps(cfg.optim, self.batches_per_epoch)
        self._val_dataset = val_dataset

        self.step = 0              # optimisation steps done
        self.epoch = 0             # epochs completed (the running epoch is epoch + 1)
        self.batch_in_epoch = 0    # batches of the running epoch done
        self.sample_in_epoch = 0   # samples of this process's share of the running epoch done
        self.elapsed = 0.0         # training seconds over all sessions
        self.best: Optional[dict] = None
        self.last_loss = math.nan
        self.interrupted: Optional[str] = None  # the signal that asked the running fit() to stop
        self._val_log: Optional[CSVLog] = None  # val.csv of the running fit()
        self.checkpoint_path = self.out / CHECKPOINT_NAME

        if state is not None:
            self.load_state(state)
            log.info("resumed from %s at step %d (epoch %d, batch %d)", resume, self.step, self.epoch + 1,
                     self.batch_in_epoch)
        self._resumed_step = self.step if resume else None

    # ------------------------------------------------------------------------------------------------ set-up
    def _setup_precision(self) -> None:
        amp = self.cfg.engine.amp
        self.scaler = None
        self.autocast = contextlib.nullcontext
        if amp == "none":
            return
        if amp not in ("bf16", "fp16"):
            raise ValueError(f"engine.amp must be none, bf16 or fp16, got {amp!r}")
        if self.device.type != "cuda":
            log.warning("mixed precision (%s) is only used on CUDA; training in float32 on %s", amp, self.device)
            return
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        self.autocast = lambda: torch.autocast("cuda", dtype=dtype)
        if amp == "fp16":
            self.scaler = torch.amp.GradScaler("cuda")

    @property
    def is_main(self) -> bool:
        """Whether this process writes files."""
        return self.dist.is_main

    @property
    def running_epoch(self) -> int:
        """The epoch in progress, counted from 1 (drives the epoch schedules)."""
        return self.epoch + 1

    def _done(self) -> bool:
        if self.cfg.optim.max_iters is not None:
            return self.step >= self.cfg.optim.max_iters
        return self.epoch >= run_epochs(self.cfg.optim)

    # ------------------------------------------------------------------------------------------------ one step
    def set_learning_rates(self) -> float:
        """Apply the schedule to the student optimiser (the projectors keep their constant rate); returns it."""
        f = lr_factor(self.cfg.optim, self.running_epoch, self.step)
        opt = self.optimizers["student"]
        for g, base in zip(opt.param_groups, self.base_lrs["student"]):
            g["lr"] = base * f
        return opt.param_groups[0]["lr"]

    def _to_device(self, batch: dict) -> dict:
        nb = self.device.type == "cuda"
        return {k: (v.to(self.device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def train_step(self, batch: dict) -> dict:
        """One optimisation step on ``batch`` (a list of batches of one shape each: their losses weighted by their
        share of the samples, one update; with several processes, gradients are exchanged once, after the last
        shape's backward pass); returns the loss and its parts as floats.

        Raises :class:`NonFiniteLossError` (naming the step) before any update if the loss is NaN/inf.
        """
        self.trainable.train()
        if self.cfg.model.freeze_bn:
            hold_batchnorm_statistics(self.stage.student)
        lr = self.set_learning_rates()
        groups = [self._to_device(g) for g in (batch if isinstance(batch, list) else [batch])]
        count = sum(len(g["image"]) for g in groups)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        value, parts, bad = 0.0, {}, None
        for n, group in enumerate(groups):  # items of one shape each; the step's loss is their mean weighted by samples
            share = len(group["image"]) / count
            # several processes: one gradient exchange a step, whatever number of shapes each process's batch holds
            last = n == len(groups) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                with self.autocast():
                    loss, group_parts = self.stage.compute(self.forward, group, self.running_epoch, self.step)
                group_value = float(loss.detach())
                if bad is None and not math.isfinite(group_value):
                    bad = (group_value, group_parts)
                if share != 1:
                    loss = loss * share
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            value += share * group_value
            for k, v in group_parts.items():
                parts[k] = parts.get(k, 0.0) + share * float(v)
        if any_true(bad is not None, self.dist, self.device):
            bad_value, bad_parts = bad or (float("nan"), {})   # (the non-finite loss was another process's)
            raise NonFiniteLossError(
                f"non-finite loss ({bad_value}) at step {self.step + 1} (epoch {self.running_epoch}, batch "
                f"{self.batch_in_epoch + 1}/{self.batches_per_epoch}); stopped before the update. Parts: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in bad_parts.items())
                + (f". Last checkpoint: {self.checkpoint_path}" if self.checkpoint_path.exists() else ""))
        if self.scaler is not None:
            for opt in self.optimizers.values():
                self.scaler.unscale_(opt)
        o = self.cfg.optim
        if o.grad_clamp is not None:
            torch.nn.utils.clip_grad_value_(self.stage.clamp_params, o.grad_clamp)
        if o.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.stage.clamp_params, o.grad_clip_norm)
        for opt in self.optimizers.values():  # student first, then projectors
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()
        self.last_loss = value
        out = {"loss": value, "lr": lr}
        out.update(parts)
        return out

    # ------------------------------------------------------------------------------------------------ the loop
    def fit(self, max_steps: Optional[int] = None) -> TrainResult:
        """Train until the schedule ends, ``engine.max_minutes`` is spent or ``max_steps`` steps are done (then
        a checkpoint is written and a later run with ``engine.resume`` continues exactly where this one stopped)."""
        if not self.is_main:
            return self._fit(max_steps)
        self.out.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.out):
            dump_config(self.cfg, self.out / "config.yaml")
            return self._fit(max_steps)

    def _fit(self, max_steps: Optional[int]) -> TrainResult:
        cfg = self.cfg
        csv = CSVLog(self.out / "log.csv", self._resumed_step) if self.is_main else None
        self._val_log = CSVLog(self.out / "val.csv", self._resumed_step) if self.is_main else None
        tb = TensorBoardLog(self.out / "tb", cfg.engine.tensorboard and self.is_main)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=cfg.stage, dynamic_ncols=True,
                   disable=not (cfg.engine.progress and self.is_main))
        start = time.monotonic()
        self.interrupted = None
        try:
            with self._stop_on_signals():
                stop = self._loop(max_steps, csv, tb, bar, start)
        finally:
            bar.close()
            tb.close()
        return self._finish(stop, start)

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """Within the loop (main thread), Ctrl-C or SIGTERM stops training after the running step, which is then
        checkpointed like a budget stop; a second signal stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.interrupted is not None:
                raise KeyboardInterrupt
            self.interrupted = signal.Signals(signum).name
            log.warning("%s: stopping after this step and writing a checkpoint (again to stop at once)",
                        self.interrupted)

        # a signal the process ignores (SIGINT of a job started with `&`) stays ignored
        wanted = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
        previous = {s: signal.signal(s, handler) for s in wanted}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _loop(self, max_steps, csv, tb, bar, start) -> Optional[str]:
        """Train until the schedule ends or a stop; returns the stop's reason (``None``: the schedule ended)."""
        cfg = self.cfg
        last_ckpt = start
        window: dict = {}
        window_t = time.monotonic()
        stop = None
        while stop is None and not self._done():
            self.sampler.set_position(self.epoch, self.sample_in_epoch)
            finished_epoch = True
            for batch in self.loader:
                parts = self.train_step(batch)
                self.step += 1
                self.batch_in_epoch += 1
                self.sample_in_epoch += batch_items(batch)
                for k, v in parts.items():
                    window.setdefault(k, []).append(v)
                bar.update(1)
                if self.step % cfg.engine.log_every == 0 or self.step == self.total_steps:
                    row = self._log_row(window, time.monotonic() - window_t)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                    if csv is not None:
                        csv.write(row)
                    tb.write(row, self.step)
                    window, window_t = {}, time.monotonic()
                now = time.monotonic()
                stop = self._stop_reason(max_steps, now - start)
                if stop is None and self.is_main and now - last_ckpt >= cfg.engine.checkpoint_minutes * 60:
                    self._save_state(now - start)
                    last_ckpt = now
                if stop is not None:
                    left = self.sampler.num_samples - self.sample_in_epoch  # its last batch done?
                    finished_epoch = left == 0 or (cfg.data.drop_last and left < cfg.data.batch_size)
                    break
            if finished_epoch:
                self._end_epoch()
        if window:   # the steps since the last logged row
            row = self._log_row(window, time.monotonic() - window_t)
            if csv is not None:
                csv.write(row)
            tb.write(row, self.step)
        return stop

    def _finish(self, stop: Optional[str], start: float) -> TrainResult:
        complete = self._done()
        self._sync_buffers()
        if stop is not None:
            log.info("stopping at step %d: %s", self.step, stop)
        self.elapsed += time.monotonic() - start
        if self.is_main:
            self._save_state(0.0)
            self._save_model(self.out / MODEL_NAME, complete)
        barrier(self.dist)
        return TrainResult(self.out, self.out / MODEL_NAME, self.checkpoint_path, self.step, self.epoch, complete,
                           self.last_loss, self.best, self.interrupted)

    def _sync_buffers(self) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every replica, as DDP does before each forward,
        so that all processes end with identical models."""
        if not self.dist.enabled:
            return
        import torch.distributed as dist

        for buf in self.trainable.buffers():
            dist.broadcast(buf.data, src=0)

    def _log_row(self, window: dict, seconds: float) -> dict:
        n = len(window.get("loss", [])) or 1
        row = {"step": self.step, "epoch": self.running_epoch if self.batch_in_epoch else self.epoch}
        row.update({k: float(np.mean(v)) for k, v in window.items()})
        row["lr"] = window["lr"][-1]
        row["sec_per_it"] = seconds / n
        return row

    def _stop_reason(self, max_steps, seconds) -> Optional[str]:
        if self.cfg.optim.max_iters is not None and self.step >= self.cfg.optim.max_iters:
            return "max_iters reached"
        if max_steps is not None and self.step >= max_steps:
            return f"step limit {max_steps} reached"
        budget = self.cfg.engine.max_minutes
        if budget is not None and any_true(seconds >= budget * 60, self.dist, self.device):
            return f"time budget of {budget} min spent"
        if any_true(self.interrupted is not None, self.dist, self.device):
            return f"interrupted ({self.interrupted or 'another process'})"
        return None

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = self.sample_in_epoch = 0
        k = self.cfg.engine.val_every
        if k and self.epoch % k == 0:
            self.validate()

    # ------------------------------------------------------------------------------------------------ validation
    def validate(self) -> Optional[dict]:
        """Score the student on the validation set with the paper's metrics (``defocus.metrics``) and keep the
        best model as ``model_best.safetensors``; returns the summary (None without a validation set)."""
        summary = None
        if self.is_main:
            summary = self._validate_main()
        barrier(self.dist)
        return summary

    def _validate_main(self) -> Optional[dict]:
        ds = self._val_dataset
        if ds is None:
            ds = self._val_dataset = build_val_dataset(self.cfg.data, self.stage.mean, self.stage.std)
        if ds is None:
            return None
        name = self.cfg.data.val.name if self.cfg.data.val is not None else None
        # labels derived from photo pairs have undetermined pixels, which only the standard protocol leaves out
        has_ignore = any(p.ignore is not None for p in getattr(ds, "pairs", ()))
        scorer = metrics.Scorer(protocol=metrics.get_protocol("standard" if has_ignore else "paper"), dataset=name)
        model = self.stage.student
        model.eval()
        # photos kept at their own size (data.upscale: false) differ in size: one at a time
        loader = DataLoader(ds, batch_size=self.cfg.data.batch_size if self.cfg.data.upscale else 1, shuffle=False,
                            num_workers=self.cfg.data.num_workers)
        with torch.no_grad():
            for batch in loader:
                x = batch["image"].to(self.device)
                with self.autocast():
                    prob = predict_probs(model, x)
                prob = prob.cpu().numpy()
                gt = batch["target"].numpy() > 0.5
                ignore = batch["valid"].numpy() < 0.5 if has_ignore else None
                for i in range(prob.shape[0]):
                    stem = batch["stem"][i] if "stem" in batch else str(len(scorer.images))
                    if ignore is not None and ignore[i, 0].all():
                        continue  # nothing determined left at the training size
                    scorer.add(stem, prob[i, 0], gt[i, 0], None if ignore is None else ignore[i, 0])
        model.train()
        summary = scorer.summary()
        key = self.cfg.engine.val_metric
        value = float(summary[key])
        log.info("validation after epoch %d: %s", self.epoch,
                 ", ".join(f"{k}={summary[k]:.4f}" for k in ("mae", "fbeta", "iou") if k in summary))
        if self.best is not None and self.best.get("metric") != key:  # engine.val_metric changed on a resume
            log.info("best model now kept by %s (it was by %s): the next validation sets it", key,
                     self.best.get("metric"))
            self.best = None
        better = self.best is None or (value < self.best["value"] if key in LOWER_IS_BETTER
                                       else value > self.best["value"])
        if better and math.isfinite(value):
            self.best = {"metric": key, "value": value, "step": self.step, "epoch": self.epoch}
            self._save_model(self.out / BEST_NAME, False, {f"val_{key}": value})
        val_log = self._val_log or CSVLog(self.out / "val.csv", self.step)
        val_log.write({"step": self.step, "epoch": self.epoch, **summary})
        return summary

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything an exact resume needs (teachers are rebuilt from their files, not stored)."""
        return {
            "stage": self.cfg.stage,
            "config": self.cfg.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "sample_in_epoch": self.sample_in_epoch,
            "world": self.dist.world,
            "batch_size": self.cfg.data.batch_size,
            "elapsed": self.elapsed,
            "model": self.trainable.state_dict(),
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng(),
            "best": self.best,
            "last_loss": self.last_loss,
        }

    def check_resumable(self, state: dict) -> None:
        """``ValueError`` unless the checkpoint ``state`` can be resumed by this run: the same stage, and the
        checkpoint's config except for the settings a resume may change (:data:`RESUMABLE_CHANGES`)."""
        if state["stage"] != self.cfg.stage:
            raise ValueError(f"checkpoint is from {state['stage']}, this run is {self.cfg.stage}")
        changed = config_changes(state.get("config"), self.cfg.to_dict())
        if changed:
            more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
            raise ValueError("resuming with other settings than the checkpoint's: " + "; ".join(changed[:3]) + more
                             + ". Resume with the run's own config, or start a new run in another folder")

    def load_state(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (networks, optimisers, schedule position, RNGs, data position); the
        caller has checked it with :meth:`check_resumable`."""
        if state["world"] != self.dist.world and state["batch_in_epoch"]:
            log.warning("resuming mid-epoch with a different process count (%s -> %s): the rest of the epoch "
                        "follows the new layout", state["world"], self.dist.world)
        self.trainable.load_state_dict(state["model"])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        # a new batch size goes on from the same sample of the epoch
        if self.sampler.shape_keys is not None and state["batch_size"] != self.cfg.data.batch_size \
                and state["batch_in_epoch"]:
            log.warning("resuming mid-epoch with another batch size (%s -> %s) in a run whose batches are grouped "
                        "by shape: the rest of the epoch is grouped anew, so some of its samples may repeat or be "
                        "left out", state["batch_size"], self.cfg.data.batch_size)
        self.sample_in_epoch = state.get("sample_in_epoch", state["batch_in_epoch"] * state["batch_size"])
        self.elapsed = state.get("elapsed", 0.0)
        self.best = state.get("best")
        self.last_loss = state.get("last_loss", math.nan)
        restore_rng(state["rng"])

    def _save_state(self, session_seconds: float) -> None:
        state = self.state_dict()
        state["elapsed"] = self.elapsed + session_seconds
        save_checkpoint(state, self.checkpoint_path)
        log.debug("checkpoint written at step %d: %s", self.step, self.checkpoint_path)

    def _save_model(self, path: Path, complete: bool, extra: Optional[dict] = None) -> None:
        from ..models import save_model

        meta = {"stage": self.cfg.stage, "step": self.step, "epoch": self.epoch, "complete": complete}
        meta.update(extra or {})
        save_model(self.stage.student, path, metadata=meta)
        log.info("saved %s", path)

    # ------------------------------------------------------------------------------------------------ helpers
    def current_lambda(self) -> float:
        """The distillation weight at the current position (stage 2)."""
        return distill_weight(self.cfg.distill, self.cfg.optim, self.running_epoch, self.step)


#: Config keys (dotted; a trailing ``.`` covers a section) that may differ between a checkpoint and its resume:
#: where and how the run executes, and how long it goes on.
RESUMABLE_CHANGES = ("output_dir", "config_dir", "engine.", "optim.max_iters", "optim.epochs", "data.num_workers",
                     "data.batch_size")


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(saved: dict | None, now: dict) -> list[str]:
    """``"key: old -> new"`` for every setting of ``now`` that differs from the checkpoint's ``saved`` config,
    except :data:`RESUMABLE_CHANGES` (nothing when the checkpoint has no config)."""
    if not saved:
        return []
    old, new = _flatten(saved), _flatten(now)
    changed = []
    for key in sorted(set(old) | set(new)):
        if any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE_CHANGES):
            continue
        if old.get(key) != new.get(key):
            changed.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changed


#: The file a running training holds locked in its output folder.
LOCK_NAME = ".lock"


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold an exclusive lock on ``folder`` (its :data:`LOCK_NAME` file) while a run writes into it, so that a
    second run into the same folder is refused (``ValueError``) instead of interleaving with it. Where the system
    has no advisory file locks (Windows, some network file systems) nothing is locked (with a warning on the
    latter)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(Path(folder) / LOCK_NAME, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise ValueError(f"{folder}: another run is training into this folder") from None
        except OSError as e:  # a file system without locks (some network mounts): train unlocked
            log.warning("%s: cannot lock the run folder (%s); a second run into it would not be refused",
                        folder, e.strerror or e)
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(f, fcntl.LOCK_UN)


def same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same folder."""
    return Path(a).resolve() == Path(b).resolve()


def resume_path(resume: str | None, out: Path) -> Path | None:
    """The checkpoint a run continues from: ``resume`` itself (a run folder: its checkpoint), ``"auto"``: the
    output folder's checkpoint when there is one, else ``None`` (a new run)."""
    if not resume:
        return None
    if resume == "auto":
        path = out / CHECKPOINT_NAME
        if not path.exists():
            log.info("no %s in %s yet: starting a new run", CHECKPOINT_NAME, out)
            return None
        return path
    path = Path(resume)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def resolve_teacher(cfg: TrainConfig) -> Path | None:
    """The stage-1 checkpoint of a stage-2 run: ``distill.teacher_checkpoint`` (a model file or its run folder),
    else the model trained (or found finished) by running ``distill.teacher_bootstrap`` (a stage-1 config,
    relative to the config's folder) into ``<output_dir>/teacher``; a teacher run with a checkpoint is continued.

    Raises:
        TeacherInterrupted: a signal stopped the teacher's training (its checkpoint continues it).
        ValueError: the teacher stopped before the end of its schedule (a budget or step limit).
        FileNotFoundError: ``teacher_checkpoint`` names no model file."""
    d = cfg.distill
    if d.teacher_checkpoint:
        path = Path(d.teacher_checkpoint)
        if path.is_dir():  # a stage-1 run folder: its model
            path = path / MODEL_NAME
        if not path.is_file():
            raise FileNotFoundError(f"distill.teacher_checkpoint: {path}: no such model file (a stage-1 run's "
                                    f"{MODEL_NAME}, or its folder)")
        return path
    if not d.teacher_bootstrap:
        return None
    boot = Path(d.teacher_bootstrap)
    if not boot.is_absolute() and cfg.config_dir:
        boot = Path(cfg.config_dir) / boot
    out = Path(cfg.output_dir) / "teacher"
    model = out / MODEL_NAME
    if model.exists() and read_metadata(model).get("complete") == "True":
        log.info("stage 2: using the bootstrap teacher %s", model)
        return model
    started = (out / CHECKPOINT_NAME).exists()
    log.info("stage 2: %s the teacher with %s", "continuing" if started else "no teacher checkpoint given; training",
             boot)
    tcfg = load_config(boot, [f"output_dir={out}"] + (["engine.resume=auto"] if started else []))
    tcfg = replace(tcfg, engine=replace(tcfg.engine, device=cfg.engine.device, progress=cfg.engine.progress))
    result = Trainer(tcfg).fit()
    if result.interrupted:
        raise TeacherInterrupted(result)
    if not result.complete:
        raise ValueError(f"the stage-2 teacher stopped before the end of its schedule ({out}): continue it with "
                         f"--resume auto, or give distill.teacher_checkpoint")
    return model


def train(cfg: TrainConfig, train_dataset=None, val_dataset=None, max_steps: Optional[int] = None) -> TrainResult:
    """Run a whole training (``Trainer(cfg).fit()``), leaving the process group afterwards under torchrun."""
    import torch.distributed as dist

    created = not (dist.is_available() and dist.is_initialized())
    try:
        trainer = Trainer(cfg, train_dataset, val_dataset)
    except (RuntimeError, OSError) as e:  # an unknown device or backbone, an output folder that is a file ...
        if isinstance(e, FileNotFoundError):
            raise
        raise RunSetupError(f"the run cannot start: {first_line(e)}") from e
    try:
        return trainer.fit(max_steps=max_steps)
    finally:
        if created and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
