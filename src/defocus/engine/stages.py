"""What each training stage optimises: networks, optimisers and loss (method.md §3, §4, §5).

* :class:`Stage1` - DFFNet with the deep-supervised DBD loss.
* :class:`Stage2` - D-DFFNet: a fresh student distilled from a frozen stage-1 DFFNet and a frozen depth teacher
  through two sets of projectors with their own optimiser.
* :class:`RDFFNetStage` - R-DFFNet: one stage, DBD loss plus depth heads regressing the depth teacher's output
  (or, with ``distill.depth_teacher: scene``, the rendered scenes' own depth).

Every stage exposes ``student`` (the network that is saved), ``trainable`` (the module whose parameters are
optimised and synchronised across processes: the student, or the student with its projectors), ``optimizers``
(name -> optimiser; ``"student"`` first), ``clamp_params`` (the parameters whose gradients are clamped) and
``compute(forward, batch, epoch, step) -> (loss, parts)``.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..defaults import PAPER_SIZE
from ..losses import DBDLoss, depth_loss, depth_target, resize_to, scene_depth_target
from ..models.predict import normalization
from ..models.registry import is_depth_head
from .schedules import distill_weight

log = logging.getLogger(__name__)

#: ``distill.depth_teacher`` value: R-DFFNet's depth target is the training scenes' own depth (synthetic scenes
#: rendered with a depth map), not a depth network's output
SCENE_DEPTH = "scene"


def build_student(cfg: TrainConfig, name: str | None = None) -> nn.Module:
    """The student network from the ``model`` section (``create_model(name, backbone, pretrained, **kwargs)``).
    Trained at another size than the paper's 320 (``data.size``) or without enlarging small photos
    (``data.upscale: false``), it records those input defaults in its config, so its checkpoints and model files
    run at the size and in the way it was trained (:func:`~defocus.models.with_input_defaults`)."""
    from ..models import create_model, with_input_defaults

    m = cfg.model
    model = create_model(name or m.name, backbone=m.backbone, pretrained=m.pretrained, **m.model_kwargs.as_kwargs())
    if m.init:
        load_init_weights(model, m.init)
    with_input_defaults(model, size=cfg.data.size if cfg.data.size != PAPER_SIZE else None,
                        upscale=False if not cfg.data.upscale else None)
    return model


def load_init_weights(model: nn.Module, path) -> None:
    """Initialise every weight of ``model`` from a saved network, strictly: a model file that
    :func:`~defocus.models.load_model` reads (our safetensors, the authors' ``.pth``), ``"default"`` (the bundled
    model) or a training checkpoint of :func:`~defocus.engine.checkpoint.save_checkpoint` (its ``model`` entry).
    R-DFFNet's depth heads are the one exception to strictness, both ways: a DFFNet file initialises an R-DFFNet
    (fresh heads) and an R-DFFNet file a DFFNet (heads dropped)."""
    from ..bundled import resolve_default
    from ..models.io import is_safetensors, load_model
    from .checkpoint import load_checkpoint

    path = resolve_default(path)
    if is_safetensors(path):
        state = load_model(path).state_dict()
    else:
        try:
            state = load_checkpoint(path)["model"]
        except ValueError:  # not a training checkpoint: one of the authors' files
            state = load_model(path).state_dict()
    own = model.state_dict()
    if not any(is_depth_head(k) for k in own):
        state = {k: v for k, v in state.items() if not is_depth_head(k)}  # an R-DFFNet initialising a DFFNet
    fresh = [k for k in own if k not in state]
    if fresh and all(is_depth_head(k) for k in fresh) and all(k in own for k in state):
        model.load_state_dict(state, strict=False)    # a DFFNet initialising an R-DFFNet: only the heads are new
        log.info("initialised the student from %s (its %d depth-head tensors start from random)", path, len(fresh))
        return
    model.load_state_dict(state, strict=True)
    log.info("initialised the student from %s", path)


def valid_of(batch: dict):
    """The batch's ``valid`` map (1 = determined label) when some pixel is undetermined, else None (the
    reference loss, exactly)."""
    valid = batch.get("valid")
    if valid is None or bool((valid > 0.5).all()):
        return None
    return valid


def dbd_loss_from(cfg: TrainConfig, default_final_weight: float) -> DBDLoss:
    """The deep-supervised DBD loss of the ``loss`` section (``final_weight`` null = the stage's default)."""
    lc = cfg.loss
    fw = default_final_weight if lc.final_weight is None else lc.final_weight
    return DBDLoss(beta=lc.beta, final_weight=fw, side_weight=lc.side_weight, alpha=lc.edge_alpha,
                   smooth=lc.edge_smooth, edge_reduction=lc.edge_reduction, edge_padding=lc.edge_padding)


def adam(params, lr, optim_cfg, weight_decay=None) -> torch.optim.Adam:
    """Adam with the betas/eps of the ``optim`` section."""
    wd = optim_cfg.weight_decay if weight_decay is None else weight_decay
    return torch.optim.Adam(params, lr=lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps, weight_decay=wd)


def to_unit_range(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the input normalisation: images back to [0, 1] RGB (what the depth teachers take)."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return images * s + m


def set_teacher_mode(teacher: nn.Module, mode: str) -> nn.Module:
    """``train`` (the reference: BatchNorm with batch statistics, still without gradients) or ``eval``."""
    if mode not in ("train", "eval"):
        raise ValueError(f"teacher_mode must be 'train' or 'eval', got {mode!r}")
    teacher.train(mode == "train")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_depth_teacher(cfg: TrainConfig) -> nn.Module:
    """The depth teacher of the ``distill`` section (``create_depth_teacher(kind, weights, **kwargs)``)."""
    from ..models.depth import create_depth_teacher

    d = cfg.distill
    try:
        teacher = create_depth_teacher(d.depth_teacher, weights=d.depth_weights, **d.depth_kwargs.as_kwargs())
    except (FileNotFoundError, ValueError) as e:  # name the setting: the file alone may not say what it was for
        raise type(e)(f"the depth teacher (distill.depth_teacher / depth_weights): {e}") from None
    return set_teacher_mode(teacher, d.teacher_mode)


class TrainingStage:
    """What every stage shares: the student (the saved network), the deep-supervised DBD loss, the student's Adam,
    gradient clamping of the student's parameters and its input normalisation. Subclasses build their networks,
    call this ``__init__`` and implement :meth:`compute`.

    Args:
        cfg: the run's configuration.
        student: the network that is trained and saved (already on its device).
        trainable: the module optimised and synchronised across processes (default: ``student``).
        default_final_weight: the weight of the final output's DBD loss when ``loss.final_weight`` is null.
        extra_optimizers: optimisers besides the student's (name -> optimiser), e.g. the projectors'.
    """

    def __init__(self, cfg: TrainConfig, student: nn.Module, trainable: nn.Module | None = None,
                 default_final_weight: float = 1.0, extra_optimizers: dict | None = None):
        self.cfg = cfg
        self.student = student
        self.trainable = student if trainable is None else trainable
        self.loss = dbd_loss_from(cfg, default_final_weight)
        self.optimizers = {"student": adam(student.parameters(), cfg.optim.lr, cfg.optim), **(extra_optimizers or {})}
        self.clamp_params = list(student.parameters())
        self.mean, self.std = normalization(student)

    def compute(self, forward, batch: dict, epoch: int, step: int):
        """Loss of one batch and its named parts; ``forward`` is the (possibly DDP-wrapped / compiled)
        ``trainable``."""
        raise NotImplementedError


def build_label_filler(cfg: TrainConfig, student: nn.Module, device: torch.device) -> nn.Module | None:
    """The frozen network of ``loss.fill_undetermined`` (a model file or ``"default"``), or None when unset. It
    must take the student's input normalisation: it sees the same normalised crops."""
    path = cfg.loss.fill_undetermined
    if not path:
        for option in ("fill_flat", "fill_flip"):
            if getattr(cfg.loss, option):
                raise ValueError(f"loss.{option} needs loss.fill_undetermined (the model whose calls fill the pixels)")
        return None
    from ..models.io import load_model

    filler = set_teacher_mode(load_model(path, device=device), "eval")
    if normalization(filler) != normalization(student):
        raise ValueError(f"loss.fill_undetermined: {path} expects another input normalisation than the student")
    log.info("undetermined pixels are labelled by %s", path)
    return filler


#: width (Gaussian sigma, pixels) of the window over which :func:`local_gradient_rms` averages
FLAT_SIGMA = 2.0


@torch.no_grad()
def local_gradient_rms(images01: torch.Tensor, sigma: float = FLAT_SIGMA) -> torch.Tensor:
    """RMS luma gradient (8-bit grey levels per pixel, Sobel) of (B, 3, H, W) RGB in [0, 1], averaged over a
    Gaussian window of ``sigma`` pixels: (B, 1, H, W). Low on flat or smoothly blurred parts."""
    from torchvision.transforms.v2 import functional as TF

    y = F.pad(TF.rgb_to_grayscale(images01) * 255.0, (1, 1, 1, 1), mode="replicate")
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=y.device, dtype=y.dtype) / 8
    gx = F.conv2d(y, sobel.view(1, 1, 3, 3))
    gy = F.conv2d(y, sobel.t().contiguous().view(1, 1, 3, 3))
    radius = math.ceil(3 * sigma)
    return TF.gaussian_blur(gx * gx + gy * gy, [2 * radius + 1] * 2, [sigma, sigma]).clamp_min(0).sqrt()


@torch.no_grad()
def fill_undetermined(filler: nn.Module, images: torch.Tensor, target: torch.Tensor,
                      valid: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """``target`` where ``valid`` (1 = determined), elsewhere ``filler``'s thresholded prediction (1 = in focus)
    of the same ``images``; with ``flip`` its in-focus probability averaged with that of the images mirrored left
    to right (mapped back), as ``--flip-tta`` predicts."""
    score = filler(images).logit.float()                 # > 0 where in focus
    if flip:
        mirrored = filler(images.flip(-1)).logit.float().flip(-1)
        score = (torch.sigmoid(score) + torch.sigmoid(mirrored)) * 0.5 - 0.5
    guess = (resize_to(score, target.shape[-2:]) > 0).to(target.dtype)
    return torch.where(valid > 0.5, target, guess)


class Stage1(TrainingStage):
    """Stage 1 (method.md §3): ``L = L_dbd(Z) + sum_k L_dbd(up(S_k))``.

    With ``loss.fill_undetermined`` (off by default) the undetermined pixels are not left out of the loss but
    labelled by a frozen network's thresholded prediction (:func:`fill_undetermined`, averaged over the crop and its
    mirror image with ``loss.fill_flip``); ``loss.fill_flat`` hands it the pixels labelled in focus where the crop
    is flat (:func:`local_gradient_rms` below that value) as well."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        super().__init__(cfg, build_student(cfg).to(device))
        self.filler = build_label_filler(cfg, self.student, device)

    def compute(self, forward, batch: dict, epoch: int, step: int):
        """Loss of one batch (see the class docstring)."""
        out = forward(batch["image"])
        target, valid = batch["target"], valid_of(batch)
        if self.cfg.loss.fill_flat:                     # build_label_filler made sure a filler exists
            flat = local_gradient_rms(to_unit_range(batch["image"], self.mean, self.std)) < self.cfg.loss.fill_flat
            keep = 1.0 - (flat & (target > 0.5)).to(target.dtype)
            valid = keep if valid is None else valid * keep
        if self.filler is not None and valid is not None:
            target, valid = fill_undetermined(self.filler, batch["image"], target, valid, self.cfg.loss.fill_flip), None
        return self.loss(out.logit, out.sides, target, valid)


class DistillStudent(nn.Module):
    """The student and its two projector sets as one module (so that DDP synchronises all of them):
    ``forward(x)`` returns ``(student outputs, P_dbd(features), P_dep(features))``."""

    def __init__(self, student: nn.Module, proj_dbd: nn.Module, proj_dep: nn.Module):
        super().__init__()
        self.student = student
        self.proj_dbd = proj_dbd
        self.proj_dep = proj_dep

    def forward(self, x):
        out = self.student(x)
        return out, self.proj_dbd(out.features), self.proj_dep(out.features)


class Stage2(TrainingStage):
    """Stage 2 (method.md §4): ``1.1 L_dbd(Z) + sum_k L_dbd(up(S_k)) + lambda(e) (L_KD_dbd + L_KD_dep)``.

    The defocus teacher is the stage-1 DFFNet read from ``distill.teacher_checkpoint`` (or trained first from
    ``distill.teacher_bootstrap``); the student is a fresh network initialised like stage 1. The projectors have
    their own Adam (lr 0.1 constant, weight decay 5e-4); teachers run without gradients in train-mode BatchNorm
    (``distill.teacher_mode=eval`` switches that). ``depth_teacher``: the depth teacher, when the caller built it
    already (the trainer does, so that its file's errors come before a bootstrap teacher trains).
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, teacher_path=None, depth_teacher=None):
        from ..distill import Projectors
        from ..models import load_model

        d = cfg.distill
        path = teacher_path or d.teacher_checkpoint
        if path is None:
            raise ValueError("stage 2 needs distill.teacher_checkpoint (a stage-1 model) or distill.teacher_bootstrap")
        self.dbd_teacher = set_teacher_mode(load_model(path, device=device), d.teacher_mode)
        self.depth_teacher = (build_depth_teacher(cfg) if depth_teacher is None else depth_teacher).to(device)
        student = build_student(cfg)
        s_ch = list(student.backbone.channels)[::-1]
        t_ch = list(self.dbd_teacher.backbone.channels)[::-1]
        proj_dbd = Projectors(s_ch, t_ch)
        proj_dep = Projectors(s_ch, list(self.depth_teacher.channels))
        trainable = DistillStudent(student, proj_dbd, proj_dep).to(device)
        proj_params = list(proj_dbd.parameters()) + list(proj_dep.parameters())
        projectors = adam(proj_params, d.projector_lr, cfg.optim, weight_decay=d.projector_weight_decay)
        super().__init__(cfg, trainable.student, trainable, default_final_weight=1.1,
                         extra_optimizers={"projectors": projectors})
        self.t_mean, self.t_std = normalization(self.dbd_teacher)

    def teacher_features(self, images: torch.Tensor):
        """Backbone features (deepest first) of the defocus and the depth teacher, without gradients."""
        with torch.no_grad():
            if (self.t_mean, self.t_std) == (self.mean, self.std):
                t_in = images
            else:
                x01 = to_unit_range(images, self.mean, self.std)
                m = torch.tensor(self.t_mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
                s = torch.tensor(self.t_std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
                t_in = (x01 - m) / s
            f_dbd = self.dbd_teacher.forward_features(t_in)[::-1]
            f_dep, _ = self.depth_teacher(to_unit_range(images, self.mean, self.std), with_depth=False)
        return [f.detach() for f in f_dbd], [f.detach() for f in f_dep]

    def compute(self, forward, batch: dict, epoch: int, step: int):
        """Loss of one batch (see the class docstring)."""
        from ..distill import feature_distillation_loss

        images, target = batch["image"], batch["target"]
        f_dbd, f_dep = self.teacher_features(images)
        out, p_dbd, p_dep = forward(images)
        loss, parts = self.loss(out.logit, out.sides, target, valid_of(batch))
        kd_dbd = feature_distillation_loss(p_dbd, f_dbd)
        kd_dep = feature_distillation_loss(p_dep, f_dep)
        lam = distill_weight(self.cfg.distill, self.cfg.optim, epoch, step)
        parts.update(dbd=loss.detach(), kd_dbd=kd_dbd.detach(), kd_depth=kd_dep.detach(), lam=lam)
        return loss + lam * (kd_dbd + kd_dep), parts


class RDFFNetStage(TrainingStage):
    """R-DFFNet (method.md §5): ``L_dbd(Z) + sum_k L_dbd(up(S_k)) + w * sum_j L_depth(D_j, d)`` where ``d`` is the
    depth teacher's output, min-max normalised per image at the label size; L1 by default (``loss.depth_loss``).

    With ``distill.depth_teacher: scene`` there is no teacher: ``d`` is the inverse of the depth each synthetic
    scene was rendered with (the batch's ``depth``, 0 = unknown), normalised the same way over its known pixels,
    and the depth loss only counts those pixels (labelled photos and layered scenes add no depth term)."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        name = cfg.model.name if cfg.model.name == "rdffnet" else "rdffnet"
        if cfg.model.name != "rdffnet":
            log.info("R-DFFNet training uses the 'rdffnet' model (config model.name=%s ignored)", cfg.model.name)
        kwargs = cfg.model.model_kwargs
        if kwargs.depth_heads is False and kwargs.final_depth_head is False:
            raise ValueError("model.model_kwargs: an R-DFFNet stage trains depth heads; keep depth_heads or "
                             "final_depth_head (or train a DFFNet with stage1)")
        student = build_student(cfg, name).to(device)
        self.uses_scene_depth = cfg.distill.depth_teacher == SCENE_DEPTH
        self.depth_teacher = None if self.uses_scene_depth else build_depth_teacher(cfg).to(device)
        super().__init__(cfg, student)

    def compute(self, forward, batch: dict, epoch: int, step: int):
        """Loss of one batch (see the class docstring)."""
        images, target = batch["image"], batch["target"]
        known = None
        if self.uses_scene_depth:
            d_target, known = scene_depth_target(batch["depth"])
        else:
            with torch.no_grad():
                _, depth = self.depth_teacher(to_unit_range(images, self.mean, self.std), with_depth=True)
                d_target = depth_target(depth, target.shape[-2:])
        out = forward(images)
        loss, parts = self.loss(out.logit, out.sides, target, valid_of(batch))
        lc = self.cfg.loss
        d_loss, d_parts = depth_loss(out.depths, d_target, lc.depth_loss, lc.depth_activation, known)
        parts.update(dbd=loss.detach(), **d_parts, depth=d_loss.detach())
        return loss + lc.depth_weight * d_loss, parts


#: stage name (``stage`` in the config) -> its class
STAGES = {"stage1": Stage1, "stage2": Stage2, "rdffnet": RDFFNetStage}
