"""Inference-time folding of linear layers into the convolution before them (exact up to float rounding).

Two folds, both valid only where the first convolution's output feeds the second layer and nothing else:

* **conv + BatchNorm** (eval mode): ``BN(conv(x)) = conv'(x)`` with ``W' = W * g``, ``b' = (b - mean) * g + beta``,
  ``g = gamma / sqrt(var + eps)`` per output channel. DFFNet's decoder and RFB blocks are conv + BN without
  activation; timm backbones have conv + BN (+ activation, kept) pairs throughout.
* **conv + 1x1 conv**: a pointwise convolution after a convolution is one convolution with
  ``W'[o] = sum_m P[o, m] W[m]`` and ``b' = P b + c`` (exact at the borders too, since the 1x1 needs no padding).
  Applied only where it saves work: DFFNet's head (3x3 128->128 conv + BN, then 1x1 128->1) becomes a single
  3x3 128->1 convolution, a quarter of the decoder's multiply-adds at 1/4 resolution.

Which pairs qualify is found by running the model once on a small probe input while recording which operation
consumes which tensor: every ``torch`` call is seen (functional ops such as ``+``, ``cat`` or ``*`` included),
so a convolution whose output is also used elsewhere (e.g. by a residual) is left alone.
"""
from __future__ import annotations

import copy
import logging
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

log = logging.getLogger(__name__)


class _ConsumerCounter(TorchFunctionMode):
    """Counts, per tensor, the torch calls that take it as an argument and produce a tensor (metadata queries
    such as ``x.dim()`` or ``x.shape`` do not count). Tensors are held by weak reference only (an ``id`` reused
    by a new tensor starts a new count), so tracing does not keep every activation alive."""

    def __init__(self):
        super().__init__()
        self._counts: dict[int, tuple] = {}

    def count(self, t: torch.Tensor) -> int:
        """Number of consuming calls of ``t`` (a tensor alive now)."""
        entry = self._counts.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(o, torch.Tensor) for o in tree_flatten(out)[0]):
            for a in tree_flatten((args, kwargs or {}))[0]:
                if isinstance(a, torch.Tensor):
                    self._counts[id(a)] = (weakref.ref(a), self.count(a) + 1)
        return out


@dataclass
class _Trace:
    outputs: dict = field(default_factory=dict)    # conv module -> its outputs, one per call
    inputs: dict = field(default_factory=dict)     # conv / BN module -> its first input, one per call
    counter: _ConsumerCounter | None = None         # consuming torch calls per (live) tensor


def _trace(model: nn.Module, example: torch.Tensor) -> _Trace:
    tr = _Trace()
    hooks = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
            hooks.append(m.register_forward_pre_hook(lambda mod, i: tr.inputs.setdefault(mod, []).append(i[0])))
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda mod, i, o: tr.outputs.setdefault(mod, []).append(o)))
    counter = _ConsumerCounter()
    try:
        with torch.no_grad(), counter:
            model(example)
    finally:
        for h in hooks:
            h.remove()
    tr.counter = counter
    return tr


def _exclusive_pairs(tr: _Trace, second_ok) -> list[tuple[nn.Module, nn.Module]]:
    """(conv, layer) pairs where every output of ``conv`` is consumed only by ``layer`` (a module accepted by
    ``second_ok``) and every input of ``layer`` is an output of ``conv``."""
    owner = {id(o): conv for conv, outs in tr.outputs.items() for o in outs}
    fed: dict = {}
    sources: dict = {}
    for mod, inputs in tr.inputs.items():
        if not second_ok(mod):
            continue
        for x in inputs:
            conv = owner.get(id(x))
            sources.setdefault(mod, set()).add(conv)
            if conv is not None:
                fed.setdefault(conv, set()).add(mod)
    pairs = []
    for conv, outs in tr.outputs.items():
        targets = fed.get(conv, set())
        if len(targets) != 1:
            continue
        second = next(iter(targets))
        if second is conv or sources[second] != {conv} or len(tr.inputs[second]) != len(outs):
            continue
        if all(tr.counter.count(o) == 1 for o in outs):
            pairs.append((conv, second))
    return pairs


def _is_timm_bn_act(bn: nn.Module) -> bool:
    # timm's BatchNormAct2d: batch_norm, then ``drop`` and ``act`` modules
    return type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act") and hasattr(bn, "drop")


def _is_foldable_bn(m: nn.Module) -> bool:
    if not isinstance(m, nn.BatchNorm2d) or m.running_mean is None or m.running_var is None:
        return False
    return type(m) is nn.BatchNorm2d or _is_timm_bn_act(m)


def _is_pointwise(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)
            and m.dilation == (1, 1) and m.groups == 1)


def _names(model: nn.Module, pairs) -> list[tuple[str, str]]:
    names = {m: n for n, m in model.named_modules()}
    return [(names[a], names[b]) for a, b in pairs]


def find_conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """Names ``(conv, bn)`` of every Conv2d whose output, on every call, feeds only the given BatchNorm2d
    (and every call of that BatchNorm takes that convolution's output). ``model`` must be in eval mode."""
    pairs = _exclusive_pairs(_trace(model, example), _is_foldable_bn)
    return _names(model, [(c, b) for c, b in pairs if c.out_channels == b.num_features])


def find_conv_pointwise_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """Names ``(conv, conv1x1)`` where a dense convolution feeds only a 1x1 convolution and merging the two saves
    multiply-adds."""
    pairs = []
    for a, b in _exclusive_pairs(_trace(model, example), _is_pointwise):
        if a.groups != 1 or a.padding_mode != "zeros" or b.padding_mode != "zeros":
            continue
        k = a.kernel_size[0] * a.kernel_size[1]
        if b.out_channels * a.in_channels * k < a.out_channels * a.in_channels * k + a.out_channels * b.out_channels:
            pairs.append((a, b))
    return _names(model, pairs)


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn``'s eval-mode affine transform into ``conv``'s weight and bias, in place.

    The per-channel scale and the bias are computed in float64; the weight is scaled in place (one rounding,
    no copy of the weight: folding a large backbone does not raise peak memory).
    """
    dtype = conv.weight.dtype
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    g = gamma / torch.sqrt(var + bn.eps)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    conv.weight.mul_(g.to(dtype).reshape(-1, *([1] * (conv.weight.dim() - 1))))
    new_bias = ((b - mean) * g + beta).to(dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(new_bias)


@torch.no_grad()
def merge_pointwise(conv: nn.Conv2d, pointwise: nn.Conv2d) -> nn.Conv2d:
    """A copy of ``conv`` that computes ``pointwise(conv(x))`` (computed in float64)."""
    p = pointwise.weight.double()[:, :, 0, 0]                    # (out, mid)
    w = conv.weight.double()                                     # (mid, in, kh, kw)
    b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                      device=w.device)
    c = pointwise.bias.double() if pointwise.bias is not None else torch.zeros_like(p[:, 0])
    merged = copy.deepcopy(conv)
    merged.weight = nn.Parameter(torch.einsum("om,mikl->oikl", p, w).to(conv.weight.dtype).contiguous(),
                                 requires_grad=False)
    merged.bias = nn.Parameter((p @ b + c).to(conv.weight.dtype), requires_grad=False)
    merged.out_channels = pointwise.out_channels
    return merged


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _probe(model: nn.Module, example):
    if example is not None:
        return example
    param = next(model.parameters())
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(param)


def fuse_conv_bn(model: nn.Module, example: torch.Tensor | None = None, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every foldable conv + BatchNorm pair folded (see the module docstring).

    ``model`` must be in eval mode (BatchNorm running statistics are folded). ``example`` is the probe input
    (default: a 1x3x64x64 tensor on the model's device); ``inplace=False`` works on a deep copy. The folded
    BatchNorms become ``nn.Identity`` (or timm ``BatchNormAct2d``'s own dropout + activation).
    """
    if model.training:
        raise ValueError("fusing needs a model in eval mode (call model.eval() first)")
    if not inplace:
        model = copy.deepcopy(model)
    if next(model.parameters(), None) is None:
        return model
    pairs = find_conv_bn_pairs(model, _probe(model, example))
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        fold_bn_into_conv(conv, bn)
        _set_module(model, bn_name, nn.Sequential(bn.drop, bn.act) if _is_timm_bn_act(bn) else nn.Identity())
    log.debug("folded %d conv+BN pairs", len(pairs))
    return model


def fuse_model(model: nn.Module, example: torch.Tensor | None = None, inplace: bool = False,
               pointwise: bool = True) -> nn.Module:
    """Fold conv + BN pairs, then (``pointwise``) merge conv + 1x1 conv pairs where that saves work.

    Same contract as :func:`fuse_conv_bn`; the outputs equal the original eval model's up to float rounding.
    """
    model = fuse_conv_bn(model, example, inplace)
    if not pointwise or next(model.parameters(), None) is None:
        return model
    pairs = find_conv_pointwise_pairs(model, _probe(model, example))
    for conv_name, pw_name in pairs:
        merged = merge_pointwise(model.get_submodule(conv_name), model.get_submodule(pw_name))
        _set_module(model, conv_name, merged)
        _set_module(model, pw_name, nn.Identity())
    log.debug("merged %d conv + 1x1 conv pairs", len(pairs))
    return model
