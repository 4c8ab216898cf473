"""Inference-time folding of BatchNorm into the convolution before it (exact in eval mode up to rounding).

In eval mode ``BN(conv(x)) = conv'(x)`` with ``W' = W * g`` and ``b' = (b - mean) * g + beta``, where
``g = gamma / sqrt(var + eps)`` per output channel. The fold is only valid where the convolution's output feeds
the BatchNorm and nothing else, so the pairs are found by running the model once on a small probe input while
recording which operation consumes which tensor: every ``torch`` call is seen (functional ops such as ``+``,
``cat`` or ``*`` included), so a convolution whose output is also used elsewhere (e.g. by a residual) is left
alone. This covers DFFNet's decoder and RFB blocks (conv + BN, no activation) and the conv + BN pairs of timm
backbones, including timm's ``BatchNormAct2d`` (its activation is kept).
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

log = logging.getLogger(__name__)


class _ConsumerCounter(TorchFunctionMode):
    """Counts, per tensor, the torch calls that take it as an argument and produce a tensor (metadata queries
    such as ``x.dim()`` or ``x.shape`` do not count). Keeps the tensors alive so that ``id`` stays unique."""

    def __init__(self):
        super().__init__()
        self.consumers: dict[int, int] = {}
        self.keep: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        produced = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if produced:
            for a in tree_flatten((args, kwargs or {}))[0]:
                if isinstance(a, torch.Tensor):
                    self.consumers[id(a)] = self.consumers.get(id(a), 0) + 1
                    self.keep.append(a)
            self.keep.extend(produced)
        return out


def _is_foldable_bn(bn: nn.Module) -> bool:
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
        return False
    return type(bn) is nn.BatchNorm2d or _is_timm_bn_act(bn)


def _is_timm_bn_act(bn: nn.Module) -> bool:
    # timm's BatchNormAct2d: batch_norm, then ``drop`` and ``act`` modules
    return type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act") and hasattr(bn, "drop")


def find_conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """Names ``(conv, bn)`` of every Conv2d whose output, on every call, feeds only the given BatchNorm2d
    (and every call of that BatchNorm takes that convolution's output). ``model`` must be in eval mode."""
    names = {m: n for n, m in model.named_modules()}
    conv_outs: dict[nn.Module, list] = {}
    bn_ins: dict[nn.Module, list] = {}
    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda mod, i, o: conv_outs.setdefault(mod, []).append(o)))
        elif _is_foldable_bn(m):
            hooks.append(m.register_forward_pre_hook(lambda mod, i: bn_ins.setdefault(mod, []).append(i[0])))
    counter = _ConsumerCounter()
    try:
        with torch.no_grad(), counter:
            model(example)
    finally:
        for h in hooks:
            h.remove()
    # which BN consumed each conv output (by identity)
    out_owner = {id(o): conv for conv, outs in conv_outs.items() for o in outs}
    pairs = []
    bn_of_conv: dict[nn.Module, set] = {}
    bn_sources: dict[nn.Module, set] = {}
    for bn, inputs in bn_ins.items():
        for x in inputs:
            conv = out_owner.get(id(x))
            bn_sources.setdefault(bn, set()).add(conv)
            if conv is not None:
                bn_of_conv.setdefault(conv, set()).add(bn)
    for conv, outs in conv_outs.items():
        bns = bn_of_conv.get(conv, set())
        if len(bns) != 1:
            continue
        bn = next(iter(bns))
        if bn_sources[bn] != {conv} or len(bn_ins[bn]) != len(outs):
            continue
        if any(counter.consumers.get(id(o), 0) != 1 for o in outs):
            continue
        if conv.out_channels != bn.num_features:
            continue
        pairs.append((names[conv], names[bn]))
    return pairs


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn``'s eval-mode affine transform into ``conv``'s weight and bias (in place; computed in float64)."""
    dtype = conv.weight.dtype
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    g = gamma / torch.sqrt(var + bn.eps)
    w = conv.weight.double() * g.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    conv.weight.copy_(w.to(dtype))
    new_bias = ((b - mean) * g + beta).to(dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(new_bias)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def fuse_conv_bn(model: nn.Module, example: torch.Tensor | None = None, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every foldable conv + BatchNorm pair folded (see the module docstring).

    ``model`` must be in eval mode (BatchNorm running statistics are folded). ``example`` is the probe input
    (default: a 1x3x64x64 tensor on the model's device); ``inplace=False`` works on a deep copy. The folded
    BatchNorms become ``nn.Identity`` (or timm ``BatchNormAct2d``'s own dropout + activation).
    """
    if model.training:
        raise ValueError("fuse_conv_bn needs a model in eval mode (call model.eval() first)")
    if not inplace:
        model = copy.deepcopy(model)
    param = next(model.parameters(), None)
    if param is None:
        return model
    if example is None:
        example = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(param)
    pairs = find_conv_bn_pairs(model, example)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        fold_bn_into_conv(conv, bn)
        _set_module(model, bn_name, nn.Sequential(bn.drop, bn.act) if _is_timm_bn_act(bn) else nn.Identity())
    n_bn = sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    log.debug("folded %d conv+BN pairs (%d BatchNorm layers left)", len(pairs), n_bn)
    return model
