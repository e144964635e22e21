""" Fold batch norms into the convolutions that feed them

In eval mode a batch norm after a convolution is a per-channel affine map, so it can be merged into
the convolution's weight and bias (``torch.nn.utils.fusion.fuse_conv_bn_weights``), leaving one op
where there were two. timm models do not name their conv -> norm pairs uniformly, so the pairs are
found on one probe forward: a norm whose input is the very tensor a ``Conv2d`` returned. Norms with a
fused activation (timm ``BatchNormAct2d`` and kin) keep their drop + activation. The folded module is
checked against the original on the probe: a conv whose output also fed another layer would fail it.
"""
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .probe import probe_forward
from .resolution_norm import is_batch_norm

__all__ = ['fold_batch_norms']


def _conv_norm_pairs(module: nn.Module, example: torch.Tensor) -> List[Tuple[str, str]]:
    """(conv name, norm name) pairs where the norm's input is the conv's output, each called once."""
    outputs: Dict[int, Tuple[str, torch.Tensor]] = {}
    calls: Dict[str, int] = {}
    pairs: Dict[str, str] = {}

    def on_conv(name: str):
        def hook(mod, args, out):
            calls[name] = calls.get(name, 0) + 1
            outputs[id(out)] = (name, out)  # holding ``out`` keeps its id from being reused
        return hook

    def on_norm(name: str):
        def hook(mod, args):
            calls[name] = calls.get(name, 0) + 1
            source = outputs.get(id(args[0]))
            if source is not None and source[1] is args[0]:
                pairs[name] = source[0]
        return hook

    handles = []
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv(name)))
        elif is_batch_norm(m) and name and getattr(m, 'running_var', None) is not None:
            handles.append(m.register_forward_pre_hook(on_norm(name)))
    probe_forward(module, example, handles)
    sources = list(pairs.values())
    return [(conv, norm) for norm, conv in pairs.items()
            if calls[conv] == 1 and calls[norm] == 1 and sources.count(conv) == 1]


def _post_norm(norm: nn.Module) -> nn.Module:
    """What remains of a folded norm: its drop + activation for the fused kinds, else nothing."""
    if hasattr(norm, 'act') and hasattr(norm, 'drop'):
        return nn.Sequential(norm.drop, norm.act)
    return nn.Identity()


def fold_batch_norms(module: nn.Module, example: torch.Tensor, atol: float = 1e-4) -> nn.Module:
    """ Fold every batch norm that directly follows a ``Conv2d`` into it, in place; puts ``module`` in eval mode.

    ``example`` is a probe input the pairs are traced on and the result is checked against: the folded
    output must match the original within ``atol`` times the output's magnitude (RuntimeError if not).
    Norms that follow something else (pre-activation designs) stay. Returns ``module``.
    """
    module.eval()
    with torch.no_grad():
        reference = module(example)
    for conv_name, norm_name in _conv_norm_pairs(module, example):
        conv, norm = module.get_submodule(conv_name), module.get_submodule(norm_name)
        conv.weight, conv.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias)
        parent_name, _, child = norm_name.rpartition('.')
        setattr(module.get_submodule(parent_name), child, _post_norm(norm))
    with torch.no_grad():
        error = (module(example) - reference).abs().max().item()
    if error > atol * max(1., reference.abs().max().item()):
        raise RuntimeError(f'Folding batch norms into convolutions changed the output by {error:.3g}: a conv '
                           f'feeding a folded norm has another consumer or re-weights its kernel; export '
                           f'without folding')
    return module
