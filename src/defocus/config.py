"""Training configuration: dataclasses, YAML files with ``base:`` inheritance, and ``key=value`` overrides.

A config file is a YAML mapping with the sections of :class:`TrainConfig`::

    base: paper_cuhk_tr1_stage1.yaml     # optional, relative to this file; its values are overridden here
    stage: stage2
    output_dir: runs/cuhk_tr1_stage2
    optim: {lr: 1.0e-4, epochs: 75}

Overrides (``--set`` on the command line) take ``section.key=value`` or, where the key name is unique across
sections, just ``key=value`` (``lr=3e-4``, ``batch_size=2``, ``output_dir=runs/x``). Values are parsed as YAML and
then converted to the field's type. Relative data and checkpoint paths are relative to the working directory.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

STAGES = ("stage1", "stage2", "rdffnet")


@dataclass
class ModelConfig:
    """The student network (``defocus.create_model`` arguments)."""

    name: str = "dffnet"
    backbone: Optional[str] = None
    pretrained: Union[bool, str] = True            # ImageNet backbone (paper); False = random init; or a file path
    model_kwargs: dict = field(default_factory=dict)
    init: Optional[str] = None                     # fine-tune: start from a saved network (.safetensors, checkpoint, 'default')


@dataclass
class DataConfig:
    """Training data, augmentation and loading.

    ``train`` lists registered datasets, each ``{name, root, ...}`` passed to ``defocus.data.build_dataset``; they
    are concatenated (each applies its own label polarity). ``synthetic`` renders training pairs on the fly (alone, or
    mixed with ``train``: the synthetic set comes first in the concatenation):
    ``{sources: [[images_dir, masks_dir], ...], length: N, seed: S, cfg: {...SynthConfig fields}}``.
    ``val`` is one dataset ``{name, root, ...}`` scored every ``engine.val_every`` epochs. Entries without ``root``
    (or ``list_file``) use ``data_root`` (or ``list_file``).
    """

    train: list = field(default_factory=list)
    synthetic: Optional[dict] = None
    val: Optional[dict] = None
    data_root: Optional[str] = None               # default root of the entries (else $DEFOCUS_DATA)
    list_file: Optional[str] = None               # default stem list of the entries (CUHK-TR-2 / TE-2 splits)
    size: int = 320
    hflip: float = 0.5                            # probability of a horizontal flip
    jitter: float = 0.1
    batch_size: int = 6
    num_workers: int = 8
    drop_last: bool = True
    shuffle: bool = True


@dataclass
class OptimConfig:
    """Student optimiser and schedule (method.md §3.3).

    Epoch mode: the learning rate is set at the start of epoch ``e`` (1-based) to
    ``lr * (1 - e / (epochs + poly_offset)) ** poly_power``; with ``skip_last_epoch`` the loop runs epochs
    ``1 .. epochs-1`` as the reference does (74 of 75). Iteration mode (``max_iters`` set, for synthetic data):
    ``lr * (1 - i / max_iters) ** poly_power`` at iteration ``i`` (0-based).
    """

    lr: float = 1e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
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


@dataclass
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


@dataclass
class DistillConfig:
    """Teachers, projectors and the distillation weight (method.md §4); the depth teacher also serves R-DFFNet."""

    teacher_checkpoint: Optional[str] = None      # stage-1 DFFNet (safetensors from ``defocus train``)
    teacher_bootstrap: Optional[str] = None       # a stage-1 config (relative to this file) trained first if no checkpoint
    depth_teacher: str = "midas_v21"
    depth_weights: Optional[str] = None           # e.g. midas_v21-f6b98070.pt
    depth_kwargs: dict = field(default_factory=dict)
    lambda_schedule: str = "paper"                # paper (eq. 9) | constant
    lambda_value: float = 3.0
    lambda_switch: int = 15
    projector_lr: float = 0.1
    projector_weight_decay: float = 5e-4
    teacher_mode: str = "train"                   # train (reference: batch-statistics BN, no grad) | eval


@dataclass
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


@dataclass
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
        """Plain nested dict (YAML-serialisable)."""
        return dataclasses.asdict(self)




def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _section_classes() -> dict:
    hints = _hints(TrainConfig)
    return {k: v for k, v in hints.items() if dataclasses.is_dataclass(v)}


def _coerce(value: Any, tp, key: str):
    """Convert ``value`` (from YAML) to the annotated type ``tp``; raise a ``ValueError`` naming ``key`` if
    impossible."""
    try:
        return _convert(value, tp, key)
    except (TypeError, ValueError) as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(f"{key}:") else f"{key}: cannot use {value!r} ({msg})") from None


def _convert(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _convert(value, a, key)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise ValueError(f"{key}: cannot use {value!r} ({'; '.join(errors)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(float(value)) if float(value).is_integer() else int(value)
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _build_section(cls, values: dict, prefix: str):
    hints = _hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"unknown key(s) in '{prefix}': {', '.join(unknown)}; valid: {', '.join(sorted(hints))}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def from_dict(d: dict) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested dict, checking keys and converting types."""
    d = dict(d or {})
    d.pop("base", None)
    sections = _section_classes()
    hints = _hints(TrainConfig)
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise ValueError(f"unknown top-level key(s): {', '.join(unknown)}; valid: {', '.join(sorted(hints))}")
    kwargs = {}
    for k, v in d.items():
        if k in sections:
            if v is not None and not isinstance(v, dict):
                raise ValueError(f"'{k}' must be a mapping, got {v!r}")
            kwargs[k] = _build_section(sections[k], v or {}, k)
        else:
            kwargs[k] = _coerce(v, hints[k], k)
    return TrainConfig(**kwargs)


def deep_merge(base: dict, over: dict) -> dict:
    """Recursively merge ``over`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path) -> dict:
    """Read a config file, resolving its ``base:`` chain (paths relative to the including file)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        d = yaml.safe_load(f) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    base = d.pop("base", None)
    if base:
        base_path = Path(base)
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        d = deep_merge(read_yaml(base_path), d)
    return d


def _leaf_index() -> dict:
    """Map each unique leaf key to its ``section.key`` path (keys present in several sections are left out)."""
    index: dict = {}
    for sec, cls in _section_classes().items():
        for name in _hints(cls):
            index.setdefault(name, []).append(f"{sec}.{name}")
    for name in _hints(TrainConfig):
        if name not in _section_classes():
            index.setdefault(name, []).append(name)
    return index


def apply_overrides(d: dict, overrides) -> dict:
    """Apply ``key=value`` strings to a nested config dict; values are parsed as YAML scalars/lists/mappings."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    index = _leaf_index()
    sections = _section_classes()
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        value = yaml.safe_load(raw) if raw.strip() else None
        if "." in key:
            path = key.split(".")
        elif key in sections:
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
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node[p] = dict(node[p])
            node = node[p]
        node[path[-1]] = value
    return d


def find_config(spec) -> Path:
    """A config file from a path, or a preset name (``smoke_stage1``) looked up in ``./configs`` and in the
    presets installed with the package."""
    p = Path(spec)
    if p.is_file():
        return p
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
    cfg = from_dict(d)
    if path is not None and cfg.config_dir is None:
        cfg.config_dir = str(Path(path).resolve().parent)
    return cfg


def dump_config(cfg: TrainConfig, path) -> None:
    """Write the resolved config as YAML (what a run actually used)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
