""" Backbones at several input sizes

DRNet runs one backbone at every candidate size. Convolutional families take any size. Vision transformers need
timm's dynamic-size support (``dynamic_img_size=True``: ViT, DeiT, EVA, Swin resample their position embeddings
or build their attention masks in each forward) and sizes that are a multiple of the patch size. Families that
merge the maps of several branches or partition them into fixed windows (DLA, HRNet, MaxViT) need multiples of
their total stride. Some cannot run at another size in one instance at all (fixed attention-bias tables: LeViT,
EfficientFormer; token-mixing MLPs sized for one grid: MLP-Mixer, ResMLP).

``create_backbone`` turns timm's dynamic-size support on where a family has it. ``fit_size_multiple`` finds the
multiple every candidate size is snapped to: the patch size where the model has one (none with
``dynamic_img_pad``), else 1, else the total stride, each checked with one no-grad forward per candidate when the
model is built, so that a backbone that cannot run at the candidates is refused then, with one ``ValueError``
naming it, the sizes tried, why, and what to do, instead of failing deep inside timm at the first forward.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from timm.layers import PatchEmbed
from timm.models import create_model, is_model, split_model_name_tag

from .costs import eval_mode
from .routing import candidate_sizes

__all__ = ['create_backbone', 'fit_size_multiple', 'patch_multiple']


def create_backbone(name: str, pretrained: bool = False, pretrained_cfg_overlay: Optional[Dict] = None,
                    **kwargs) -> nn.Module:
    """ timm model ``name`` with its dynamic input size turned on where the family has it (``dynamic_img_size``).

    A clear error for a name timm does not know; ``kwargs`` go to ``timm.create_model`` (a ``dynamic_img_size`` of
    the caller's is kept).
    """
    if not is_model(split_model_name_tag(name)[0]):
        raise ValueError(f"Unknown backbone '{name}': timm has no such model "
                         f"(see timm.list_models('{name.split('.')[0][:6]}*')).")
    kwargs = dict(kwargs, pretrained=pretrained, pretrained_cfg_overlay=pretrained_cfg_overlay)
    if 'dynamic_img_size' in kwargs:
        return create_model(name, **kwargs)
    try:
        return create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError as e:  # the family has no such argument: it takes other sizes as it is, or not at all
        if 'dynamic_img_size' not in str(e):
            raise
    return create_model(name, **kwargs)


def patch_multiple(model: nn.Module) -> int:
    """ The multiple of the patch size a model with timm's ``PatchEmbed`` needs (ViT, DeiT, EVA, Swin, ...): 1 without
    one, or when it pads its input (``dynamic_img_pad``). Overlapping patch embeddings (padded convolutions) need none.
    """
    embed = getattr(model, 'patch_embed', None)
    if not isinstance(embed, PatchEmbed) or embed.dynamic_img_pad:
        return 1
    return int(max(embed.patch_size))


def _first_error(model: nn.Module, sizes: Sequence[Tuple[int, int]], in_chans: int) -> Optional[str]:
    """The first candidate size the model fails at, and why (None if it runs at all of them)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    with torch.no_grad(), eval_mode(model):
        for size in sizes:
            try:
                model(torch.zeros(1, in_chans, *size, device=device, dtype=dtype))
            except (RuntimeError, AssertionError, ValueError, IndexError) as e:
                return f'{size[0]}x{size[1]}: {type(e).__name__}: {str(e).splitlines()[0][:160]}'
    return None


def fit_size_multiple(model: nn.Module, name: str, resolutions: Sequence[float],
                      input_size: Optional[Sequence[int]] = None) -> int:
    """ The multiple each candidate size of ``model`` is snapped to, checked by a forward at each candidate of
    ``input_size`` (C, H, W; default the model's pretrained_cfg size).

    Tries the patch size (or 1), then the model's total stride; raises ValueError naming the backbone, the sizes
    tried and the error at each when none runs.
    """
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    in_chans, height, width = input_size or (getattr(model, 'in_chans', 3), *cfg.get('input_size', (3, 224, 224))[1:])
    reduction = int(getattr(model, 'feature_info', [{}])[-1].get('reduction', 1) or 1)
    tried: List[str] = []
    for multiple in dict.fromkeys((patch_multiple(model), reduction)):
        sizes = candidate_sizes(resolutions, height, width, multiple)
        error = _first_error(model, sizes, in_chans)
        if error is None:
            return multiple
        tried.append(f'{", ".join(f"{h}x{w}" for h, w in sizes)} (multiples of {multiple}) fails at {error}')
    raise ValueError(
        f"Backbone '{name}' cannot run at the candidate resolutions {tuple(resolutions)} of {height}x{width}: "
        f"{'; '.join(tried)}. Families with attention-bias tables or token MLPs sized for one input (LeViT, "
        f"EfficientFormer, MLP-Mixer, ResMLP, CaiT, ...) run at a single size; use other resolutions or another "
        f"model (any convolutional family, ViT, DeiT, EVA, Swin, ...).")
