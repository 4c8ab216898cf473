"""Learning-rate and distillation-weight schedules (method.md §3.3, §4.4), in epoch mode and iteration mode."""
from __future__ import annotations

import math

from ..config import DistillConfig, OptimConfig


def poly_factor(t: float, total: float, power: float = 0.9) -> float:
    """``(1 - t / total) ** power``, floored at 0."""
    return max(0.0, 1.0 - t / total) ** power


def run_epochs(optim: OptimConfig) -> int:
    """Number of epochs the loop runs: ``epochs - 1`` with ``skip_last_epoch`` (the reference runs 74 of 75)."""
    return optim.epochs - 1 if optim.skip_last_epoch else optim.epochs


def total_steps(optim: OptimConfig, batches_per_epoch: int) -> int:
    """Optimisation steps of a full run (``max_iters`` in iteration mode)."""
    if optim.max_iters is not None:
        return int(optim.max_iters)
    return run_epochs(optim) * batches_per_epoch


def lr_factor(optim: OptimConfig, epoch: int, step: int) -> float:
    """Multiplier of the base learning rate.

    Epoch mode (``max_iters`` unset): ``(1 - epoch / (epochs + poly_offset)) ** poly_power`` with ``epoch``
    counted from 1, constant within the epoch. Iteration mode: ``(1 - step / max_iters) ** poly_power`` with
    ``step`` counted from 0. ``schedule="constant"`` gives 1.
    """
    if optim.schedule == "constant":
        return 1.0
    if optim.schedule != "poly":
        raise ValueError(f"unknown schedule {optim.schedule!r} (poly | constant)")
    if optim.max_iters is not None:
        return poly_factor(step, optim.max_iters, optim.poly_power)
    return poly_factor(epoch, optim.epochs + optim.poly_offset, optim.poly_power)


def schedule_epoch(optim: OptimConfig, epoch: int, step: int) -> int:
    """The epoch (from 1) that drives the distillation weight.

    In epoch mode it is ``epoch``. In iteration mode the run is divided into the reference's
    ``run_epochs`` virtual epochs: ``1 + floor(step * run_epochs / max_iters)``.
    """
    if optim.max_iters is None:
        return epoch
    n = run_epochs(optim)
    return min(n, 1 + math.floor(step * n / max(1, optim.max_iters)))


def distill_weight(distill: DistillConfig, optim: OptimConfig, epoch: int, step: int) -> float:
    """Lambda of the feature-distillation terms: the paper's schedule (eq. 9) or a constant."""
    if distill.lambda_schedule == "constant":
        return float(distill.lambda_value)
    if distill.lambda_schedule != "paper":
        raise ValueError(f"unknown lambda_schedule {distill.lambda_schedule!r} (paper | constant)")
    from ..distill import distill_lambda

    return distill_lambda(schedule_epoch(optim, epoch, step), epochs=optim.epochs, switch=distill.lambda_switch,
                          value=distill.lambda_value)
