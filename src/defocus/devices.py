"""Device names to ``torch.device``: one rule for inference, evaluation, training and benchmarks."""
from __future__ import annotations

from .optional import require_torch


def mps_available() -> bool:
    """Whether Apple's Metal backend (MPS) can run here."""
    torch = require_torch("a torch device")

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(device="auto", local_rank: int | None = None):
    """The ``torch.device`` for ``device``.

    ``"auto"`` (or ``None``) is CUDA when available, else Apple MPS, else the CPU; any other name goes to
    ``torch.device``. With ``local_rank`` (a process under torchrun) an index-less CUDA device becomes that
    process's GPU.

    Raises:
        ValueError: an unknown device name, or an accelerator asked for by name that is not available here.
        MissingTorchError: PyTorch is not installed (one line with the install command).
    """
    torch = require_torch("the PyTorch backend")

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif mps_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use cpu or auto)")
    if dev.type == "mps" and not mps_available():
        raise ValueError(f"device {device!r} requested but Apple MPS is not available (use cpu or auto)")
    if dev.type == "cuda" and dev.index is None and local_rank is not None:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return dev
