"""The authors' released D-DFFNet-family ``.pth`` files read into ``defocus`` models, strictly: the checkpoint
filter beside the models it fills (:func:`~defocus.models.load_model` calls it for ``.pth`` files).

The authors' checkpoints (classes ``PDnet_ResNest_4F_SL_LA`` = DFFNet / D-DFFNet, ``..._NG`` = w/o DFFM,
``..._4F_SL`` = w/o attention, ``PDnet`` = PDNet, ``..._LA_D`` = R-DFFNet) hold a ResNeSt-101 under
``resnest.*`` (with unused copies ``layer3_2`` / ``layer4_2``), four RFBs ``rfbN_1.*`` and the decoder
``agg1.*``. Every tensor of our model is looked up under its authors' name (shape checked); the only authors'
tensors left over may be the known unused ones:

* ``resnest.layer3_2.*``, ``resnest.layer4_2.*`` (every variant): duplicates that never run;
* ``rfbN_1.*`` (PDNet): RFBs that are built but never called;
* ``agg1.conv_upsample{1,2,3,6}.*`` (DFFNet w/o DFFM): the DFFM convolutions the variant does not use.

Assumptions, where the files cannot tell: ``dffnet`` and ``dffnet_no_dffm`` have identical keys (told apart by
the BatchNorm counters of the DFFM convolutions, which a "w/o DFFM" network never runs; ``arch`` overrides;
``dffnet`` when the counters cannot tell); in ``dffnet_no_dffm`` the convolution applied to the top branch after attention is
``agg1.conv_upsample4`` (the one that makes T1 in DFFNet); in R-DFFNet ``agg1.side5..8`` are the depth heads on
T1..T4, and the file has no final depth head, so the model is built with ``final_depth_head=False``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch

from .backbones import load_safetensors_file, load_torch_file
from .registry import MODELS, create_model, list_models
from .state_dicts import compare_state_dicts

log = logging.getLogger(__name__)

#: variants the authors released, with the class names of their code (from the model registry)
AUTHORS_CLASSES = {name: MODELS[name].authors_class for name in list_models(pretrained=True)}

# our decoder module -> the authors' ``agg1`` module
_DECODER_NAMES = {
    "r4_to_t2": "conv_upsample1", "r4_up2": "conv_upsample2", "r3_up": "conv_upsample3", "top": "conv_upsample4",
    "g2_up": "conv_upsample5", "r2_up": "conv_upsample6", "g3_up": "conv_upsample7",
    "g2_fuse": "conv_concat2", "g3_fuse": "conv_concat3", "g4_fuse": "conv_concat4",
    "head_conv": "conv4", "head": "conv5",
}
# indexed decoder modules: ours (prefix) -> authors' name for index i
_DECODER_LISTS = {
    "sides": lambda i: f"side{i + 1}",
    "depth_sides": lambda i: f"side{i + 5}",
    "attention_convs": lambda i: f"spatial_attention{i + 1}.0",
    "reduce": lambda i: f"conv{'44 33 22 11'.split()[i]}",  # ours shallow -> deep; conv11 is the 2048-ch one
}
_UNUSED_ALWAYS = (r"resnest\.layer3_2\.", r"resnest\.layer4_2\.")
_UNUSED = {
    "pdnet": (r"rfb[1-4]_1\.",),
    "dffnet_no_dffm": (r"agg1\.conv_upsample[1236]\.",),
}
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "network")


class CheckpointMismatchError(ValueError):
    """An authors' checkpoint that cannot be read or does not match the requested model (one-line message)."""


@dataclass
class ConversionReport:
    """What :func:`convert_state_dict` did: the variant, how many tensors it loaded and which it dropped."""

    arch: str
    loaded: int
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        groups = sorted({re.sub(r"^(resnest\.layer\d_2|rfb\d_1|agg1\.\w+)\..*$", r"\1", k) for k in self.dropped})
        extra = f"; dropped {len(self.dropped)} unused tensors ({', '.join(groups)})" if self.dropped else ""
        return f"{self.arch} ({AUTHORS_CLASSES[self.arch]}): loaded {self.loaded} tensors{extra}"


def authors_name(key: str) -> str:
    """The authors' name of one of our state-dict keys (``backbone.body.layer3.0.conv1.weight`` ->
    ``resnest.layer3_1.0.conv1.weight``)."""
    if key.startswith("backbone.body."):
        rest = key[len("backbone.body."):]
        return "resnest." + re.sub(r"^layer([34])\.", r"layer\1_1.", rest)
    m = re.match(r"^rfbs\.(\d+)\.(.+)$", key)
    if m:
        return f"rfb{int(m.group(1)) + 1}_1.{m.group(2)}"
    m = re.match(r"^decoder\.(\w+)\.(?:(\d+)\.)?(.+)$", key)
    if m:
        module, index, rest = m.groups()
        if index is not None and module in _DECODER_LISTS:
            return f"agg1.{_DECODER_LISTS[module](int(index))}.{rest}"
        if index is None and module in _DECODER_NAMES:
            return f"agg1.{_DECODER_NAMES[module]}.{rest}"
    raise KeyError(f"no authors' name for {key!r}")


def unwrap_state_dict(obj) -> dict:
    """Return the plain state dict inside ``obj``: unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` containers
    (also when tensors such as a metric sit beside them: a state dict's own keys never hold a dict) and strips a
    ``module.`` prefix (``DataParallel``)."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict) and obj[k]), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointMismatchError(f"not a state dict (got {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointMismatchError("no tensors found (expected a state dict, maybe under 'state_dict' or 'model')")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def read_authors_checkpoint(path) -> dict:
    """Read an authors' ``.pth`` with ``torch.load(weights_only=True)`` (their tensors saved as ``.safetensors``
    with safetensors) and return its plain state dict.

    Raises:
        CheckpointMismatchError: the file is missing, truncated, not a torch file, holds no state dict, or is
            a ``defocus train`` checkpoint (``checkpoint.pt``).
    """
    try:
        obj = load_safetensors_file(path) if str(path).lower().endswith(".safetensors") else load_torch_file(path)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointMismatchError(str(e)) from None
    if isinstance(obj, dict) and "format_version" in obj and "optimizers" in obj:
        raise CheckpointMismatchError(f"{path}: a `defocus train` checkpoint (the state that resumes a run, "
                                      f"not a model): give the model.safetensors beside it")
    try:
        return unwrap_state_dict(obj)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{path}: {e}") from None


#: BatchNorm counters of the DFFM convolutions a "w/o DFFM" network never runs, and of one that both variants run
_DFFM_COUNTERS = tuple(f"agg1.conv_upsample{i}.bn.num_batches_tracked" for i in (1, 2, 3, 6))
_SHARED_COUNTER = "agg1.conv_upsample4.bn.num_batches_tracked"


def dffm_never_ran(sd: dict) -> bool:
    """Whether a trained DFFNet-shaped state dict comes from "w/o DFFM": its DFFM convolutions' BatchNorm layers
    counted no batch while a convolution both variants run counted some (a module that never runs in training
    never updates its statistics). ``False`` when the counters are absent or none ran (an untrained file)."""
    counters = [sd.get(k) for k in _DFFM_COUNTERS + (_SHARED_COUNTER,)]
    if any(not isinstance(c, torch.Tensor) or c.numel() != 1 for c in counters):
        return False
    return all(int(c) == 0 for c in counters[:-1]) and int(counters[-1]) > 0


def detect_arch(sd: dict) -> str:
    """Recognise the authors' variant from the keys; ``dffnet`` and ``dffnet_no_dffm``, which have the same
    keys, from the BatchNorm counters of the DFFM convolutions (:func:`dffm_never_ran`), else ``dffnet``.

    Raises:
        CheckpointMismatchError: the keys belong to none of the released variants.
    """
    if not any(k.startswith("agg1.") for k in sd) or not any(k.startswith("resnest.") for k in sd):
        if any(k.startswith("scratch.") for k in sd) and any(k.startswith("pretrained.") for k in sd):
            raise CheckpointMismatchError("a MiDaS depth network ('pretrained.*' / 'scratch.*' tensors), not a "
                                          "D-DFFNet-family checkpoint: it is the depth teacher's "
                                          "(distill.depth_weights)")
        raise CheckpointMismatchError("not a D-DFFNet-family checkpoint (no 'resnest.*' / 'agg1.*' tensors)")
    if "agg1.conv11.weight" in sd:
        return "pdnet"
    if "agg1.side5.weight" in sd:
        return "rdffnet"
    if "agg1.spatial_attention1.0.weight" not in sd:
        return "dffnet_no_attention"
    return "dffnet_no_dffm" if dffm_never_ran(sd) else "dffnet"


def convert_state_dict(sd: dict, arch: str | None = None):
    """Build our model for an authors' state dict and load every tensor strictly.

    Args:
        sd: the authors' state dict (a wrapping dict or ``module.`` prefix is accepted).
        arch: one of :data:`AUTHORS_CLASSES`; default: recognised from the file (:func:`detect_arch`; a
            ``dffnet``-shaped file whose BatchNorm counters cannot tell is taken as ``dffnet``).

    Returns:
        ``(model, report)``: a ResNeSt-101 :class:`~defocus.models.dffnet.DBDNet` in eval mode and a
        :class:`ConversionReport`.

    Raises:
        CheckpointMismatchError: missing, unexpected or wrongly shaped tensors, or ``arch`` contradicts the keys.
    """
    sd = unwrap_state_dict(sd)
    detected = detect_arch(sd)
    if arch is None:
        arch = detected
    if arch not in AUTHORS_CLASSES:
        raise CheckpointMismatchError(f"unknown variant {arch!r}; the authors released: {', '.join(AUTHORS_CLASSES)}")
    if arch != detected and {arch, detected} != {"dffnet", "dffnet_no_dffm"}:
        raise CheckpointMismatchError(f"the file holds a {detected} ({AUTHORS_CLASSES[detected]}) checkpoint, "
                                      f"not {arch}")
    if arch == "dffnet" and detected == "dffnet_no_dffm":
        log.warning("loading as dffnet a file whose DFFM convolutions never ran in training (a 'w/o DFFM' "
                    "network, dffnet_no_dffm): their weights are untrained")
    kwargs = {"final_depth_head": False} if arch == "rdffnet" else {}
    # Built without storage: names and shapes are checked first, then the file's tensors become the weights.
    with torch.device("meta"):
        model = create_model(arch, backbone="resnest101e", pretrained=False, **kwargs)
    own = model.state_dict()
    names = {k: authors_name(k) for k in own}
    used = set(names.values())
    unused = re.compile("|".join(_UNUSED_ALWAYS + _UNUSED.get(arch, ())))
    dropped = [k for k in sd if k not in used and unused.match(k)]
    mismatch = compare_state_dicts({a: own[k] for k, a in names.items()}, sd, ignore_unexpected=unused.match)
    if mismatch:
        raise CheckpointMismatchError(f"does not match {arch} ({AUTHORS_CLASSES[arch]}): {mismatch.summary()}")
    weights = {k: sd[a].to(own[k].dtype, copy=True) for k, a in names.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # a non-persistent buffer would stay unset: nothing in this model family has one
        raise RuntimeError(f"tensors not set by the checkpoint: {left[:3]}")
    report = ConversionReport(arch=arch, loaded=len(names), dropped=dropped)
    log.info("converted %s", report.summary())
    return model.eval(), report


def load_authors_checkpoint(path, arch: str | None = None):
    """Read an authors' ``.pth`` and return ``(model, report)`` (see :func:`convert_state_dict`).

    Errors name the file: ``CheckpointMismatchError("<path>: does not match ...")``.
    """
    sd = read_authors_checkpoint(path)
    try:
        return convert_state_dict(sd, arch)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{path}: {e}") from None
