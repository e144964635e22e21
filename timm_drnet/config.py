""" Run configuration

How ``train.py`` and ``validate.py`` decide which DRNet to build: settings given on the command line
win, then the DRNet config stored in the checkpoint being loaded (so a stage-1 checkpoint or a trained
model needs no repeated flags), then the defaults. ``drnet_config`` is what a checkpoint stores: the
model name, the ``create_model`` keyword arguments, and the settings that must match for its weights
to load (resolutions, classes, input size), plus any measured cost table (``--cost latency``), which is
not part of the state dict.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from timm.models import create_model, is_model, parse_model_name, split_model_name_tag

from .costs import CostTable, eval_mode
from .drnet import MIN_INPUT_SIZE, DRNet, check_resolutions
from .models import DRNET_BACKBONES

__all__ = ['DEFAULT_MODEL', 'DEFAULT_MODEL_KWARGS', 'drnet_config', 'saved_cost_tables', 'install_saved_cost_tables',
           'resolve_model_args', 'build_drnet', 'check_input_size', 'check_single_image_maps']

# The scripts' default model: a small DRNet sized for the built-in 64 px synthetic set on a CPU. timm's
# tiny test_resnet with output stride 16 keeps a 2x2 final feature map at the smallest candidate (32 px),
# so batch norm has more than one value per channel even when a single image is routed there.
DEFAULT_MODEL = 'drnet'
DEFAULT_MODEL_KWARGS: Dict[str, Any] = dict(backbone='test_resnet', output_stride=16, predictor='mobile',
                                            predictor_size=32)


def drnet_config(model: nn.Module, model_name: str, model_kwargs: Dict[str, Any],
                 input_size: Sequence[int]) -> Dict[str, Any]:
    """The settings a checkpoint belongs to: enough to rebuild the model and to check that weights fit it."""
    return dict(
        model=model_name,
        model_kwargs=dict(model_kwargs),
        **model.drnet_args(),
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        input_size=list(input_size),
    )


def saved_cost_tables(cfg: Optional[Dict[str, Any]]) -> List[CostTable]:
    """The measured cost tables a ``drnet_config`` (or config.json ``model_args``) carries; none for MACs."""
    return [CostTable.from_dict(d) for d in (cfg or {}).get('cost_tables') or ()]


def install_saved_cost_tables(model: DRNet, cfg: Optional[Dict[str, Any]], input_size: Sequence[int],
                              path: str) -> bool:
    """ Install the measured cost tables saved in the checkpoint config ``cfg`` (read from ``path``).

    Returns False when it holds none (MACs); raises ValueError when none is for ``input_size``.
    """
    tables = saved_cost_tables(cfg)
    if not tables:
        return False
    if tuple(input_size) not in [tuple(t.input_size) for t in tables]:
        raise ValueError(f'The {tables[0].unit} cost table saved in {path} is for input size '
                         f'{list(tables[0].input_size)}, this run uses {list(input_size)}: pass --cost latency to '
                         f'measure one at this size, or --cost macs.')
    for table in tables:
        model.set_cost_table(table)
    return True


def resolve_model_args(
        model: Optional[str],
        model_kwargs: Optional[Dict[str, Any]],
        flags: Dict[str, Any],
        ckpt_cfg: Optional[Dict[str, Any]] = None,
        num_classes: Optional[int] = None,
) -> Tuple[str, Dict[str, Any]]:
    """ Model name and ``create_model`` kwargs.

    Args:
        model: ``--model`` (None: the checkpoint's, else ``DEFAULT_MODEL``).
        model_kwargs: ``--model-kwargs`` (None: the checkpoint's for the same model, else the defaults).
        flags: single-setting flags (resolutions, predictor, predictor_size, num_classes); None = not given.
        ckpt_cfg: the ``drnet_config`` stored in the checkpoint to be loaded, if any.
        num_classes: the data set's class count, used when neither flags nor checkpoint say.
    """
    name = model or (ckpt_cfg['model'] if ckpt_cfg else DEFAULT_MODEL)
    if ckpt_cfg and ckpt_cfg['model'] == name:
        kwargs = dict(ckpt_cfg.get('model_kwargs') or {}, num_classes=ckpt_cfg['num_classes'])
    elif model_kwargs is None and name == DEFAULT_MODEL:
        kwargs = dict(DEFAULT_MODEL_KWARGS)
    else:
        kwargs = {}
    kwargs.update(model_kwargs or {})
    kwargs.update({k: v for k, v in flags.items() if v is not None})
    if kwargs.get('num_classes') is None:
        if num_classes is None:
            raise ValueError('The data set does not say how many classes it has; pass --num-classes.')
        kwargs['num_classes'] = num_classes
    prefix, arch = parse_model_name(name)
    if not prefix and not is_model(split_model_name_tag(arch)[0]):
        raise ValueError(f"Unknown model '{name}'. DRNet models: {', '.join(sorted(['drnet', *DRNET_BACKBONES]))} "
                         f"(wrap any timm backbone with --model drnet --model-kwargs backbone=NAME).")
    if kwargs.get('resolutions') is not None:
        kwargs['resolutions'] = list(check_resolutions(kwargs['resolutions']))
    return name, kwargs


def build_drnet(
        name: str,
        kwargs: Dict[str, Any],
        pretrained: bool = False,
        pretrained_path: Optional[str] = None,
) -> DRNet:
    """``timm.create_model`` of a DRNet, with errors that name the setting to fix."""
    overlay = dict(file=pretrained_path) if pretrained_path else None
    try:
        model = create_model(name, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs)
    except TypeError as e:
        raise ValueError(f"Model '{name}' does not take the settings {kwargs}: {e}") from e
    if not isinstance(model, DRNet):
        raise ValueError(f"'{name}' is a plain timm model, not a DRNet; wrap it with --model drnet "
                         f"--model-kwargs backbone={name}.")
    return model


def check_single_image_maps(model: DRNet, input_size: Sequence[int]) -> None:
    """ Training may route a single image to any resolution; batch norm then needs more than one value per
    channel, so the backbone's final feature map must be larger than 1x1 at every candidate (checked with one
    blank image per candidate, in eval mode). Raises ValueError naming the candidate otherwise."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.backbone.modules()):
        return
    param = next(model.parameters())
    with eval_mode(model), torch.no_grad():
        for j, size in enumerate(model.candidate_sizes(*input_size[1:])):
            model.set_resolution(j)
            fmap = model.backbone.forward_features(torch.zeros(1, input_size[0], *size).to(param))
            if fmap.ndim == 4 and fmap.shape[-2:].numel() == 1:
                raise ValueError(
                    f'At input size {input_size[-1]} px, resolution {model.resolutions[j]:g} ({size[0]}x{size[1]} px) '
                    f'leaves the backbone a 1x1 final feature map: batch norm fails whenever training routes a '
                    f'single image there. Use a larger --input-size, larger --resolutions, or a backbone with a '
                    f'smaller output stride (e.g. --model-kwargs output_stride=16).')


def check_input_size(model: DRNet, input_size: Sequence[int]) -> None:
    """Every candidate must keep at least ``MIN_INPUT_SIZE`` pixels a side at this input size."""
    smallest = min(model.candidate_sizes(*input_size[1:])[-1])
    if smallest < MIN_INPUT_SIZE:
        raise ValueError(
            f'Resolutions {" ".join(f"{r:g}" for r in model.resolutions)} at input size {input_size[-1]} px give '
            f'a smallest candidate of {smallest} px, below the {MIN_INPUT_SIZE} px minimum; use larger '
            f'--resolutions or a larger --input-size.')
