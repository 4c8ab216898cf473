"""Training configuration: typed sections, YAML files with ``base:`` inheritance, and ``key=value`` overrides.

A config file is a YAML mapping with the sections of :class:`TrainConfig`::

    base: paper_cuhk_tr1_stage1.yaml     # optional, relative to this file; its values are overridden here
    stage: stage2
    output_dir: runs/cuhk_tr1_stage2
    optim: {lr: 1.0e-4, epochs: 75}

Every section is a frozen dataclass, down to the data sources (:class:`DatasetEntry`, :class:`SyntheticData` with
its renderer settings as a :class:`~defocus.data.synth.SynthConfig`) and the model and depth-teacher options
(:class:`DecoderOptions`, :class:`DepthOptions`). :func:`parse_dataclass` builds them all in one pass from the
YAML values, converting each value to its field's type; a value that cannot be used is a ``ValueError`` of one
line that starts with its key (``data.train[0].name: unknown dataset 'cuhk'; ...``).

Overrides (``--set`` on the command line) take ``section.key=value`` (any depth: ``data.synthetic.cfg.p_far=0``)
or, where the key name is unique across sections, just ``key=value`` (``lr=3e-4``, ``batch_size=2``,
``output_dir=runs/x``). Values are parsed as YAML. Relative data and checkpoint paths are relative to the working
directory.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .data.synth import SynthConfig

STAGES = ("stage1", "stage2", "rdffnet")


def _check_choice(name: str, value, choices: tuple) -> None:
    """Refuse a setting outside its choices when the config is read, before anything runs."""
    if value not in choices:
        raise FieldError(name, f"expected one of {', '.join(choices)}, got {value!r}")


class FieldError(ValueError):
    """A field value that a dataclass rejects in its own checks; :func:`parse_dataclass` prefixes the key."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _set_only(options) -> dict:
    return {k: v for k, v in dataclasses.asdict(options).items() if v is not None}


@dataclass(frozen=True)
class DecoderOptions:
    """DFFNet decoder options (``create_model`` keyword arguments); None keeps the model variant's own."""

    ch: Optional[int] = None                          # channels of the RFB outputs and the decoder
    dffm: Optional[bool] = None                       # the deep feature fusion module
    attention: Optional[bool] = None                  # spatial attention
    depth_heads: Optional[bool] = None                # R-DFFNet's four side depth heads
    final_depth_head: Optional[bool] = None           # R-DFFNet's final depth head

    def as_kwargs(self) -> dict:
        """The options that are set, as keyword arguments."""
        return _set_only(self)


@dataclass(frozen=True)
class ModelConfig:
    """The student network (``defocus.create_model`` arguments)."""

    name: str = "dffnet"
    backbone: Optional[str] = None
    pretrained: Union[bool, str] = True            # ImageNet backbone (paper); False = random init; or a file path
    model_kwargs: DecoderOptions = field(default_factory=DecoderOptions)
    init: Optional[str] = None                     # fine-tune: start from a saved network (.safetensors, checkpoint, 'default')
    freeze_bn: bool = False                        # not in the paper: BatchNorm normalises by its running statistics


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset (``defocus.data.build_dataset`` arguments). ``root`` and ``list_file`` left unset
    take the data section's ``data_root`` and ``list_file``."""

    name: str
    root: Optional[str] = None
    list_file: Optional[str] = None               # stems to keep (CUHK-TR-2 / TE-2 splits)
    image_dir: Optional[str] = None               # "folder": images (default root/images)
    mask_dir: Optional[str] = None                # "folder": masks (default root/masks)
    mask_white: str = "in-focus"                  # "folder": what white means in the masks (in-focus | blur)
    pairing: str = "stem"                         # "folder": pair files by stem, or by sorted order
    strict: bool = True                           # unpaired files or missing listed stems are errors
    ignore_dir: Optional[str] = None              # "folder": ignore masks, white = undetermined
    blur_everywhere: Optional[tuple[float, float]] = None   # not in the paper: disk-blur [low, high] px, all blurred
    full_frame: bool = False                      # not in the paper: whole resized frames, not data.crop windows

    def __post_init__(self):
        from .data.registry import get_spec
        from .maps import check_polarity

        try:
            get_spec(self.name)
        except ValueError as e:
            if "+" not in self.name:                  # "cuhk-tr1+dut-tr": every part must be registered
                raise FieldError("name", str(e)) from None
            for part in self.name.split("+"):
                try:
                    get_spec(part)
                except ValueError as e_part:
                    raise FieldError("name", str(e_part)) from None
        try:
            check_polarity(self.mask_white)
        except ValueError as e:
            raise FieldError("mask_white", str(e)) from None
        if self.blur_everywhere is not None and not 0 < self.blur_everywhere[0] <= self.blur_everywhere[1]:
            raise FieldError("blur_everywhere", f"expected [low, high] px with 0 < low <= high, "
                                                f"got {list(self.blur_everywhere)}")

    def dataset_kwargs(self, data_root: Optional[str], list_file: Optional[str]) -> dict:
        """Keyword arguments of ``build_dataset``: this entry, unset ``root``/``list_file`` from the section."""
        kwargs = dataclasses.asdict(self)
        del kwargs["full_frame"]                      # how the entry is transformed, not what it holds
        kwargs["root"] = self.root if self.root is not None else data_root
        kwargs["list_file"] = self.list_file if self.list_file is not None else list_file
        return kwargs


@dataclass(frozen=True)
class SyntheticData:
    """Training pairs rendered on the fly (``defocus.data.synth.SyntheticDefocusDataset``).

    ``sources``: folders with ``images/`` + ``masks/``, folders of such sets, ``[images_dir, masks_dir]`` pairs, or
    ``procedural`` / ``procedural:N`` (scenes drawn in code). ``length``: samples per data epoch (None = one per
    source pair). ``seed``: the renderer's seed (None = the run's ``seed``). ``cfg``: the renderer's settings; its
    ``size`` is always the data section's ``size``. ``depth_photos``: a folder of photos with measured depth maps
    (``pairs.csv`` with ``stem``, ``narrow_f8`` and ``depth`` columns, e.g. the aperture pairs with depth) from which
    a ``cfg.depth_photo_prob`` share of the depth-aware scenes is rendered; ``depth_photos_split``: the scenes to use,
    a split shipped with the package (``dfd-train``) or a stem list file (None = every scene with a depth map).
    """

    sources: tuple[Union[str, tuple[str, str]], ...]
    length: Optional[int] = None
    seed: Optional[int] = None
    cfg: SynthConfig = field(default_factory=SynthConfig)
    depth_photos: Optional[str] = None
    depth_photos_split: Optional[str] = None

    def __post_init__(self):
        if not self.sources:
            raise FieldError("sources", "give at least one: folders, [images_dir, masks_dir] pairs or procedural")
        if self.depth_photos is None and self.depth_photos_split is not None:
            raise FieldError("depth_photos_split", "needs depth_photos (the folder the split selects from)")
        if self.depth_photos is None and self.cfg.depth_photo_prob > 0:
            raise FieldError("cfg.depth_photo_prob", "needs depth_photos (a folder of photos with depth maps)")


@dataclass(frozen=True)
class DataConfig:
    """Training data, augmentation and loading.

    ``train`` lists registered datasets, concatenated (each applies its own label polarity). ``synthetic`` renders
    training pairs on the fly, alone or mixed with ``train`` (the synthetic set comes first in the concatenation).
    ``val`` is one dataset scored every ``engine.val_every`` epochs.
    """

    train: tuple[DatasetEntry, ...] = ()
    synthetic: Optional[SyntheticData] = None
    val: Optional[DatasetEntry] = None
    data_root: Optional[str] = None               # default root of the entries (else $DEFOCUS_DATA)
    list_file: Optional[str] = None               # default stem list of the entries (CUHK-TR-2 / TE-2 splits)
    size: int = 320
    hflip: float = 0.5                            # probability of a horizontal flip
    jitter: float = 0.1
    zoom: Optional[tuple[float, float]] = None    # not in the paper: crop a random share of the area, then resize
    zoom_prob: float = 0.5                        # share of training samples zoomed (with ``zoom`` set)
    upscale: bool = True                          # False (not in the paper): never enlarge a side, mirror out to size
    crop: Optional[int] = None                    # not in the paper: after the resize, a random crop x crop window
    batch_size: int = 6
    num_workers: int = 8
    drop_last: bool = True
    shuffle: bool = True

    def __post_init__(self):
        if self.batch_size < 1:
            raise FieldError("batch_size", f"expected a positive number of samples, got {self.batch_size}")
        if self.num_workers < 0:
            raise FieldError("num_workers", f"expected 0 or more loader processes, got {self.num_workers}")
        if self.zoom is not None and not 0 < self.zoom[0] <= self.zoom[1] <= 1:
            raise FieldError("zoom", f"expected [low, high] with 0 < low <= high <= 1, got {list(self.zoom)}")
        if not 0 <= self.zoom_prob <= 1:
            raise FieldError("zoom_prob", f"expected a probability, got {self.zoom_prob}")
        if self.crop is not None and not 0 < self.crop <= self.size:
            raise FieldError("crop", f"expected a window side in [1, size = {self.size}], got {self.crop}")
        if self.crop is None and any(e.full_frame for e in self.train):
            raise FieldError("train", "full_frame keeps a dataset's frames whole where the others are cut to "
                                      "data.crop windows: set data.crop")
        if self.zoom is not None and any(e.full_frame for e in self.train):
            raise FieldError("train", "full_frame keeps a dataset's frames whole: it does not take data.zoom windows")
        if self.synthetic is not None and self.synthetic.cfg.size != self.size:   # frames are rendered at `size`
            cfg = dataclasses.replace(self.synthetic.cfg, size=self.size)
            object.__setattr__(self, "synthetic", dataclasses.replace(self.synthetic, cfg=cfg))


@dataclass(frozen=True)
class OptimConfig:
    """Student optimiser and schedule (method.md §3.3).

    Epoch mode: the learning rate is set at the start of epoch ``e`` (1-based) to
    ``lr * (1 - e / (epochs + poly_offset)) ** poly_power``; with ``skip_last_epoch`` the loop runs epochs
    ``1 .. epochs-1`` as the reference does (74 of 75). Iteration mode (``max_iters`` set, for synthetic data):
    ``lr * (1 - i / max_iters) ** poly_power`` at iteration ``i`` (0-based).
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    epochs: int = 75
    skip_last_epoch: bool = True
    max_iters: Optional[int] = None
    schedule: str = "poly"                        # poly | constant
    poly_power: float = 0.9
    poly_offset: int = 5
    grad_clamp: Optional[float] = 0.5             # element-wise value clamp (reference); null = off
    grad_clip_norm: Optional[float] = None        # optional global-norm clipping (not in the reference)

    def __post_init__(self):
        _check_choice("schedule", self.schedule, ("poly", "constant"))
        if self.max_iters is not None and self.max_iters < 1:
            raise FieldError("max_iters", f"expected at least 1 (or null: epoch mode), got {self.max_iters}")
        if self.max_iters is None and self.epochs - int(self.skip_last_epoch) < 1:
            raise FieldError("epochs", f"{self.epochs} trains no epoch"
                             + (" (skip_last_epoch runs epochs - 1)" if self.skip_last_epoch else ""))


@dataclass(frozen=True)
class LossConfig:
    """Deep-supervised DBD loss (method.md §3.2) and R-DFFNet's depth loss (method.md §5)."""

    beta: float = 0.5                             # 0 = the "bce only" ablation
    final_weight: Optional[float] = None          # null = stage default (1.0; stage 2: 1.1)
    side_weight: float = 1.0
    edge_alpha: float = 1.0
    edge_smooth: float = 1.0
    edge_reduction: str = "sum"                   # sum over the batch (reference) | mean
    edge_padding: str = "zeros"                   # zeros (reference, frame counts as edge) | replicate
    depth_loss: str = "l1"                        # R-DFFNet: l1 | l2
    depth_activation: str = "sigmoid"             # R-DFFNet depth heads: sigmoid | none
    depth_weight: float = 1.0
    fill_undetermined: Optional[str] = None       # null = ignore undetermined pixels | a model whose calls label them
    fill_flat: Optional[float] = None             # also fill in-focus labels where RMS luma gradient < this
    fill_flip: bool = False                       # filler's calls averaged with its calls on the mirrored image

    def __post_init__(self):
        _check_choice("edge_reduction", self.edge_reduction, ("sum", "mean"))
        _check_choice("edge_padding", self.edge_padding, ("zeros", "replicate"))
        _check_choice("depth_loss", self.depth_loss, ("l1", "l2"))
        _check_choice("depth_activation", self.depth_activation, ("sigmoid", "none"))


@dataclass(frozen=True)
class DepthOptions:
    """Depth-teacher options (``create_depth_teacher`` keyword arguments); None keeps the teacher's default."""

    tiny: Optional[bool] = None                   # midas_v21: a very small random network (tests)
    tiny_width: Optional[int] = None              # midas_v21: width of the tiny network
    features: Optional[Union[int, str]] = None    # midas_v21: decoder width; hf: neck | fusion
    non_negative: Optional[bool] = None           # midas_v21: ReLU on the output
    input_size: Optional[Union[int, tuple[int, int]]] = None   # hf: resize the input to this size
    mean: Optional[tuple[float, float, float]] = None          # input normalisation
    std: Optional[tuple[float, float, float]] = None

    def as_kwargs(self) -> dict:
        """The options that are set, as keyword arguments."""
        return _set_only(self)


@dataclass(frozen=True)
class DistillConfig:
    """Teachers, projectors and the distillation weight (method.md §4); the depth teacher also serves R-DFFNet."""

    teacher_checkpoint: Optional[str] = None      # stage-1 DFFNet (safetensors from ``defocus train``)
    teacher_bootstrap: Optional[str] = None       # a stage-1 config (relative to this file) trained first if no checkpoint
    depth_teacher: str = "midas_v21"
    depth_weights: Optional[str] = None           # e.g. midas_v21-f6b98070.pt
    depth_kwargs: DepthOptions = field(default_factory=DepthOptions)
    lambda_schedule: str = "paper"                # paper (eq. 9) | constant
    lambda_value: float = 3.0
    lambda_switch: int = 15
    projector_lr: float = 0.1
    projector_weight_decay: float = 5e-4
    teacher_mode: str = "train"                   # train (reference: batch-statistics BN, no grad) | eval

    def __post_init__(self):
        _check_choice("lambda_schedule", self.lambda_schedule, ("paper", "constant"))
        _check_choice("teacher_mode", self.teacher_mode, ("train", "eval"))


#: Validation numbers a run can keep its best model by (``engine.val_metric``; MAE lower is better).
VAL_METRICS = ("mae", "fbeta", "iou", "iou_mean", "precision", "recall")


@dataclass(frozen=True)
class EngineConfig:
    """Devices, precision, checkpoints, logging and validation."""

    device: str = "auto"
    amp: str = "none"                             # none | bf16 | fp16 (CUDA only)
    compile: bool = False
    checkpoint_minutes: float = 30.0
    val_every: int = 0                            # epochs between validations (0 = never)
    val_metric: str = "mae"
    log_every: int = 10
    max_minutes: Optional[float] = None           # wall-clock budget: stop, checkpoint and save the model
    progress: bool = True
    tensorboard: bool = True
    cudnn_benchmark: bool = True
    resume: Optional[str] = None                  # a training checkpoint, or "auto" (output_dir/checkpoint.pt)

    def __post_init__(self):
        _check_choice("amp", self.amp, ("none", "bf16", "fp16"))
        if self.val_metric not in VAL_METRICS:
            raise FieldError("val_metric", f"expected one of {', '.join(VAL_METRICS)}, got {self.val_metric!r}")
        if self.log_every < 1:
            raise FieldError("log_every", f"expected a positive number of steps, got {self.log_every}")
        if self.val_every < 0:
            raise FieldError("val_every", f"expected epochs between validations (0: never), got {self.val_every}")
        if self.checkpoint_minutes <= 0:
            raise FieldError("checkpoint_minutes", f"expected a positive time, got {self.checkpoint_minutes}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``defocus train`` needs. ``stage`` is ``stage1`` (DFFNet), ``stage2`` (D-DFFNet) or ``rdffnet``."""

    stage: str = "stage1"
    output_dir: str = "runs/train"
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    config_dir: Optional[str] = None              # set by load_config: the folder of the YAML file

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")

    def to_dict(self) -> dict:
        """Plain nested dict of lists and scalars (YAML-serialisable; :func:`from_dict` reads it back)."""
        return to_plain(self)


# ---------------------------------------------------------------------------------------------- parsing


def _key(prefix: str, name) -> str:
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else name


def parse_dataclass(cls, values, key: str = ""):
    """An instance of the dataclass ``cls`` from plain values (parsed YAML), each converted to its field's type:
    nested dataclasses from mappings, tuples from lists, numbers from numeric strings, ``Optional`` fields from
    null. Unset fields keep their defaults. Raises a one-line ``ValueError`` starting with the offending key
    (``key`` names ``values`` itself, e.g. ``data.synthetic.cfg``)."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ValueError(f"{key or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names), key=str)
    if unknown:
        more = f" (and {', '.join(map(str, unknown[1:]))})" if len(unknown) > 1 else ""
        raise ValueError(f"{_key(key, unknown[0])}: unknown key{more}; valid keys: {', '.join(names)}")
    fields = dataclasses.fields(cls)
    missing = [f.name for f in fields if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{_key(key, missing[0])}: missing (required)")
    defaults = {f.name: f.default for f in fields}
    kwargs = {k: _convert(v, hints[k], _key(key, k), defaults[k]) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise ValueError(f"{_key(key, e.name)}: {e.message}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key}: {e}" if key else str(e)) from None


def _convert(value: Any, tp, key: str, default=dataclasses.MISSING):
    """``value`` converted to the annotation ``tp``; ``default`` (a tuple) types the items of a bare ``tuple``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:              # Optional[X]: X's own message
            return _convert(value, options[0], key, default)
        for option in options:
            try:
                return _convert(value, option, key)
            except ValueError:
                pass
        raise ValueError(f"{key}: cannot use {value!r} (expected {_type_name(tp)})")
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, key)
    if tp is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            item_types = [args[0]] * len(value)
        elif args:
            item_types = list(args)
        elif isinstance(default, tuple) and len(default) == len(value):
            item_types = [type(d) for d in default]
        else:
            return tuple(value)
        if len(item_types) != len(value):
            raise ValueError(f"{key}: expected {len(item_types)} values, got {value!r}")
        return tuple(_convert(v, t, _key(key, i)) for i, (v, t) in enumerate(zip(value, item_types)))
    if tp in _SCALARS:
        try:
            return _SCALARS[tp](value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected {_type_name(tp)}, got {value!r}") from None
    return value


def _to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError(value)


def _to_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(value) if isinstance(value, int) else int(number)


def _to_float(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    return float(value)            # YAML reads 3e-4 (no dot) as a string


def _to_str(value) -> str:
    if value is None or isinstance(value, (dict, list, tuple)):
        raise ValueError(value)
    return str(value)


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}
_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if tp is tuple or typing.get_origin(tp) is tuple:
        return "a list"
    return _TYPE_NAMES.get(tp, "a mapping")


def to_plain(value):
    """Dataclasses as dicts and tuples as lists, recursively (what YAML and ``parse_dataclass`` read)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def from_dict(d: dict) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested dict (a config file's values), checking keys and types."""
    d = dict(d or {})
    d.pop("base", None)
    return parse_dataclass(TrainConfig, d)


# ---------------------------------------------------------------------------------------------- files and overrides


def deep_merge(base: dict, over: dict) -> dict:
    """Recursively merge ``over`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path, _chain: tuple = ()) -> dict:
    """Read a config file, resolving its ``base:`` chain (paths relative to the including file; so is a relative
    ``distill.teacher_bootstrap``, made absolute here)."""
    path = Path(path)
    if path.resolve() in _chain:
        raise ValueError(f"{path}: its base: chain includes itself")
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    distill = d.get("distill")
    boot = distill.get("teacher_bootstrap") if isinstance(distill, dict) else None
    if isinstance(boot, str) and not Path(boot).is_absolute():  # relative to the file that names it
        distill["teacher_bootstrap"] = str((path.parent / boot).resolve())
    base = d.pop("base", None)
    if base:
        base_path = Path(base)
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        d = deep_merge(read_yaml(base_path, _chain + (path.resolve(),)), d)
    return d


def _short_keys() -> dict:
    """Map each key of a section (and each top-level key) to its dotted path; keys of several sections map to all."""
    hints = typing.get_type_hints(TrainConfig)
    index: dict = {}
    for name, tp in hints.items():
        if dataclasses.is_dataclass(tp):
            for f in dataclasses.fields(tp):
                index.setdefault(f.name, []).append(f"{name}.{f.name}")
        else:
            index.setdefault(name, []).append(name)
    return index


def apply_overrides(d: dict, overrides) -> dict:
    """Apply ``key=value`` strings to a nested config dict; values are parsed as YAML scalars/lists/mappings."""
    d = dict(d)
    index = _short_keys()
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ValueError(f"override {item!r}: the value is not valid YAML") from None
        if "." in key:
            path = key.split(".")
        elif dataclasses.is_dataclass(typing.get_type_hints(TrainConfig).get(key)):
            raise ValueError(f"override {key!r} names a section; use {key}.<key>=value")
        else:
            matches = index.get(key, [])
            if not matches:
                raise ValueError(f"unknown config key {key!r}")
            if len(matches) > 1:
                raise ValueError(f"ambiguous config key {key!r}: use one of {', '.join(matches)}")
            path = matches[0].split(".")
        node = d
        for p in path[:-1]:
            node[p] = dict(node[p]) if isinstance(node.get(p), dict) else {}
            node = node[p]
        node[path[-1]] = value
    return d


def find_config(spec) -> Path:
    """A config file from a path, or a preset name (``smoke_stage1``) looked up in ``./configs`` and in the
    presets installed with the package."""
    p = Path(spec)
    if p.is_file():
        return p
    if len(p.parts) > 1:  # a path, not a preset's name: never replaced by a preset of the same name
        raise FileNotFoundError(f"{spec}: no such config file")
    name = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    candidates = [Path("configs") / name]
    try:
        from importlib import resources

        candidates.append(Path(str(resources.files("defocus").joinpath("configs", name))))
    except (ModuleNotFoundError, TypeError):
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"config {spec!r} not found (looked for the file and for {name} in ./configs and "
                            "in the installed presets)")


def load_config(path=None, overrides=None) -> TrainConfig:
    """Read a YAML config (or start from the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    d = read_yaml(path) if path is not None else {}
    d = apply_overrides(d, overrides)
    if path is not None and d.get("config_dir") is None:
        d["config_dir"] = str(Path(path).resolve().parent)
    return from_dict(d)


def dump_config(cfg: TrainConfig, path) -> None:
    """Write the resolved config as YAML (what a run actually used)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
